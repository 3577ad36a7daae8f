"""Steps and values as numbers, and one row per step: the part of reading every format shares.

A step must be a finite number at or above 0; anything else (text, a bool, NaN, a number beyond float range, a
negative step) drops its row, with the place and the reason. Rows of the same step are merged (trainers write several
rows per step: prime-rl's trainer and orchestrator, W&B's profiling rows, an eval row beside a training row). In an
append-mode log a key seen twice for the same step and writer means the run restarted and logged the step again: the
later occurrence replaces the earlier one as a whole, and a note says so.
"""
from __future__ import annotations

import math

from flatline.diagnostics.readers.base import Record

# Strings trainers write for non-finite floats (flatline "nan"/"inf", W&B leet "NaN"/"Infinity", CSV "nan").
NON_FINITE = {"nan": math.nan, "+nan": math.nan, "-nan": math.nan, "inf": math.inf, "+inf": math.inf,
              "-inf": -math.inf, "infinity": math.inf, "+infinity": math.inf, "-infinity": -math.inf}
# Places listed in a note before "and N more".
SHOWN_PLACES = 5


def step_number(value) -> tuple[float | int | None, str]:
    """(the step as an int or float, "") or (None, why it is not a usable step)."""
    if value is None:
        return None, "no step"
    if isinstance(value, bool):
        return None, f"step is {value!r}, not a number"
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None, f"step is {value[:40]!r}, not a number"
    if isinstance(value, int):
        if value < 0:
            return None, f"step {value} is negative"
        if value.bit_length() > 1023:  # float(value) would overflow
            return None, "step is beyond float range"
        return value, ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None, f"step is {value}"
        if value < 0:
            return None, f"step {value:g} is negative"
        return (int(value) if value.is_integer() and abs(value) < 2**53 else value), ""
    return None, f"step is a {type(value).__name__}, not a number"


def number(value, null_is_nan: bool = False) -> float | None:
    """A metric value as a float (NaN and inf kept: they are findings), or None when it is not a number."""
    kind = type(value)
    if kind is float:
        return value
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            return None
    if kind is bool:
        return float(value)
    if value is None:
        return math.nan if null_is_nan else None
    if kind is str:
        text = value.strip().lower()
        if text in NON_FINITE:
            return NON_FINITE[text]
        try:
            return float(text)
        except ValueError:
            return None
    if hasattr(value, "item") and not isinstance(value, (list, dict)):  # numpy scalars from a Python caller
        return number(value.item(), null_is_nan)
    return None


def places(wheres: list[str], total: int | None = None) -> str:
    """'a.jsonl:3, a.jsonl:9 and 4 more' for a note."""
    total = len(wheres) if total is None else total
    shown = ", ".join(wheres[:SHOWN_PLACES])
    return shown + (f" and {total - SHOWN_PLACES} more" if total > SHOWN_PLACES else "")


def merge_by_step(records: list[Record], restarts: bool, meta: frozenset = frozenset(), watched=None
                  ) -> tuple[list[tuple[float, dict]], list[tuple[str, str]], list[str]]:
    """One (step, values) per step, sorted by step; plus the rows dropped (where, why) and notes.

    restarts: a key logged twice for one step by one writer starts that writer's row for the step afresh (the run
    restarted and logged it again); otherwise the later value of the key wins, and a note counts the rows where that
    happened to a `watched` key (the ones the judges read; None: every key). Keys in `meta` (step counters, epochs,
    timestamps) never count as a repeat.
    """
    buckets: dict[tuple, dict] = {}  # (step, origin) -> values
    steps: dict = {}  # step -> origins in first-seen order
    dropped, repeated, overwritten = [], [], 0
    for record in records:
        step, why = step_number(record.step)
        if step is None:
            dropped.append((record.where, why))
            continue
        key = (step, record.origin)
        bucket = buckets.get(key)
        if bucket is None:
            buckets[key] = record.values  # records are the reader's own: merged in place, not copied
            steps.setdefault(step, []).append(record.origin)
            continue
        collision = any(k in bucket and k not in meta for k in record.values)
        if collision and restarts:
            repeated.append(f"step {step} at {record.where}")
            bucket.clear()
        elif collision and any(k in bucket for k in record.values if watched is None or k in watched):
            overwritten += 1
        bucket.update(record.values)
    notes = []
    if repeated:
        notes.append(f"{len(repeated)} step(s) were logged again later, as after a restart ({places(repeated)}): "
                     "the last occurrence of each is kept")
    if overwritten:
        notes.append(f"{overwritten} row(s) logged a key again for a step that already had it: the later value is kept")
    merged = []
    for step in sorted(steps):
        origins = steps[step]
        values = buckets[(step, origins[0])]
        for origin in origins[1:]:
            values.update(buckets[(step, origin)])
        merged.append((step, values))
    return merged, dropped, notes
