"""One policy for listeners and probes that raise: the one that raised is disabled for the rest of the run with one
warning naming it, and training goes on unchanged. Used by the trainer for its listeners and by a probe set for
its probes."""
from __future__ import annotations

import warnings
from typing import Callable, Iterable, Iterator


def describe(member) -> str:
    """A listener's name for the warning: its `name` or `family` attribute, else its class name."""
    for attribute in ("name", "family"):
        value = getattr(member, attribute, None)
        if isinstance(value, str) and value:
            return value
    return getattr(member, "__name__", type(member).__name__)


def warn_disabled(kind: str, name: str, exc: Exception) -> None:
    warnings.warn(f"{kind} {name} raised {type(exc).__name__}: {exc}; it is disabled for the rest of the run")


def guarded_calls(members: list, hook: str, *args, kind: str = "listener",
                  chosen: Callable[[object], bool] | None = None) -> Iterator[tuple[object, dict]]:
    """Call `hook(*args)` on each member that has it (and that `chosen` accepts); yield (member, its numbers).

    A member that raises is removed from `members` with one warning; the others still run."""
    for member in list(members):
        method = getattr(member, hook, None)
        if method is None or (chosen is not None and not chosen(member)):
            continue
        try:
            values = method(*args) or {}
        except Exception as exc:  # a listener must never stop or change training
            warn_disabled(kind, describe(member), exc)
            members.remove(member)
            continue
        yield member, values


def merged_calls(members: list, hook: str, *args, kind: str = "listener") -> dict:
    """The numbers of every member's `hook(*args)`, merged in order (see guarded_calls)."""
    merged: dict = {}
    for _, values in guarded_calls(members, hook, *args, kind=kind):
        merged.update(values)
    return merged


def wants_pre_step_weights(members: Iterable) -> bool:
    return any(getattr(member, "wants_pre_step_weights", False) for member in members)
