"""The experiment log book: one markdown file, newest entry first, with one entry per run that follows the run's
lifecycle.

    path = log_book_path(cfg.log_book)                 # config > $FLATLINE_LOG > reports/EXPERIMENT_LOG.md
    file_entry(path, run_id(run_dir), render_entry(None, history, when=now, state=RunState("running", 0, 40)))
    file_entry(path, run_id(run_dir), render_entry(diagnosis, history, when=now))   # settles the same entry
    print(read_log_book(path)); print("\n".join(entry_lines(read_log_book(path), {"failed"})))

Statuses: RUNNING when `flatline train` starts; COMPLETED, FAILED (with the error's last line and the step) or
INTERRUPTED (Ctrl-C, SIGTERM) when it ends; EVALUATED is added to that status ("COMPLETED, EVALUATED") when
`flatline diagnose RUN --log` judges the run later. Each entry opens with a hidden line naming its status and its
run directory (the id), and closes with a hidden end line, so a later write finds its own entry: settling replaces
only that entry's bytes (keeping its heading), every other byte of the file stays as it was. A new entry is
inserted after the marker line. Writes hold `<path>.lock` and replace the file atomically.

What the user points at is never harmed: the log book is switched off by log_book / $FLATLINE_LOG = "off" or the
null device; a path that exists must be a regular, writable file that is empty or a log book (the marker line, or
markdown text under a `# ` title, as a hand-started one); anything else (a device, a FIFO, a folder, a read-only
file, a PNG or a metrics.jsonl named by mistake) is refused, untouched, with the reason (check_log_book).
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

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
# log_book / $FLATLINE_LOG set to this (or to the null device) switches the log book off.
OFF = "off"
# Bytes read of an existing file to tell whether it is a log book.
SNIFF_BYTES = 1024 * 1024
# Where the log book lives when neither the config nor the environment names one (relative to the cwd).
DEFAULT_LOG_BOOK = Path("reports") / "EXPERIMENT_LOG.md"
# Seconds to wait for another process's write before giving up.
LOCK_TIMEOUT_S = 60.0
# New entries go right after this line; what is below it changes only where flatline settles one of its own entries.
MARKER = "<!-- flatline: newest entry first; an entry changes only when its own run settles -->"
# The marker of log books written before entries had a lifecycle; still recognised, never rewritten.
LEGACY_MARKERS = ("<!-- flatline: newest entry first; entries below are never edited -->",)
HEADER = ("# Experiment log\n\n"
          "One entry per GRPO run, written by flatline: what ran, how it ended, why it is not learning.\n\n")
# Config keys worth a row in an entry, in the order shown.
CONFIG_KEYS = ("model", "task", "data", "learning_rate", "beta", "num_generations", "per_device_train_batch_size",
               "max_completion_length", "temperature", "loss_type", "scale_rewards", "max_grad_norm", "lora_r",
               "lora_alpha", "dtype", "max_steps", "seed")
# A key metric that could not be computed (None) is shown as this.
MISSING = "—"
# A run's own fate, then the mark a later judgement adds.
RUN_STATUSES = ("running", "completed", "failed", "interrupted")
EVALUATED = "evaluated"
STATUSES = (*RUN_STATUSES, EVALUATED)
ENTRY_END = "<!-- /flatline-entry -->"

_MARKER_LINE = re.compile(rb"^(?:" + b"|".join(re.escape(m.encode()) for m in (MARKER, *LEGACY_MARKERS))
                          + rb")[ \t]*(\r?\n|\Z)", re.MULTILINE)
_ENTRY_START = re.compile(rb"^<!-- flatline-entry status=([a-z,]+) run=(\S+) -->\r?\n", re.MULTILINE)
_ENTRY_LISTED = re.compile(r"^<!-- flatline-entry status=([a-z,]+) run=(\S+) -->\r?\n(.*)$", re.MULTILINE)
_ENTRY_END = re.compile(rb"^" + re.escape(ENTRY_END.encode()) + rb"[ \t]*(?:\r?\n|\Z)", re.MULTILINE)


@dataclass(frozen=True)
class RunState:
    """Where a run is in its lifecycle: its own fate (None for a log flatline did not train) and whether a later
    `flatline diagnose --log` judged it."""

    status: str | None
    steps_completed: int | None = None
    max_steps: int | None = None
    error: str = ""
    evaluated: bool = False

    @classmethod
    def from_summary(cls, summary: dict, evaluated: bool = False) -> "RunState":
        """The fate summary.json records (`status`, `steps_completed`, `max_steps`, `error`); status None when it
        records none (a foreign log, a run killed outright, a run directory from before statuses)."""
        status = summary.get("status") if summary.get("status") in RUN_STATUSES else None
        return cls(status, summary.get("steps_completed"), summary.get("max_steps"), str(summary.get("error") or ""),
                   evaluated)

    @property
    def statuses(self) -> tuple[str, ...]:
        return tuple(s for s in (self.status, EVALUATED if self.evaluated else None) if s)

    def label(self) -> str:
        """e.g. `COMPLETED, EVALUATED`."""
        return ", ".join(s.upper() for s in self.statuses) or "UNKNOWN"

    def detail(self) -> str:
        """The steps and, for a failure or interruption, what stopped it."""
        steps, total = self.steps_completed, self.max_steps if self.max_steps is not None else "?"
        if self.status == "running":
            return f"{total} steps planned"
        if steps is None:
            return ""
        if self.status == "failed":
            return f"during step {steps + 1} of {total}: {self.error}" if self.error else f"during step {steps + 1} of {total}"
        if self.status == "interrupted":
            return f"by {self.error or 'an interrupt'} after {steps} of {total} steps"
        return f"{steps} of {total} steps"


@dataclass(frozen=True)
class EntryLine:
    """One filed entry as `flatline log --status` lists it."""

    statuses: tuple[str, ...]
    run_id: str
    heading: str

    def text(self) -> str:
        label = ", ".join(s.upper() for s in self.statuses)
        return f"{label:<22} {self.heading}  ({self.run_id})"


def run_id(path: str | Path) -> str:
    """The id of a run's entry: its run directory (or log file), resolved, so train and diagnose agree on it."""
    return os.path.realpath(Path(path).expanduser())


def log_book_path(config_value: str = "") -> Path | None:
    """The config's log_book when set, else $FLATLINE_LOG when set, else reports/EXPERIMENT_LOG.md under the cwd;
    None when that says off (`off`, or the null device)."""
    chosen = config_value or os.environ.get(LOG_ENV, "")
    if not chosen:
        return Path.cwd() / DEFAULT_LOG_BOOK
    if chosen.strip().lower() == OFF or os.path.realpath(Path(chosen).expanduser()) == os.path.realpath(os.devnull):
        return None
    return Path(chosen).expanduser()


_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


def log_book_problem(path: str | Path, head: bytes | None = None) -> str:
    """Why flatline must not write the log book at `path` ("" when it may): the path must not exist yet, or be a
    regular file that is writable (by its mode, even for root) and empty or a log book. Never opens anything but a
    regular file. head: the file's bytes when already read."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        return f"cannot be looked at ({exc.strerror})"
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "not a regular file")
        return f"is {kind}, not a log book file"
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o222 or not os.access(path, os.W_OK):
        return f"is write-protected (mode {mode:o}); flatline leaves it so: make it writable (chmod u+w)"
    if head is None:
        try:
            with open(path, "rb") as file:
                head = file.read(SNIFF_BYTES)
        except OSError as exc:
            return f"cannot be read ({exc.strerror})"
    if head.strip() and not is_log_book(head):
        return ("is neither empty nor a log book (no flatline marker line, and not markdown text under a '# ' "
                "title)")
    return ""


def is_log_book(data: bytes) -> bool:
    """A log book's bytes: they hold the marker line, or they are UTF-8 markdown text opening with a `# ` title."""
    if _MARKER_LINE.search(data):
        return True
    if b"\0" in data:
        return False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(data) - 3:  # a multi-byte character cut by the sniff's end is still text
            return False
        text = data[:exc.start].decode("utf-8")
    return text.lstrip("\ufeff \t\r\n").startswith("# ")


def check_log_book(path: Path | None) -> None:
    """FlatlineError naming `path`, why, and the fix, when flatline must not write the log book there (None: off)."""
    problem = log_book_problem(path) if path is not None else ""
    if problem:
        raise FlatlineError(f"log book {path} {problem}; point log_book / ${LOG_ENV} at a markdown file, or set it "
                            f"to {OFF} for no log book")


def _cell(value) -> str:
    return MISSING if value is None else escape_inline(format_number(value))


def _facts(diagnosis: Diagnosis | None, history: History, state: RunState, report_dir, wandb: str) -> list[str]:
    run_dir = history.run_dir or report_dir
    wandb = wandb or history.summary.get("wandb") or ""
    detail = state.detail()
    facts = [f"- status: **{state.label()}**" + (f" ({escape_inline(detail)})" if detail else "")]
    facts += [f"- run directory: {escape_inline(run_dir)}"] if run_dir else []
    if diagnosis is not None:
        facts += [f"- diagnosis: **{escape_inline(diagnosis.status.upper())}**",
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


def _entry_open(state: RunState, run: str) -> str:
    """The hidden first line of an entry: its statuses and its run id, percent-encoded so no path can end it."""
    return f"<!-- flatline-entry status={','.join(state.statuses) or 'unknown'} run={_encoded(run)} -->"


def _encoded(run: str) -> str:
    """A run id as the open line holds it: percent-encoded, so it has no space and no `>` to end the comment."""
    return quote(run, safe="/:@+,=")


def render_entry(diagnosis: Diagnosis | None, history: History, *, when: datetime, report_dir: str | Path | None = None,
                 wandb: str = "", state: RunState | None = None, run: str | None = None) -> str:
    """One log book entry: hidden open line, heading, facts, config, and when judged the key metrics and open
    verdicts, then the hidden end line; ends in one newline. state: the run's lifecycle (default: what the run's
    summary.json says); run: the entry's id (default: run_id of the run directory, else the run's name)."""
    state = state or RunState.from_summary(history.summary)
    run = run or (run_id(history.run_dir) if history.run_dir is not None else history.run)
    heading = f"## {when.strftime('%Y-%m-%d %H:%M')} — {escape_inline((diagnosis.run if diagnosis else '') or history.run)}"
    blocks = [_entry_open(state, run) + "\n" + heading, "\n".join(_facts(diagnosis, history, state, report_dir, wandb)),
              *_config_block(history.config)]
    if diagnosis is not None:
        blocks += [*_metrics_block(diagnosis.key_metrics), *_verdicts_block(diagnosis)]
    else:
        blocks.append("**Verdicts**: not judged yet (`flatline diagnose RUN_DIR --log` judges a run and files it here)")
    return "\n\n".join(blocks) + "\n" + ENTRY_END + "\n"


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


def _entry_span(old: bytes, run: str) -> tuple[int, int, bytes] | None:
    """(start, end, heading line) of the newest complete entry filed for `run`, or None."""
    wanted = _encoded(run).encode()
    for start in _ENTRY_START.finditer(old):
        if start.group(2) != wanted:
            continue
        end = _ENTRY_END.search(old, start.end())
        if end is None:
            return None
        heading_end = old.find(b"\n", start.end())
        heading = old[start.end():heading_end + 1] if heading_end != -1 else b""
        return start.start(), end.end(), heading
    return None


def _with_settled(old: bytes, run: str, entry: bytes) -> bytes:
    """`old` with the entry filed for `run` replaced by `entry` under the old entry's heading (an entry stays filed
    under the time its run started), or with `entry` inserted as the newest when none was filed."""
    span = _entry_span(old, run)
    if span is None:
        return _with_entry(old, entry)
    start, end, heading = span
    first, _, rest = entry.partition(b"\n")
    _, _, body = rest.partition(b"\n")
    return old[:start] + first + b"\n" + heading + body + old[end:]


def _update(path: str | Path, change, timeout: float) -> None:
    """Replace the log book at `path` by change(old bytes) under its lock, atomically; create it if missing. A path
    that is not a log book flatline may write (check_log_book) is refused, untouched."""
    path = Path(os.path.realpath(Path(path).expanduser()))
    check_log_book(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = f"{path}.lock"
    try:
        with FileLock(lock_path, timeout=timeout):
            old = path.read_bytes() if path.exists() else b""
            problem = log_book_problem(path, old)  # again under the lock: it may have changed meanwhile
            if problem:
                raise FlatlineError(f"log book {path} {problem}; point log_book / ${LOG_ENV} at a markdown file, "
                                    f"or set it to {OFF} for no log book")
            write_atomic(path, change(old or (HEADER + MARKER + "\n").encode()))
    except Timeout:
        raise FlatlineError(f"{lock_path}: another process has held the log book's lock for over {timeout:g} s; "
                            f"wait for it, or delete this lock file if no flatline process is running") from None


def append_entry(path: str | Path, entry: str, *, timeout: float = LOCK_TIMEOUT_S) -> None:
    """Insert `entry` as the newest entry of the log book at `path`, creating it (and its folder) if missing."""
    _update(path, lambda old: _with_entry(old, entry.encode("utf-8")), timeout)


def file_entry(path: str | Path, run: str, entry: str, *, timeout: float = LOCK_TIMEOUT_S) -> None:
    """File `entry` (rendered for `run`) in the log book at `path`: it replaces the entry `run` filed before, byte
    for byte in place (keeping its heading), or goes in as the newest. No other byte of the file changes."""
    _update(path, lambda old: _with_settled(old, run, entry.encode("utf-8")), timeout)


def entry_lines(text: str, statuses=()) -> list[EntryLine]:
    """The filed entries of a log book's text, newest first, those with any of `statuses` (all when empty)."""
    wanted = {s.lower() for s in statuses}
    found = []
    for match in _ENTRY_LISTED.finditer(text):
        marks = tuple(s for s in match.group(1).split(",") if s)
        if not wanted or wanted & set(marks):
            found.append(EntryLine(marks, unquote(match.group(2)), match.group(3).removeprefix("## ").strip()))
    return found


def read_log_book(path: str | Path) -> str:
    """The log book's text; FlatlineError naming the path (and how to start one) when there is none yet."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FlatlineError(f"{path}: no experiment log book here yet; `flatline train` or `pytest cases/` "
                            f"write one (an entry per run), or set log_book / ${LOG_ENV} to an existing one")
    return path.read_text(encoding="utf-8", errors="replace")
