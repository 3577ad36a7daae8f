"""FlatlineCallback's arguments, checked when the callback is constructed, before TRL builds anything and before
anything is written: a bad one is a one-line CallbackArgumentError naming the argument and what to pass instead.
Numbers are declared as the config's are (flatline.trainer.config.ranged) and checked by the same validator."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from flatline.common.errors import ConfigError
from flatline.common.record import PROBE_LEVELS
from flatline.trainer.config import check_ranged, check_text, ranged, shown

STOP_ON = (None, "fail")
WHERE = "FlatlineCallback argument"


class CallbackArgumentError(ConfigError, ValueError):
    """A FlatlineCallback argument it cannot work with (a ValueError, as Python code expects of a bad argument)."""


@dataclass(frozen=True)
class CallbackArgs:
    """What FlatlineCallback was given; constructing one checks every field."""

    run_dir: Path
    probes: str = "cheap"
    judge_every: int = ranged(10, 1, 1_000_000, "optimizer steps between live judgements of the history so far")
    stop_on: str | None = None
    log_book: str = ""
    log: Callable = print

    def __post_init__(self):
        try:
            check_ranged(self, WHERE)
            check_path("run_dir", self.run_dir, "a new directory such as 'runs/my-run'")
            if self.log_book != "":
                check_path("log_book", self.log_book, "a markdown file such as 'reports/LOG.md', or '' for the default")
        except ConfigError as exc:
            raise CallbackArgumentError(str(exc)) from None
        if self.probes not in PROBE_LEVELS:
            refuse("probes", self.probes, f"a probe level: one of {', '.join(map(repr, PROBE_LEVELS))}")
        if self.stop_on not in STOP_ON:
            refuse("stop_on", self.stop_on, "None (only report) or 'fail' (stop on a structural fault)")
        if not callable(self.log):
            refuse("log", self.log, "a function taking one line, such as print or logging.info, or lambda line: None")


def refuse(name: str, value, fix: str) -> None:
    raise CallbackArgumentError(f"{WHERE} '{name}': got {shown(value)}; pass {fix}")


def check_path(name: str, value, fix: str) -> None:
    """A path that names a file or folder to create: a str or Path of printable text, with a last component, whose
    nearest existing parent is a folder."""
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
        refuse(name, value, fix)
    text = os.fspath(value)
    if not isinstance(text, str) or Path(text).name in ("", ".", ".."):
        refuse(name, value, fix)
    check_text(name, text, WHERE)
    parent = Path(text).absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        refuse(name, value, f"{fix} ({parent} is not a folder)")
