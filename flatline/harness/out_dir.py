"""Where `--out` may write, checked before any work: a mistaken path is a one-line error (exit 2), never an
internal error after minutes of training, and never a file of the user's overwritten.

    check_out_dir("--out", args.out, must_be_empty=True)    # diagnose: a new or empty folder
    check_out_dir("--out", args.out)                         # train: a new run directory is made there (or PATH-2)
"""
from __future__ import annotations

import os
from pathlib import Path

from flatline.common.errors import FlatlineError

# Kernel pseudo-filesystems: nothing of a run can be written there, whatever the permissions say (root may pass
# os.access on them).
SYSTEM_FOLDERS = (Path("/proc"), Path("/sys"), Path("/dev"))
# Inside SYSTEM_FOLDERS, real writable filesystems.
WRITABLE_SYSTEM_FOLDERS = (Path("/dev/shm"),)
# Names of existing files listed in a refusal.
LISTED = 3


def out_dir_problem(path: str | Path, must_be_empty: bool = False) -> str:
    """Why `path` cannot be made (or, with must_be_empty, used) as an output folder; "" when it can."""
    target = Path(os.path.realpath(Path(path).expanduser()))
    if target == Path(target.anchor):
        return "is the root folder"
    inside = [folder for folder in SYSTEM_FOLDERS if target == folder or folder in target.parents]
    if inside and not any(target == ok or ok in target.parents for ok in WRITABLE_SYSTEM_FOLDERS):
        return f"is inside {inside[0]}, a system folder no run can be written to"
    existing = target
    while not existing.exists():
        existing = existing.parent
    if existing == target:
        if not target.is_dir():
            return "is an existing file, not a folder"
        if must_be_empty:
            names = sorted(entry.name for entry in os.scandir(target))
            if names:
                shown = ", ".join(names[:LISTED]) + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")
                return f"already holds files ({shown}), which would be overwritten"
        return "" if os.access(target, os.W_OK | os.X_OK) else "is a folder you cannot write to"
    if not existing.is_dir():
        return f"is under {existing}, which is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot be created: {existing} is a folder you cannot write to"
    return ""


def check_out_dir(flag: str, path: str | Path | None, must_be_empty: bool = False) -> None:
    """FlatlineError (`--out DIR: why; the fix`) when `path` cannot serve as the output folder; None passes."""
    if path is None:
        return
    problem = out_dir_problem(path, must_be_empty)
    if problem:
        fix = "choose a new folder" + (" (or an empty one)" if must_be_empty else "") + ", e.g. runs/NAME"
        raise FlatlineError(f"{flag} {path}: {problem}; {fix}")
