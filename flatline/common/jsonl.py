"""JSON Lines: the one reader and the one writer of flatline (metrics.jsonl, samples.jsonl, task data, foreign logs).

    rows = read_jsonl("runs/x/metrics.jsonl")          # rows.objects: [(line number, dict)], rows.dropped
    writer = JsonlWriter("runs/x/metrics.jsonl"); writer.write({"step": 1, "reward": 0.5}); writer.close()
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from flatline.common.errors import FlatlineError


@dataclass
class JsonlRows:
    """What a JSONL file held: its JSON objects with their line numbers, and the lines that were not objects."""

    path: Path
    objects: list[tuple[int, dict]] = field(default_factory=list)
    dropped: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)

    @property
    def rows(self) -> list[dict]:
        return [row for _, row in self.objects]


def _problem(line: str) -> tuple[object | None, str]:
    """(the parsed JSON object, "") or (None, why the line is not one)."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg})"
    except ValueError as exc:  # an integer literal longer than Python's int limit (4300 digits)
        return None, f"not a usable JSON value ({str(exc).split(';')[0]})"
    except RecursionError:
        return None, "nested too deeply"
    if not isinstance(value, dict):
        return None, f"a JSON {type(value).__name__}, not an object"
    return value, ""


def read_jsonl(path: str | Path, *, strict: bool = False, error=FlatlineError) -> JsonlRows:
    """Every line of `path` that is a JSON object (blank lines skipped).

    strict: the first line that is not an object raises `error` naming the file and line; otherwise such lines are
    listed in `dropped` (a torn last line after a crash is one). A file that is not UTF-8 text raises `error`.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")  # -sig: a byte-order mark (PowerShell, Excel) is no part of row 1
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a UTF-8 text file (byte {exc.start} is {exc.object[exc.start:exc.start + 1]!r}); "
                    "pass a JSON Lines log (one JSON object per line)") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None
    out = JsonlRows(path)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        value, why = _problem(line)
        if value is not None:
            out.objects.append((number, value))
        elif strict:
            raise error(f"{path}:{number}: {why}; each line must be one JSON object")
        else:
            out.dropped.append((number, why))
    return out


def _jsonable(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them visible as strings
    return value


class JsonlWriter:
    """Append one JSON object per line, flushed and fsynced so a crash loses at most the line being written."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._handle = self.path.open("a", encoding="utf-8")

    def write(self, record: dict) -> None:
        line = json.dumps({k: _jsonable(v) for k, v in record.items()}, ensure_ascii=False)
        self._handle.write(line + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()
