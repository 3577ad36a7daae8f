"""HF/TRL console output captured to a file (`python train.py 2>&1 | tee run.log`, a Slurm .out, a notebook's
printed output): transformers' ProgressCallback prints each logged row as a Python dict literal
(`{'loss': 0.0123, 'grad_norm': ..., 'reward': ..., 'epoch': 0.05}`) among tqdm bars (redrawn with carriage
returns), warnings, tracebacks and whatever the user's code prints. Recent transformers print the values as
strings (`'loss': '0.0123'`); both read as numbers.

A printed row has no step. The step is taken, in this order, from
  1. the training bar's counter `N/T [`: the bar tqdm redraws right after the row, else the last one before it;
  2. a `global_step/max_steps` value `'N/T'` in the row (ms-swift prints one);
  3. the row's position times `logging_steps`, when a config beside the log gives it;
  4. the row's position (1..N, file order).
LogInfo's notes say which. The end-of-training dict (`train_runtime`, `train_loss`) is the summary, not a step;
a dict with `eval_` keys is a held-out row at the step of the training row before it. Literals are parsed with
`ast.literal_eval` only.

    raw = read_console(Path("train.log"))
"""
from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

from flatline.diagnostics.readers.base import LogError, RawLog, Record, read_text

# Terminal colour and cursor codes (`\x1b[36m`, `\x1b[A`), stripped before anything is read.
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# A tqdm bar's counter: `  5%|▌         | 5/100 [00:34<07:28,  4.72s/it]`.
BAR = re.compile(r"(\d+)/(\d+) \[")
# Keys the Trainer puts in every logged row (epoch) or in rows of a GRPO run, and in its last row.
ROW_KEYS = ("epoch", "loss", "learning_rate", "grad_norm", "reward", "train_runtime")
SUMMARY_KEY = "train_runtime"
SWIFT_STEP = "global_step/max_steps"
# A printed dict longer than this is not a logged row (a dataset sample, a config dump).
MAX_ROW_CHARS = 200_000


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


def _literal(text: str) -> dict | None:
    """The dict a segment's `{'...}` holds, or None (ast.literal_eval only: never eval)."""
    if len(text) > MAX_ROW_CHARS:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, dict) and all(isinstance(k, str) for k in value) else None


def is_row(value: dict) -> bool:
    """A logged row: keys the Trainer writes, and numbers (or numbers printed as text) for values."""
    if not any(k in value for k in ROW_KEYS) and not any(k.startswith("eval_") for k in value):
        return False
    numeric = sum(isinstance(v, (int, float)) or (isinstance(v, str) and _is_number(v)) for v in value.values())
    return numeric >= len(value) / 2


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def printed_rows(text: str) -> list[tuple[int, dict, tuple[int, int] | None]]:
    """(line, row, its bar counter (n, total)) for every logged row in console text. The counter is the bar drawn
    right after the row, before the next one (tqdm.write redraws the bar at once, with the step being logged), else
    the last bar drawn before it (tqdm redraws at most every 0.1 s, so an earlier bar can lag behind)."""
    found, before, line = [], None, 1  # found: [line, row, bar before, bar after]
    for segment in re.split(r"(\r\n|\r|\n)", strip_ansi(text)):
        if segment in ("\r\n", "\n"):
            line += 1
            continue
        start = segment.find("{'")
        end = segment.rfind("}") if start >= 0 else -1
        value = _literal(segment[start:end + 1]) if end > start else None
        if value is None or not is_row(value):
            start = end = -1
        for match in BAR.finditer(segment):
            if start < 0 or match.start() < start or match.start() > end:
                counter = (int(match.group(1)), int(match.group(2)))
                if found and found[-1][3] is None and (start < 0 or match.start() > end):
                    found[-1][3] = counter
                before = counter if start < 0 or match.start() < start else before
        if start >= 0:
            found.append([line, value, before, None])
            tail = [m for m in BAR.finditer(segment) if m.start() > end]
            if tail:
                found[-1][3] = (int(tail[0].group(1)), int(tail[0].group(2)))
                before = (int(tail[-1].group(1)), int(tail[-1].group(2)))
    return [(line, row, after or prior) for line, row, prior, after in found]


def _training_total(rows) -> int | None:
    """The training bar's total: the one most often printed just before a training row."""
    totals = Counter(bar[1] for _, row, bar in rows if bar and not _is_eval(row) and SUMMARY_KEY not in row)
    return totals.most_common(1)[0][0] if totals else None


def _is_eval(row: dict) -> bool:
    return any(k.startswith("eval_") for k in row)


def _swift_step(row: dict):
    value = row.get(SWIFT_STEP)
    if isinstance(value, str) and "/" in value:
        head = value.split("/", 1)[0]
        return int(head) if head.isdigit() else None
    return None


def assign_steps(rows, path: Path, raw: RawLog, logging_steps: int | None) -> None:
    """Records with steps for printed rows (the order of preference in the module docstring)."""
    total = _training_total(rows)
    training = [(line, row, bar) for line, row, bar in rows if not _is_eval(row) and SUMMARY_KEY not in row]
    by_bar = total is not None and all(bar and bar[1] == total for _, _, bar in training)
    by_swift = not by_bar and training and all(_swift_step(row) is not None for _, row, _ in training)
    if by_bar:
        raw.notes.append(f"steps read from the training progress bar's counter (n/{total}) drawn with each row")
    elif by_swift:
        raw.notes.append(f"steps read from each row's {SWIFT_STEP}")
    elif logging_steps:
        raw.notes.append(f"steps are the row's position times logging_steps = {logging_steps} (the console rows "
                         "carry no step)")
    else:
        raw.notes.append(f"the console rows carry no step and no progress bar counter precedes them: rows are "
                         f"numbered 1..{len(training)} in file order (each row is one logging interval)")
    position, step = 0, 0
    for line, row, bar in rows:
        where = f"{path}:{line}"
        if SUMMARY_KEY in row:
            raw.summary.update(row)
            continue
        values = {k: v for k, v in row.items() if k != SWIFT_STEP}
        if _is_eval(row):
            raw.records.append(Record(step if position else 0, values, where, "eval"))
            continue
        position += 1
        if by_bar:
            step = bar[0]
        elif by_swift:
            step = _swift_step(row)
        else:
            step = position * (logging_steps or 1)
        raw.records.append(Record(step, values, where, "train"))
    if by_bar and total:
        raw.max_steps = total


def read_console(path: Path, logging_steps: int | None = None) -> RawLog:
    text = read_text(path, "console log")
    rows = printed_rows(text)
    if not rows:
        raise LogError(f"{path}: no logged rows ({{'loss': ..., 'epoch': ...}} dicts printed by the Trainer) in "
                       "this console output; pass the trainer's own log file, or --format-in another format")
    raw = RawLog("trl-console", path, trainer="trl", null_is_nan=True, restarts=False, run_name=path.stem)
    assign_steps(rows, path, raw, logging_steps)
    return raw
