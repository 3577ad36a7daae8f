"""verl's file logger: `{"step": N, "data": {...}}` per line (verl/utils/tracking.py `FileLogger`, written to
`$VERL_FILE_LOGGER_ROOT/<project>/<experiment>.jsonl`). `data` is flat with "/" inside its keys
(`actor/grad_norm`); a nested dict, should a version write one, is flattened the same way.

verl 0.7.0 writes NaN as a bare NaN token; 0.7.1 and later write NaN and inf as null (orjson), so null reads as NaN.
Step 0 holds only the validation before training (`val_before_train`); validation at `test_freq` is merged into
that step's line. Both versions truncate the file when a run starts: a resumed run's earlier steps are gone.
"""
from __future__ import annotations

from pathlib import Path

from flatline.diagnostics.readers.base import LogError, RawLog, Record, jsonl_objects


def flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "/"))
        else:
            out[name] = value
    return out


def is_verl_line(obj) -> bool:
    return isinstance(obj, dict) and set(obj) == {"step", "data"} and isinstance(obj["data"], dict)


def read_verl(path: Path) -> RawLog:
    raw = RawLog("verl", path, trainer="verl", null_is_nan=True, run_name=path.stem)
    objects, raw.dropped = jsonl_objects(path)
    for line, obj in objects:
        where = f"{path}:{line}"
        if not is_verl_line(obj):
            raw.dropped.append((where, 'not a verl file-logger line ({"step": N, "data": {...}})'))
            continue
        raw.records.append(Record(obj["step"], flatten(obj["data"]), where))
    if objects and not raw.records:
        raise LogError(f"{path}:{objects[0][0]}: not a verl file-logger line ({{\"step\": N, \"data\": {{...}}}}); "
                       "pass --format-in auto to let flatline tell the format")
    nulls = sum(value is None for record in raw.records for value in record.values.values())
    if nulls:
        raw.notes.append(f"{nulls} null value(s) read as NaN: verl writes NaN and inf as null from 0.7.1 on")
    if path.parent.name:
        raw.run_name = f"{path.parent.name}/{path.stem}"  # <project>/<experiment>
    return raw
