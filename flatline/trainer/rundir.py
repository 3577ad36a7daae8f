"""The run directory: created once, never overwritten; metrics and samples are appended a line at a time."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path


def create_run_dir(path: str | Path) -> Path:
    """Create `path`, or `path-2`, `path-3`, ... if it exists; mkdir is atomic, so two runs never share one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, suffix = path, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            suffix += 1
            candidate = path.with_name(f"{path.name}-{suffix}")


def _jsonable(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them visible as strings
    return value


class JsonlWriter:
    """Append one JSON object per line, flushed and fsynced so a crash loses at most the line being written."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._handle = self.path.open("a", encoding="utf-8")

    def write(self, record: dict) -> None:
        line = json.dumps({k: _jsonable(v) for k, v in record.items()}, ensure_ascii=False)
        self._handle.write(line + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def read_jsonl(path: str | Path) -> list[dict]:
    """Read back a metrics.jsonl or samples.jsonl (a torn last line from a crash is skipped)."""
    rows = []
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows
