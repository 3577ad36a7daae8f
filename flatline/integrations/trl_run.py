"""Lifecycle: a TRL run's flatline run directory, on the main process, from train start to train end.

Start: config.toml from GRPOConfig and the log book's RUNNING entry. Each step: a metrics row, opened when the step
ends (the probes' numbers) and completed by what TRL logs for that step (its loss, rewards, eval scores), written
once that logging is over: when the next step begins or training ends (transformers calls on_step_end, then on_log
for the same step). Live: the history so far judged for structural faults. End: summary.json, the diagnosis and the
log book entry settled (COMPLETED with the verdict, or FAILED).
"""
from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from flatline.common.rundir import METRICS, SAMPLES, Outcome, RunDir, run_summary
from flatline.integrations.trl_parts import config_from_args, trl_version

# Faults that cannot heal by training on: worth stopping a run for (with stop_on="fail").
STRUCTURAL = ("gradients.no_flow", "update.weights_unchanged", "update.optimizer_coverage", "gradients.non_finite")


def trl_logs(logs: dict | None) -> dict:
    """TRL's logged numbers under the run directory's names (its `eval_<x>` as `eval/<x>`)."""
    return {(f"eval/{k[len('eval_'):]}" if k.startswith("eval_") else k): v for k, v in (logs or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


class TrlRun:
    """The run directory of one TRL run, its rows and its end."""

    def __init__(self, requested: Path, args, trainer, max_steps: int, started: float, log_book: str, log):
        import tomli_w

        from flatline.diagnostics.conclude import file_run
        from flatline.diagnostics.history import History
        from flatline.diagnostics.logbook import RunState

        self.config = config_from_args(args, trainer)
        self.dir = RunDir.create(requested, tomli_w.dumps(self.config)).open(METRICS, SAMPLES)
        self.max_steps, self.started, self.started_at = max_steps, started, datetime.now()
        self.log_book, self.log = log_book, log
        self.pending: dict | None = None  # the row of the step whose logging is not over yet
        log(f"flatline: run directory {self.dir.path}")
        history = History(run=self.dir.name, rows=[], config=self.config, run_dir=self.dir.path)
        file_run(history, state=RunState("running", 0, max_steps), log_book=log_book)

    # ------------------------------------------------------------------ rows
    def open_row(self, row: dict) -> None:
        """A step ended: its probe numbers; TRL's logs for it may follow."""
        self.write_row()
        self.pending = row

    def add_logs(self, step: int, logs: dict) -> None:
        """What TRL logged at `step`: into that step's row (a row of its own when the step has none open)."""
        if self.pending is not None and self.pending["step"] == step:
            self.pending.update(logs)
        elif logs:
            self.write_row()
            self.pending = {"step": step, **logs}

    def write_row(self) -> None:
        """The open row is complete (its step's logging is over): into metrics.jsonl."""
        if self.pending is not None:
            row, self.pending = self.pending, None
            self.dir.add_row(row)

    def note_reward_error(self, step: int) -> None:
        """A reward function raised at `step` (TRL stops there): the row says so."""
        self.pending = {**(self.pending or {"step": step}), "reward/errors": 1.0}

    # ------------------------------------------------------------------ live verdicts
    def structural_fault(self, step: int, stop_on: str | None) -> dict | None:
        """The first STRUCTURAL fail in the history so far (the open row included): id, step, seconds, reason."""
        from flatline.diagnostics.history import History
        from flatline.diagnostics.judge import judge

        rows = self.dir.rows + ([dict(self.pending)] if self.pending else [])
        diagnosis = judge(History(run=self.dir.name, rows=rows, config=self.config))
        found = [v for v in diagnosis.verdicts if v.id in STRUCTURAL and v.status == "fail"]
        if not found:
            return None
        seconds = time.perf_counter() - self.started
        self.log(f"flatline: FAIL {found[0].id} at step {step} ({seconds:.0f} s): {found[0].reason}"
                 + ("; stopping training (stop_on='fail')" if stop_on == "fail" else ""))
        return {"id": found[0].id, "step": step, "seconds": round(seconds, 1), "reason": found[0].reason}

    # ------------------------------------------------------------------ the end
    def finish(self, status: str, failure: str, flagged: dict | None, stopped: bool) -> None:
        """summary.json, then the diagnosis and the log book entry; `flagged` (a live fault) goes into both, and
        `stopped` says whether it stopped training."""
        from flatline.diagnostics.conclude import conclude, file_run
        from flatline.diagnostics.history import load_history
        from flatline.diagnostics.judge import judge
        from flatline.diagnostics.report import write_report

        self.write_row()
        self.dir.close()
        rows = self.dir.rows
        steps = sum(1 for row in rows if "reward" in row or any(k.startswith("advantage/") for k in row))
        summary = run_summary(rows, Outcome(status, steps, self.max_steps, failure), self.dir.name, self.started_at,
                              time.perf_counter() - self.started, "")
        summary["trainer"] = f"trl {trl_version()}"
        if flagged is not None:
            summary["flatline_flagged"] = flagged
            summary["stopped_by_flatline"] = stopped
        self.dir.write_summary(summary)
        history = load_history(self.dir.path)
        diagnosis = judge(history)
        if status == "completed":
            report = conclude(history, diagnosis, report_dirs=[self.dir.path], log_book=self.log_book, log=self.log)
        else:
            report = write_report(diagnosis, history, self.dir.path)
            file_run(history, diagnosis, log_book=self.log_book, report_dir=self.dir.path)
        if flagged is not None and report is not None:
            f = flagged
            self.dir.add_to_report(
                f"\n## Live monitor\n\n{f['id']} failed at step {f['step']}, {f['seconds']} s into "
                f"training{' (training stopped there: stop_on=fail)' if stopped else ''}: {f['reason']}\n")
