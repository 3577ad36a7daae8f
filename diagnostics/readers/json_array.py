"""A bare JSON array of logged rows: `json.dump(trainer.state.log_history, f)` or any list of metric dicts.
Rows are stepped as plain JSON Lines rows are (jsonl.records_from_rows); HF's end-of-training row (`train_runtime`,
`train_loss`) is the summary, not a step, as in trainer_state.json.

    raw = read_json_array(Path("log_history.json"))
"""
from __future__ import annotations

from pathlib import Path

from flatline.diagnostics.readers.base import LogError, RawLog
from flatline.diagnostics.readers.jsonl import records_from_rows
from flatline.diagnostics.readers.trl import parse_json

SUMMARY_KEY = "train_runtime"


def read_json_array(path: Path) -> RawLog:
    value = parse_json(path, "JSON array of log rows")
    if not isinstance(value, list):
        raise LogError(f"{path}: holds a JSON {type(value).__name__}, not an array of log rows; pass "
                       "--format-in auto to let flatline tell the format")
    raw = RawLog("json-array", path, null_is_nan=True, run_name=path.stem)
    rows = []
    for index, entry in enumerate(value):
        where = f"{path}: [{index}]"
        if not isinstance(entry, dict):
            raw.dropped.append((where, f"a {type(entry).__name__}, not an object"))
        elif SUMMARY_KEY in entry:
            raw.summary.update(entry)
        else:
            rows.append((where, entry))
    records_from_rows(rows, raw)
    return raw
