"""flatline's own run directory: metrics.jsonl, plus config.toml, summary.json and samples.jsonl when present.

The run's metrics are the log; the other three only add to the report, so a corrupt one costs its part (with a
note naming the file and line), never the diagnosis.

    log = read_flatline_run(Path("runs/exp0.1-arithmetic-1122"))
"""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

from flatline.common.errors import FlatlineError
from flatline.diagnostics.readers.base import LogError, RawLog, read_text
from flatline.diagnostics.readers.jsonl import read_plain_jsonl


def _config(path: Path, raw: RawLog) -> dict:
    try:
        config = tomllib.loads(read_text(path, "config"))
    except (tomllib.TOMLDecodeError, FlatlineError) as exc:
        raw.notes.append(f"{path} could not be read ({str(exc).splitlines()[0]}): judged without the run's config, "
                         "so verdicts that need a setting are skipped")
        return {}
    raw.config_source = str(path)
    return config


def _summary(path: Path, raw: RawLog) -> dict:
    try:
        summary = json.loads(read_text(path, "summary"))
    except (ValueError, RecursionError, FlatlineError) as exc:
        raw.notes.append(f"{path} could not be read ({str(exc).splitlines()[0]}): judged without it")
        return {}
    if not isinstance(summary, dict):
        raw.notes.append(f"{path} holds a JSON {type(summary).__name__}, not an object: judged without it")
        return {}
    return summary


def _samples(path: Path, raw: RawLog) -> list[dict]:
    from flatline.common.jsonl import read_jsonl

    try:
        rows = read_jsonl(path, error=LogError)
    except LogError as exc:
        raw.notes.append(f"samples not shown: {exc}")
        return []
    if rows.dropped:
        raw.notes.append(f"{path}: {len(rows.dropped)} line(s) that are not JSON objects were left out of the samples")
    return rows.rows


def read_flatline_run(metrics: Path, run_dir: Path | None = None) -> RawLog:
    """`metrics` is the run's metrics.jsonl; its directory holds the rest. `run_dir`: the directory the user named
    (None when they named the metrics file itself)."""
    raw = read_plain_jsonl(metrics, fmt="flatline", trainer="flatline")
    home = metrics.parent
    raw.run_dir = run_dir
    raw.run_name = run_dir.name if run_dir is not None else metrics.stem
    if (home / "config.toml").is_file():
        raw.config = _config(home / "config.toml", raw)
    if (home / "summary.json").is_file():
        raw.summary = _summary(home / "summary.json", raw)
        if isinstance(raw.summary.get("run"), str) and raw.summary["run"]:
            raw.run_name = raw.summary["run"]
    if (home / "samples.jsonl").is_file():
        raw.samples = _samples(home / "samples.jsonl", raw)
    return raw
