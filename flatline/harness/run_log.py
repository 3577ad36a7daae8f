"""A `flatline train` run's log book entry through its lifecycle: filed RUNNING once the run directory, config.toml
and W&B exist; settled COMPLETED with the judgement, or FAILED / INTERRUPTED with what stopped it and the step.

    train(cfg, make_listeners=for_trainer, **log_book_hooks(cfg))
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path


def log_book_hooks(cfg) -> dict:
    """train()'s on_start and on_end for `cfg`: the RUNNING entry, then the judged or stopped run's entry."""

    def on_start(run_dir: Path, tracker) -> None:
        from flatline.diagnostics.conclude import file_run
        from flatline.diagnostics.history import History
        from flatline.diagnostics.logbook import RunState
        from flatline.trainer.config import to_dict

        history = History(run=run_dir.name, rows=[], config=to_dict(cfg), run_dir=run_dir)
        file_run(history, state=RunState("running", 0, cfg.max_steps), log_book=cfg.log_book,
                 wandb=tracker.url_or_name, when=datetime.now())

    def on_end(run_dir: Path, tracker, outcome) -> None:
        from flatline.diagnostics.conclude import conclude, file_run
        from flatline.diagnostics.history import History, load_history
        from flatline.diagnostics.judge import judge
        from flatline.trainer.config import to_dict

        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        unjudged = History(run=run_dir.name, rows=[], config=to_dict(cfg), summary=summary, run_dir=run_dir)
        if outcome.status != "completed":
            file_run(unjudged, log_book=cfg.log_book, wandb=tracker.url_or_name)
            return
        try:
            history = load_history(run_dir)
            conclude(history, judge(history), report_dirs=[run_dir], log_book=cfg.log_book, tracker=tracker)
        except Exception:  # judging failed: the entry still says the run completed, then the error surfaces
            file_run(unjudged, log_book=cfg.log_book, wandb=tracker.url_or_name)
            raise

    return {"on_start": on_start, "on_end": on_end}


def log_evaluation(history, diagnosis, source: str | Path, report_dir: str | Path | None = None) -> None:
    """`flatline diagnose RUN --log`: file this judgement in the run's log book entry (found by its run directory,
    else the log file, as its id); the status it ended with gains EVALUATED. Says where on stderr, so stdout stays
    the report."""
    import sys

    from flatline.diagnostics.conclude import file_run
    from flatline.diagnostics.logbook import RunState, run_id

    state = RunState.from_summary(history.summary, evaluated=True)
    book = file_run(history, diagnosis, state=state, report_dir=report_dir, run=run_id(history.run_dir or source))
    if book is not None:
        print(f"log book: {book}", file=sys.stderr)
