"""prime-rl's metrics.jsonl (src/prime_rl/monitors/file.py `FileMonitor`): `{"step", "time", ...flat metrics}` per
call, appended to `<output_dir>/metrics.jsonl` by BOTH the trainer (five rows per step: perf, optim, tensor stats,
time, disk) and the orchestrator (one row per step, plus eval rows), which runs ahead of the trainer.

Rows are merged by step. Both processes log `time/step` and `time/save_ckpt`: the orchestrator's are renamed
`orchestrator/time/...` so neither overwrites the other. The file is opened in append mode, so a restart logs its
steps again: the last occurrence is kept (rows.merge_by_step). prime-rl drops non-finite values before writing
(`sanitize`), so a key missing at a step can mean it was NaN or inf there; the reading says where that happens.
"""
from __future__ import annotations

from pathlib import Path

from flatline.diagnostics.readers.base import RawLog, Record, jsonl_objects

# Keys only the orchestrator logs (src/prime_rl/orchestrator/orchestrator.py); every other row is the trainer's.
ORCHESTRATOR_PREFIXES = ("train/", "eval/", "progress/", "off_policy/", "batch/")
# Keys both processes log under the same name.
SHARED_PREFIXES = ("time/",)


def origin_of(row: dict) -> str:
    return "orchestrator" if any(k.startswith(ORCHESTRATOR_PREFIXES) for k in row) else "trainer"


def read_prime_rl(path: Path) -> RawLog:
    raw = RawLog("prime-rl", path, trainer="prime-rl", restarts=True, drops_non_finite=True,
                 run_name=path.parent.name or path.stem)
    objects, raw.dropped = jsonl_objects(path)
    for line, row in objects:
        origin = origin_of(row)
        values = {}
        for key, value in row.items():
            if key in ("step", "time"):
                continue
            if origin == "orchestrator" and key.startswith(SHARED_PREFIXES):
                key = "orchestrator/" + key
            values[key] = value
        raw.records.append(Record(row.get("step"), values, f"{path}:{line}", origin))
    return raw
