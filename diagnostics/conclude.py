"""The end of a judged run, shared by `flatline train`, `flatline diagnose --log` and the cases plugin: report files,
the run's log book entry settled, W&B summary and table, and the judgement printed. Also the entry's other
moments: filed RUNNING when training starts, settled FAILED or INTERRUPTED when it stops early.

    file_run(history, state=RunState("running", 0, cfg.max_steps), log_book=cfg.log_book)    # at the start
    diagnosis = judge(history)
    conclude(history, diagnosis, report_dirs=[run_dir], log_book=cfg.log_book, tracker=tracker)
"""
from __future__ import annotations

import warnings
from datetime import datetime
from pathlib import Path

from flatline.diagnostics.history import History
from flatline.diagnostics.judge import Diagnosis
from flatline.diagnostics.logbook import RunState, file_entry, log_book_path, render_entry, run_id
from flatline.diagnostics.report import write_report
from flatline.diagnostics.verdict import format_number


def judgement_text(diagnosis: Diagnosis) -> str:
    """The judgement as a few terminal lines: the headline, each fail with its fix, the counts."""
    counts = diagnosis.counts()
    lines = [f"diagnosis of {diagnosis.run}: {diagnosis.status.upper()} "
             f"({counts['fail']} fail, {counts['warn']} warn, {counts['inconclusive']} inconclusive, {counts['pass']} pass, "
             f"{counts['skipped']} skipped)"]
    for verdict in diagnosis.failed + diagnosis.warned:
        lines.append(f"  {verdict.status.upper()} {verdict.id}: {verdict.reason}")
        lines.append(f"       try: {verdict.prescription}")
    if not diagnosis.failed and not diagnosis.warned:
        lines.append("  " + diagnosis.headline())
    return "\n".join(lines)


def wandb_summary(diagnosis: Diagnosis) -> tuple[dict, dict]:
    """Run-summary values and a verdict table for W&B."""
    summary = {"flatline/status": diagnosis.status, "flatline/headline": diagnosis.headline()}
    summary.update({f"flatline/{v.id}": v.status for v in diagnosis.verdicts})
    summary.update({f"flatline/key/{k}": v for k, v in diagnosis.key_metrics.items() if v is not None})
    rows = [[v.id, v.status, v.reason, ", ".join(f"{k}={format_number(x)}" for k, x in v.evidence.items()),
             v.prescription] for v in diagnosis.verdicts]
    return summary, {"flatline/verdicts": (["id", "status", "reason", "evidence", "prescription"], rows)}


def file_run(history: History, diagnosis: Diagnosis | None = None, *, state: RunState | None = None, log_book: str = "",
             report_dir=None, wandb: str = "", when: datetime | None = None, run: str | None = None) -> Path | None:
    """File the run's log book entry: it replaces the entry the run filed before (found by its id: the run directory)
    or goes in as the newest. state: default, what the run's summary.json says. Returns the log book's path, or None
    when it is switched off, or with a warning when it could not be written (a locked or unwritable log book must
    not stop or hide a run)."""
    book = log_book_path(log_book or history.setting("log_book", "") or "")
    if book is None:  # switched off
        return None
    run = run or (run_id(history.run_dir) if history.run_dir is not None else history.run)
    entry = render_entry(diagnosis, history, when=when or datetime.now(), report_dir=report_dir, wandb=wandb,
                         state=state, run=run)
    try:
        file_entry(book, run, entry)
    except Exception as exc:
        warnings.warn(f"log book {book} not updated: {exc}")
        return None
    return book


def conclude(history: History, diagnosis: Diagnosis, report_dirs=(), log_book: str = "", tracker=None,
             wandb: str = "", log=print, when: datetime | None = None, evaluated: bool = False,
             run: str | None = None) -> Path | None:
    """Write the report into each of report_dirs, settle the run's log book entry with the verdict, tell W&B;
    returns the first report. evaluated: a later judgement (`flatline diagnose --log`), which adds EVALUATED to the
    status the run ended with.

    The run's own files are already safe on disk; a failure here warns and never raises into the caller."""
    report = None
    for directory in report_dirs:
        try:
            path = write_report(diagnosis, history, directory)
            report = report or path
        except OSError as exc:
            warnings.warn(f"diagnosis report not written to {directory}: {exc}")
    if tracker is not None:
        summary, tables = wandb_summary(diagnosis)
        tracker.summarize(summary, tables)
        wandb = wandb or getattr(tracker, "url_or_name", "")
    state = RunState.from_summary(history.summary, evaluated=evaluated)
    book = file_run(history, diagnosis, state=state, log_book=log_book, report_dir=report.parent if report else None,
                    wandb=wandb, when=when, run=run)
    log(judgement_text(diagnosis))
    if report is not None:
        log(f"report: {report}")
    if book is not None:
        log(f"log book: {book}")
    return report
