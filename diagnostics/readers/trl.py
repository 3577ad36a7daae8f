"""TRL's (transformers') trainer_state.json: `log_history`, a list of the rows the Trainer logged.

Training rows and eval rows (keys with an `eval_` prefix) share step numbers; the last row, holding `train_runtime`,
is the end-of-training summary. Rows are means over `logging_steps` steps. transformers writes NaN and inf as bare
NaN/Infinity tokens; TRL writes null for a metric whose every value was NaN (read as NaN).

A TRL output directory holds trainer_state.json only when the script called `trainer.save_state()`; otherwise each
`checkpoint-N/` holds one whose log_history ends at step N (detect.py picks the highest N). The GRPOConfig itself is
only in `training_args.bin`, a pickle: flatline never loads it (unpickling runs code), it only says it is there.
"""
from __future__ import annotations

import json
from pathlib import Path

from flatline.diagnostics.readers.base import LogError, RawLog, Record, read_text

def parse_json(path: Path, what: str):
    """The file's JSON value, or a one-line error naming the line and column of the damage."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        truncated = not text.rstrip().endswith("}")  # transformers writes one object, closed at the end
        hint = ("it ends early: a truncated or half-written file (the run was killed while saving?)" if truncated
                else "the file is damaged")
        raise LogError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg}); {hint}; use a checkpoint's "
                       "copy (checkpoint-N/trainer_state.json) or wait for the next save") from None
    except (ValueError, RecursionError) as exc:
        raise LogError(f"{path}: not usable JSON ({str(exc).split(';')[0] or type(exc).__name__})") from None


def read_trl(path: Path) -> RawLog:
    state = parse_json(path, "trainer_state.json")
    if not isinstance(state, dict):
        raise LogError(f"{path}: holds a JSON {type(state).__name__}, not a trainer state (an object with a "
                       "log_history list); pass the trainer_state.json written by transformers' Trainer")
    history = state.get("log_history")
    if history is None:
        raise LogError(f"{path}: has no log_history; pass the trainer_state.json written by transformers' Trainer")
    if not isinstance(history, list):
        raise LogError(f"{path}: log_history is a {type(history).__name__}, not a list of logged rows; the file was "
                       "not written by transformers' Trainer or was edited")
    raw = RawLog("trl", path, trainer="trl", null_is_nan=True)
    for index, entry in enumerate(history):
        where = f"{path}: log_history[{index}]"
        if not isinstance(entry, dict):
            raw.dropped.append((where, f"a {type(entry).__name__}, not an object"))
            continue
        if "train_runtime" in entry:
            raw.summary.update(entry)
            continue
        origin = "eval" if any(str(k).startswith("eval_") for k in entry) else "train"
        raw.records.append(Record(entry.get("step"), {k: v for k, v in entry.items() if k != "step"}, where, origin))
    if isinstance(state.get("max_steps"), (int, float)) and state["max_steps"] > 0:
        raw.max_steps = state["max_steps"]
    if isinstance(state.get("global_step"), (int, float)) and not isinstance(state["global_step"], bool):
        raw.step_reached = state["global_step"]
    run_dir = path.parent.parent if path.parent.name.startswith("checkpoint-") else path.parent
    raw.run_name = run_dir.name or path.stem
    return raw
