"""`flatline watch`: follow a log that is still being written and print each verdict change once, with its step.

    flatline watch outputs/train.log --interval 5 --fail-on fail      # exit 1 when a fail appears

Every `interval` seconds the log's file is looked at (its inode, size and modification time: no read); when it
changed, the log is read again whole with the readers `flatline diagnose` uses and, when its rows changed, judged
again with every hypothesis. A log replaced by a new file at the same path (rotation) or cut short (truncation)
is read anew; rows of the earlier file before the new file's first step are kept, so a run resumed into a fresh
file is judged whole, and a run that starts again at step 1 is judged alone.

Printed on stdout, one line each: a verdict that enters or leaves fail or warn, or moves between them
(`step 40: length.truncation pass -> fail: <reason>`); the verdicts already flagged at the first judgement
(`step 12: entropy.collapse warn: <reason>`). Notes go to stderr. Exit 1 as soon as a verdict at or above
`--fail-on` is there (the headline printed last); 0 on Ctrl-C, SIGTERM, `--max-wait` seconds without a change to the
log, or after `--once`; 2 when the log never became readable (the reader's one-line error).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from flatline.common.errors import FlatlineError, Terminated
from flatline.diagnostics.verdict import FLAGGED, SEVERITY

FAIL_ON = ("fail", "warn")


# -- the file: has it changed, and how ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fingerprint:
    """What a stat call tells of the log: enough to see it grow, be replaced, or be cut short, without reading it."""

    path: str  # the file read (a directory's log may move to a newer checkpoint)
    inode: int
    size: int
    mtime_ns: int


def fingerprint(path: Path) -> Fingerprint | None:
    """The log file's fingerprint; for a directory (TensorBoard events) the sum of its files'; None when missing."""
    try:
        stat = path.stat()
        if path.is_dir():
            stats = [entry.stat() for entry in os.scandir(path) if entry.is_file()]
            return Fingerprint(str(path), stat.st_ino, sum(s.st_size for s in stats),
                               max([stat.st_mtime_ns] + [s.st_mtime_ns for s in stats]))
    except OSError:
        return None
    return Fingerprint(str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)


def how_changed(before: Fingerprint | None, after: Fingerprint | None) -> str:
    """"same", "grew" (written to), "replaced" (another file at the path, or a newer checkpoint's), "truncated" (the
    same file, shorter), "gone" (nothing at the path now) or "appeared"."""
    if after is None:
        return "same" if before is None else "gone"
    if before is None:
        return "appeared"
    if (after.path, after.inode) != (before.path, before.inode):
        return "replaced"
    if after.size < before.size:
        return "truncated"
    if (after.size, after.mtime_ns) != (before.size, before.mtime_ns):
        return "grew"
    return "same"


def continued_rows(earlier: list[dict], rows: list[dict]) -> list[dict]:
    """The rows of a log that followed earlier files at the same path: the earlier rows logged before the new
    file's first step, then the new file's (a resumed run keeps its past; a run started again at step 1 keeps none)."""
    if not rows:
        return list(earlier)
    first = rows[0]["step"]
    return [row for row in earlier if row["step"] < first] + rows


# -- the verdicts: what changed between two judgements --------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    id: str
    before: str | None  # None: the first judgement
    after: str
    reason: str


def statuses(diagnosis) -> dict[str, tuple[str, str]]:
    """id -> (status, reason on one line), in the diagnosis's order (likeliest cause first)."""
    return {v.id: (v.status, " ".join(v.reason.split())) for v in diagnosis.verdicts}


def verdict_changes(before: dict[str, tuple[str, str]] | None, after: dict[str, tuple[str, str]]) -> list[Change]:
    """Verdicts that entered, left or moved within fail/warn since `before` (None: nothing judged yet, so only the
    flagged ones); in `after`'s order. A change between pass, inconclusive and skipped is not news."""
    changes = []
    for id, (status, reason) in after.items():
        old = None if before is None else before.get(id, ("skipped", ""))[0]
        if old != status and (status in FLAGGED or old in FLAGGED):
            changes.append(Change(id, old, status, reason))
    return changes


def change_line(step: float | None, change: Change) -> str:
    where = f"step {step:g}" if step is not None else "no step yet"
    move = change.after if change.before is None else f"{change.before} -> {change.after}"
    return f"{where}: {change.id} {move}: {change.reason}"


def at_or_above(now: dict[str, tuple[str, str]], fail_on: str) -> list[str]:
    return [id for id, (status, _) in now.items() if SEVERITY[status] >= SEVERITY[fail_on]]


# -- the loop ---------------------------------------------------------------------------------------------------------


@dataclass
class Options:
    interval: float = 5.0
    fail_on: str = "fail"
    format_in: str = "auto"
    max_wait: float | None = None  # stop after this many seconds without a change to the log
    once: bool = False  # judge the log as it stands, print, and stop


@dataclass
class _Followed:
    """What the loop knows between ticks."""

    fingerprint: Fingerprint | None = None
    earlier: list | None = None  # rows of the files before a rotation or truncation
    rows: list | None = None  # the rows last judged (before continuation)
    verdicts: dict | None = None
    error: str = ""  # the last read error, printed once


def validate(path: Path, options: Options) -> None:
    if not path.exists():
        raise FlatlineError(f"{path}: does not exist; start `flatline watch` once the trainer has created its log")
    if not options.interval > 0:
        raise FlatlineError(f"--interval {options.interval:g}: must be above 0 seconds")
    if options.max_wait is not None and not options.max_wait > 0:
        raise FlatlineError(f"--max-wait {options.max_wait:g}: must be above 0 seconds")
    if options.fail_on not in FAIL_ON:
        raise FlatlineError(f"--fail-on {options.fail_on}: choose one of {', '.join(FAIL_ON)}")


def watch(path, options: Options, out=print, note=None, clock=time.monotonic, sleep=time.sleep) -> int:
    """Follow the log at `path` until a verdict at or above options.fail_on (1), a stop (0), or never readable (2).
    `out` gets each change line, `note` each remark (stderr by default)."""
    path = Path(path)
    note = note or (lambda text: print(f"flatline: {text}", file=sys.stderr, flush=True))
    validate(path, options)
    state = _Followed()
    last_change = clock()
    try:
        with sigterm_stops():
            while True:
                tick = clock()
                changed, code = _look(path, options, state, out, note)
                if code is not None:
                    return code
                if changed:
                    last_change = tick
                if options.once:
                    return _stopped(state, "judged once", note)
                if options.max_wait is not None and clock() - last_change >= options.max_wait:
                    return _stopped(state, f"no change to the log for {options.max_wait:g} s", note)
                sleep(max(0.0, tick + options.interval - clock()))
    except KeyboardInterrupt as exc:
        return _stopped(state, f"stopped ({getattr(exc, 'signal_name', 'Ctrl-C')})", note)


def _look(path: Path, options: Options, state: _Followed, out, note) -> tuple[bool, int | None]:
    """One look at the log: (whether it changed, 1 when options.fail_on is reached else None)."""
    found = _log_file(path, options.format_in)
    now = fingerprint(found)
    change = how_changed(state.fingerprint, now)
    if change == "same":
        return False, None
    if change in ("replaced", "truncated", "appeared") and state.rows:
        state.earlier = continued_rows(state.earlier or [], state.rows)
        moved = state.fingerprint is not None and now is not None and now.path != state.fingerprint.path
        note(f"now reading {found}" if moved else f"{found}: {change}; reading it anew")
    state.fingerprint = now
    return True, _judge_again(path, options, state, out, note)


def _log_file(path: Path, format_in: str) -> Path:
    """The file to stat: the path itself, or the log a directory holds now (its newest checkpoint)."""
    if not path.is_dir():
        return path
    from flatline.diagnostics.readers.detect import find_log

    try:
        return find_log(path, format_in).path
    except FlatlineError:
        return path


def _judge_again(path: Path, options: Options, state: _Followed, out, note) -> int | None:
    """Read and judge when the rows changed; print the changes; 1 when options.fail_on is reached."""
    from flatline.diagnostics.history import load_history
    from flatline.diagnostics.judge import judge

    try:
        history = load_history(path, options.format_in)
    except FlatlineError as exc:
        if options.once:
            raise
        if str(exc) != state.error:
            state.error = str(exc)
            note(f"waiting: {exc}")
        return None
    state.error = ""
    if history.rows == state.rows and state.verdicts is not None:
        return None  # bytes without a new row (a progress bar, a warning)
    state.rows = history.rows
    if state.earlier:
        history = replace(history, rows=continued_rows(state.earlier, history.rows))
    rows = history.rows
    diagnosis = judge(history)
    if diagnosis.nothing_to_judge and diagnosis.nothing_to_judge != state.error:
        state.error = diagnosis.nothing_to_judge
        note(f"waiting: {diagnosis.nothing_to_judge}")
    now = statuses(diagnosis)
    step = float(rows[-1]["step"]) if rows else None
    if state.verdicts is None:
        note(_first_note(history, diagnosis, step, options))
    for change in verdict_changes(state.verdicts, now):
        out(change_line(step, change))
    state.verdicts = now
    if at_or_above(now, options.fail_on):
        out(f"step {step:g}: {diagnosis.headline()}" if step is not None else diagnosis.headline())
        return 1
    return None


def _first_note(history, diagnosis, step: float | None, options: Options) -> str:
    if step is None:
        return f"{history.log.source}: no training rows yet"
    counts = diagnosis.counts()
    text = (f"{history.log.source}: {len(history.rows)} rows judged up to step {step:g}: {counts['fail']} fail, "
            f"{counts['warn']} warn")
    return text if options.once else f"{text}; watching every {options.interval:g} s"


def _stopped(state: _Followed, why: str, note) -> int:
    """0, or the read error (exit 2) when the log was never judged."""
    if state.verdicts is None and state.error:
        raise FlatlineError(f"{why}, and the log was never judged: {state.error}")
    note(f"{why}; no verdict at or above --fail-on")
    return 0


@contextmanager
def sigterm_stops():
    """While watching, SIGTERM (what `timeout` and schedulers send) stops the watch as Ctrl-C does. Off the main
    thread (where Python cannot set handlers) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
