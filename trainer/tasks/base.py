"""What every task provides: examples (chat prompt + validated row + a known-good answer) and a scorer.

Also the small helpers the task modules share: reading JSONL rows, checking fields with messages that name
file, line and field, resolving reward weights, and splitting rows into train and held-out eval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from flatline.common import jsonl
from flatline.common.errors import ConfigError, DataError

SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Example:
    """One prompt of a task."""

    id: str
    messages: list[dict]
    """Chat messages sent to the model, e.g. [{"role": "user", "content": "What is 2 + 3?"}]."""
    row: dict = field(default_factory=dict)
    """The validated source record (GSM8K: question/answer; MuSiQue: the full schema)."""
    reference: str = ""
    """A completion a perfect model would write; scoring it must give the maximum reward (reward self-check)."""
    reference_ids: tuple[int, ...] = ()
    """Token ids of a perfect completion, for tasks scored on ids rather than text (the bandit); () otherwise."""


class Task:
    """Base class: subclasses set `name` and `components` and implement `score`."""

    name: str = ""
    components: tuple[str, ...] = ()

    def __init__(self, train: list[Example], eval: list[Example], weights: dict[str, float]):
        self.splits = {"train": train, "eval": eval}
        self.weights = weights

    def examples(self, split: str) -> list[Example]:
        """The rows of split "train" or "eval" (disjoint)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.splits[split]

    def score(self, completion: str, example: Example, completion_ids: list[int]) -> dict[str, float | None]:
        """One value per component for one completion (None when it cannot be scored)."""
        raise NotImplementedError

    def total(self, components: dict[str, float | None]) -> float:
        """Weighted sum of the components; None counts as 0."""
        return float(sum(self.weights.get(k, 0.0) * (v or 0.0) for k, v in components.items()))


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, record) from a JSONL file; a line that is not a JSON object is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist: set `data` to an existing JSONL file")
    yield from jsonl.read_jsonl(path, strict=True, error=DataError).objects


def require_field(record: dict, name: str, kind: type | tuple[type, ...], where: str, label: str | None = None):
    """Return record[name] if present and of the right type, else raise a DataError naming file, line and field.

    `label` is the field as the message names it, for nested fields (e.g. "paragraphs[3].title"); default `name`.
    """
    label = label or name
    if name not in record:
        raise DataError(f"{where}: missing field '{label}'")
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        expected = " or ".join(_type_name(k) for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise DataError(f"{where}: field '{label}' must be {expected}, got {_type_name(type(value))}")
    return value


def require_text(record: dict, name: str, where: str, label: str | None = None) -> str:
    """Like require_field for a string that must not be empty or only whitespace."""
    value = require_field(record, name, str, where, label)
    if not value.strip():
        raise DataError(f"{where}: field '{label or name}' must not be empty")
    return value


def _type_name(kind: type) -> str:
    return "null" if kind is type(None) else kind.__name__


def resolve_weights(task: str, defaults: dict[str, float], overrides: dict[str, float] | None) -> dict[str, float]:
    """The task's default weights updated with the config's `reward_weights` (components not named keep their default).

    An unknown component, a non-number, or a negative or non-finite weight is a ConfigError: every component
    scores "higher is better", so a negative weight would reward the wrong behaviour.
    """
    weights = dict(defaults)
    valid = ", ".join(defaults)
    for name, value in (overrides or {}).items():
        if name not in defaults:
            raise ConfigError(f"reward_weights: unknown component '{name}' for task {task}; valid components: {valid}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"reward_weights.{name}: must be a finite number >= 0, got {value!r}")
        weights[name] = float(value)
    return weights


def hold_out(rows: list, eval_rows: list | None, eval_size: int, train_size: int, source: str) -> tuple[list, list]:
    """(train, eval) rows. Eval comes from `eval_rows` when given (first eval_size of them, 0 = all), else the
    LAST eval_size rows of `rows` are held out; train is the rest, cut to train_size when > 0."""
    if eval_rows is not None:
        train, held = rows, eval_rows[:eval_size] if eval_size > 0 else eval_rows
    else:
        if eval_size >= len(rows) and eval_size > 0:
            raise DataError(f"{source}: eval_size {eval_size} holds out all {len(rows)} rows; lower eval_size or set eval_data")
        cut = len(rows) - eval_size
        train, held = rows[:cut], rows[cut:]
    if not train:
        raise DataError(f"{source}: no training rows")
    return (train[:train_size] if train_size > 0 else train), held
