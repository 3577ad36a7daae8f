"""The run directory: created once, never overwritten; metrics and samples are appended a line at a time
(flatline.common.jsonl.JsonlWriter)."""
from __future__ import annotations

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
