"""The run directory (docs/DESIGN.md, "Run directory"): its one writer. `flatline train`, the TRL callback and
`flatline diagnose --out` all write through here, so each file has one format and one author.

    run = RunDir.create("runs/x", config_toml)     # runs/x (or runs/x-2 ...) holding config.toml
    run.open(METRICS, SAMPLES)                      # created empty, as every run has them
    run.add_row({"step": 1, "reward": 0.5})         # one metrics.jsonl line, fsynced with SIGINT/SIGTERM held
    run.add_sample({...}); run.add_trajectory({...})
    run.close(); run.write_summary(run_summary(run.rows, Outcome("completed", 1, 1), ...))

Never overwritten: a name collision gets a new suffix. The diagnosis report itself (diagnosis.md, diagnosis.json,
the curves) is written by flatline.diagnostics.report.write_report into a RunDir's folder or a `new_report_dir`.
"""
from __future__ import annotations

import json
import math
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from flatline.common.errors import FlatlineError
from flatline.common.files import write_atomic
from flatline.common.jsonl import JsonlWriter

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"
TRAJECTORIES = "trajectories.jsonl"
SUMMARY = "summary.json"
REPORT = "diagnosis.md"
PREFLIGHT_TEXT, PREFLIGHT_JSON = "preflight.txt", "preflight.json"
# What stops a run (Ctrl-C, timeout and schedulers, a terminal gone away): held while a metrics line is written.
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Steps averaged at each end of the run for the summary's "did reward rise" comparison.
SUMMARY_WINDOW = 5


def create_run_dir(path: str | Path) -> Path:
    """Create `path`, or `path-2`, `path-3`, ... if it exists; mkdir is atomic, so two runs never share one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, suffix = path, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            suffix += 1
            candidate = path.with_name(f"{path.name}-{suffix}")


def new_report_dir(path: str | Path) -> Path:
    """The folder `flatline diagnose --out` writes a report into: created with its parents, refused when it already
    holds a report."""
    path = Path(path)
    if (path / REPORT).exists():
        raise FlatlineError(f"--out {path}: already holds a {REPORT}; choose a new directory")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def interrupts_held():
    """While the block runs, SIGINT, SIGTERM and SIGHUP wait and are delivered when it ends: a step's metrics line
    (written, flushed, fsynced) and its count in summary.json stay together. Off the main thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum)) for sig in HELD_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            signal.raise_signal(pending[0])


class RunDir:
    """One run directory's files: config.toml, the JSON Lines logs (a line at a time), summary.json and what else
    a run puts there. `rows` holds every metrics row written, in order."""

    def __init__(self, path: str | Path):
        """An existing directory."""
        self.path = Path(path)
        self.rows: list[dict] = []
        self._logs: dict[str, JsonlWriter] = {}

    @classmethod
    def create(cls, requested: str | Path, config_toml: str) -> "RunDir":
        """A new run directory at `requested` (or with a suffix), holding config.toml."""
        run = cls(create_run_dir(requested))
        run.write_file(CONFIG, config_toml)
        return run

    def open(self, *logs: str) -> "RunDir":
        """Create these JSON Lines logs now (empty until their first line); the others appear at their first line."""
        for name in logs:
            self._log(name)
        return self

    @property
    def name(self) -> str:
        return self.path.name

    def _log(self, name: str) -> JsonlWriter:
        if name not in self._logs:
            self._logs[name] = JsonlWriter(self.path / name)
        return self._logs[name]

    def add_row(self, row: dict) -> None:
        """One step's metrics line; a signal waits until it is on disk and counted in `rows`."""
        with interrupts_held():
            self._log(METRICS).write(row)
            self.rows.append(row)

    def add_sample(self, sample: dict) -> None:
        self._log(SAMPLES).write(sample)

    def add_trajectory(self, episode: dict) -> None:
        self._log(TRAJECTORIES).write(episode)

    def close(self) -> None:
        for writer in self._logs.values():
            writer.close()

    def write_file(self, name: str, text: str) -> Path:
        """A whole file of the run directory, replaced atomically."""
        path = self.path / name
        write_atomic(path, text)
        return path

    def write_summary(self, summary: dict) -> None:
        self.write_file(SUMMARY, json.dumps(summary, indent=2) + "\n")

    def add_to_report(self, text: str) -> None:
        """Append a section to diagnosis.md (written by the report writer before)."""
        path = self.path / REPORT
        self.write_file(REPORT, path.read_text(encoding="utf-8") + text)


@dataclass(frozen=True)
class Outcome:
    """How a run that got a run directory ended, as summary.json and the log book say it."""

    status: str  # completed | failed | interrupted
    steps_completed: int
    max_steps: int
    error: str = ""  # failed: the exception's type and last line; interrupted: SIGINT or SIGTERM


def error_line(exc: BaseException) -> str:
    """`Type: last line of the message`: what a failed run's summary and log entry quote."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1]}" if lines else type(exc).__name__


def summarize(rows: list[dict], window: int = SUMMARY_WINDOW) -> dict:
    """Mean reward of the first and last `window` steps, the last eval metrics, and totals."""
    rewards = [r["reward"] for r in rows if isinstance(r.get("reward"), (int, float)) and math.isfinite(r["reward"])]
    first, last = rewards[:window], rewards[-window:]
    summary = {
        "steps": len(rows),
        "reward_first": sum(first) / len(first) if first else None,
        "reward_last": sum(last) / len(last) if last else None,
        "wall_seconds": sum(r.get("step_time", 0.0) for r in rows),
    }
    if first and last:
        summary["reward_rose"] = summary["reward_last"] > summary["reward_first"]
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    if evals:
        summary["eval_first"] = {k: v for k, v in evals[0].items() if k.startswith("eval/")}
        summary["eval_last"] = {k: v for k, v in evals[-1].items() if k.startswith("eval/")}
    return summary


def run_summary(rows: list[dict], outcome: Outcome, run: str, started_at: datetime, total_seconds: float,
                wandb: str) -> dict:
    """summary.json: how the run ended (status, steps_completed of max_steps, error), when it started, and the
    reward and eval summary of the steps it took."""
    summary = {"run": run, "status": outcome.status, "steps_completed": outcome.steps_completed,
               "max_steps": outcome.max_steps}
    if outcome.error:
        summary["error"] = outcome.error
    summary.update(summarize(rows))
    summary.update({"started": started_at.isoformat(timespec="seconds"), "total_seconds": total_seconds,
                    "wandb": wandb})
    return summary
