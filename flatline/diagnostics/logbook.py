"""The experiment log book: one markdown file, newest entry first, that every judged run adds an entry to.

    path = log_book_path(cfg.log_book)                 # config > $FLATLINE_LOG > reports/EXPERIMENT_LOG.md
    append_entry(path, render_entry(diagnosis, history, when=datetime.now(), report_dir="reports/x"))
    print(read_log_book(path))

Entries are only ever inserted after the marker line; the bytes below it are never rewritten, so a hand-edited
or hand-written log keeps every byte. Writes hold `<path>.lock` and replace the file atomically.
"""
from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from flatline.common.errors import FlatlineError
from flatline.common.files import write_atomic
from flatline.diagnostics.markdown import escape_inline, table
from flatline.diagnostics.verdict import format_number

if TYPE_CHECKING:
    from flatline.diagnostics.history import History
    from flatline.diagnostics.judge import Diagnosis

# Environment variable naming the log book when the config does not.
LOG_ENV = "FLATLINE_LOG"
# Where the log book lives when neither the config nor the environment names one (relative to the cwd).
DEFAULT_LOG_BOOK = Path("reports") / "EXPERIMENT_LOG.md"
# Seconds to wait for another process's write before giving up.
LOCK_TIMEOUT_S = 60.0
# New entries go right after this line; everything below it is left byte-for-byte as it was.
MARKER = "<!-- flatline: newest entry first; entries below are never edited -->"
HEADER = ("# Experiment log\n\n"
          "One entry per judged GRPO run, written by flatline: what ran, what it measured, why it is not learning.\n\n")
# Config keys worth a row in an entry, in the order shown.
CONFIG_KEYS = ("model", "task", "data", "learning_rate", "beta", "num_generations", "per_device_train_batch_size",
               "max_completion_length", "temperature", "loss_type", "scale_rewards", "max_grad_norm", "lora_r",
               "lora_alpha", "dtype", "max_steps", "seed")
# A key metric that could not be computed (None) is shown as this.
MISSING = "—"

_MARKER_LINE = re.compile(rb"^" + re.escape(MARKER.encode()) + rb"[ \t]*(\r?\n|\Z)", re.MULTILINE)


def log_book_path(config_value: str = "") -> Path:
    """The config's log_book when set, else $FLATLINE_LOG when set, else reports/EXPERIMENT_LOG.md under the cwd."""
    chosen = config_value or os.environ.get(LOG_ENV, "")
    return Path(chosen).expanduser() if chosen else Path.cwd() / DEFAULT_LOG_BOOK


def _cell(value) -> str:
    return MISSING if value is None else escape_inline(format_number(value))


def _facts(diagnosis: Diagnosis, history: History, report_dir, wandb: str) -> list[str]:
    run_dir = history.run_dir or report_dir
    wandb = wandb or history.summary.get("wandb") or ""
    facts = [f"- run directory: {escape_inline(run_dir)}"] if run_dir else []
    facts += [f"- status: **{escape_inline(diagnosis.status.upper())}**",
              f"- headline: {escape_inline(diagnosis.headline())}"]
    if wandb:
        facts.append(f"- W&B: {escape_inline(wandb)}")
    if report_dir is not None:
        facts.append(f"- report: {escape_inline(Path(report_dir) / 'diagnosis.md')}")
    if not history.config:
        facts.append("- config: not recorded")
    return facts


def _config_block(config: dict) -> list[str]:
    rows = [[escape_inline(key), _cell(config[key])] for key in CONFIG_KEYS if config.get(key) not in (None, "")]
    return ["**Config**", table(["key", "value"], rows)] if rows else []


def _metrics_block(key_metrics: dict) -> list[str]:
    if not key_metrics:
        return ["**Key metrics**: none recorded"]
    rows = [[escape_inline(name), _cell(value)] for name, value in key_metrics.items()]
    return ["**Key metrics**", table(["metric", "value"], rows)]


def _verdicts_block(diagnosis: Diagnosis) -> list[str]:
    open_ = [v for v in diagnosis.verdicts if v.status in ("fail", "warn", "inconclusive")]
    counts = diagnosis.counts()
    tally = f"{counts['pass']} ruled out, {counts['skipped']} skipped"
    if not open_:
        return ["**Verdicts**: none failed, warned or inconclusive", tally]
    rows = [[escape_inline(v.id), escape_inline(v.status), escape_inline(v.reason), escape_inline(v.prescription)]
            for v in open_]
    return ["**Verdicts** (failed, warned and inconclusive)", table(["id", "status", "reason", "prescription"], rows), tally]


def render_entry(diagnosis: Diagnosis, history: History, *, when: datetime,
                 report_dir: str | Path | None = None, wandb: str = "") -> str:
    """One log book entry: heading, facts, config, key metrics and the open verdicts; ends in one newline."""
    heading = f"## {when.strftime('%Y-%m-%d %H:%M')} — {escape_inline(diagnosis.run or history.run)}"
    blocks = [heading, "\n".join(_facts(diagnosis, history, report_dir, wandb)), *_config_block(history.config),
              *_metrics_block(diagnosis.key_metrics), *_verdicts_block(diagnosis)]
    return "\n\n".join(blocks) + "\n"


def _with_entry(old: bytes, entry: bytes) -> bytes:
    """`old` with `entry` inserted as the newest entry; every byte of `old` kept, in order."""
    marker = _MARKER_LINE.search(old)
    if marker:
        head, tail, insert = old[:marker.end()], old[marker.end():], b""
        if not marker.group(1):
            head += b"\n"
    else:
        first_end = old.find(b"\n") + 1 or len(old)
        split = first_end if old.startswith(b"# ") else 0
        head, tail = old[:split], old[split:]
        if head and not head.endswith(b"\n"):
            head += b"\n"
        insert = (b"\n" if head else b"") + MARKER.encode() + b"\n"
    separator = b"" if not tail or tail.startswith((b"\n", b"\r\n")) else b"\n"
    return head + insert + b"\n" + entry + separator + tail


def append_entry(path: str | Path, entry: str, *, timeout: float = LOCK_TIMEOUT_S) -> None:
    """Insert `entry` as the newest entry of the log book at `path`, creating it (and its folder) if missing."""
    path = Path(os.path.realpath(Path(path).expanduser()))
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = f"{path}.lock"
    try:
        with FileLock(lock_path, timeout=timeout):
            old = (path.read_bytes() if path.exists() else b"") or (HEADER + MARKER + "\n").encode()
            write_atomic(path, _with_entry(old, entry.encode("utf-8")))
    except Timeout:
        raise FlatlineError(f"{lock_path}: another process has held the log book's lock for over {timeout:g} s; "
                            f"wait for it, or delete this lock file if no flatline process is running") from None


def read_log_book(path: str | Path) -> str:
    """The log book's text; FlatlineError naming the path (and how to start one) when there is none yet."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FlatlineError(f"{path}: no experiment log book here yet; `flatline train` or `pytest cases/` "
                            f"write one (an entry per run), or set log_book / ${LOG_ENV} to an existing one")
    return path.read_text(encoding="utf-8", errors="replace")
