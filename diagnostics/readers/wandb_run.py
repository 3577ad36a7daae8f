"""A local W&B run (`wandb/offline-run-*/` or a synced `wandb/run-*/`), read with the wandb package's own reader.

The run's history, config and exit state are only inside its binary `run-<id>.wandb` file (an offline run has no
config.yaml or summary file). wandb >= 0.31 reads it with `wandb leet inspect --json`, which prints one JSON object
per record using the bundled wandb-core binary (no network, no login); flatline runs it as a subprocess with a time
limit. Older wandb has no JSON export (0.30's `leet inspect` prints protobuf text, <= 0.29 had a Python DataStore
that 0.30 removed): flatline asks for an upgrade instead of parsing the binary format itself.

Steps: W&B's `_step` counts wandb.log calls; HF/TRL and OpenRLHF log the training step as `train/global_step`
(OpenRLHF's eval rows as `eval/global_step`), which is used when present. A run killed before `wandb.finish()` has no
exit record (and may end mid-record): judged on the rows it has, and the report says so.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from flatline.diagnostics.readers.base import LogError, RawLog, head_bytes
from flatline.diagnostics.readers.jsonl import records_from_rows

# `wandb leet inspect --json` appeared in wandb 0.31.0 (checked against the 0.29.0, 0.30.0 and 0.31.0 wheels).
MIN_WANDB = (0, 31)
# The .wandb file starts with this magic (wandb/sdk/internal/datastore.py LEVELDBLOG_HEADER_IDENT).
WANDB_MAGIC = b":W&B"
# A subprocess that reads a local file; 10 minutes is far beyond any real run (a 100k-step run reads in seconds).
READ_TIMEOUT_S = 600
# What leet prints on stderr for a file without a clean end (killed or still running).
INCOMPLETE = "incomplete"


def run_file(path: Path) -> Path:
    """The run-<id>.wandb of a run directory (or the file itself)."""
    if path.is_file():
        return path
    found = sorted(path.glob("run-*.wandb"))
    if not found:
        raise LogError(f"{path}: no run-*.wandb file in this W&B run directory")
    return found[0]


def wandb_version() -> tuple[int, ...] | None:
    try:
        version = metadata.version("wandb")
    except metadata.PackageNotFoundError:
        return None
    return tuple(int(p) for p in version.split(".")[:2] if p.isdigit())


def _require_wandb(path: Path) -> None:
    version = wandb_version()
    if version is None:
        raise LogError(f"{path}: reading a W&B run needs the wandb package: pip install 'wandb>=0.31' "
                       "(or pip install 'flatline[wandb]')")
    if version < MIN_WANDB:
        raise LogError(f"{path}: reading a W&B run needs wandb >= 0.31 (its `wandb leet inspect --json` reader); "
                       f"this is wandb {'.'.join(map(str, version))}: pip install -U 'wandb>=0.31'")


def inspect_records(wandb_file: Path) -> tuple[list[dict], str]:
    """Every record of the file as wandb's own reader prints it, and its stderr."""
    env = {**os.environ, "WANDB_SILENT": "true", "NO_COLOR": "1"}
    command = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(wandb_file)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=READ_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise LogError(f"{wandb_file}: wandb's reader did not finish within {READ_TIMEOUT_S} s") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise LogError(f"{wandb_file}: wandb could not read it ({why})")
    records = []
    for number, line in enumerate(done.stdout.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                raise LogError(f"{wandb_file}: wandb's reader printed something that is not JSON (output line "
                               f"{number}); check the installed wandb: pip install -U 'wandb>=0.31'") from None
    return records, done.stderr


def read_wandb(path: Path) -> RawLog:
    wandb_file = run_file(path)
    if head_bytes(wandb_file, len(WANDB_MAGIC)) != WANDB_MAGIC:
        raise LogError(f"{wandb_file}: not a W&B run file (it does not start with {WANDB_MAGIC.decode()}); pass "
                       "the run directory wandb wrote (wandb/offline-run-*/ or wandb/run-*/)")
    _require_wandb(wandb_file)
    records, stderr = inspect_records(wandb_file)
    raw = RawLog("wandb", wandb_file, run_name=wandb_file.parent.name)
    rows, exit_code = [], None
    for record in records:
        kind = record.get("type")
        body = record.get(kind) if isinstance(record.get(kind), dict) else {}
        if kind == "history":
            item = body.get("item")
            if isinstance(item, dict):
                rows.append((f"{wandb_file}: record {record.get('num', '?')}", item))
        elif kind == "run":
            raw.config.update((body.get("config") or {}).get("update") or {})
            raw.run_name = body.get("display_name") or raw.run_name
        elif kind == "config":
            raw.config.update(body.get("update") or {})
            for key in body.get("remove") or []:
                raw.config.pop(key, None)
        elif kind == "exit":
            exit_code = body.get("exit_code", 0)
    if not rows:
        raise LogError(f"{wandb_file}: holds no logged rows (a run killed right after it started, before wandb wrote "
                       "its buffer, leaves only the file's header)")
    raw.config.pop("_wandb", None)
    if raw.config:
        raw.config_source = f"{wandb_file} (the W&B run's config)"
    records_from_rows(rows, raw)
    raw.finished = exit_code is not None
    if exit_code is None:
        end = "ends mid-record" if INCOMPLETE in stderr else "has no exit record"
        raw.notes.append(f"the W&B run {end}: it was killed, crashed or is still running; judged on what it "
                         "logged")
    elif exit_code:
        raw.notes.append(f"the W&B run exited with code {exit_code}")
    return raw
