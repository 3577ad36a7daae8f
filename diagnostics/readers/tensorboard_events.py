"""TensorBoard event files, read with tensorboard's own EventAccumulator (the optional extra `tensorboard`; no
TensorFlow needed). One run is one directory; its `events.out.tfevents.*` files are read in name order.

Every point is kept (size_guidance 0: the default keeps a 10 000-point sample per tag). Values are float32, so 0.1
reads as 0.10000000149011612. HF's TensorBoardCallback (TRL) and OpenRLHF prefix `train/` and `eval/`; verl writes its
own names. HF also writes the TrainingArguments as JSON text under `args/text_summary`: that is the run's config.
When a resumed run writes a step lower than one already seen, EventAccumulator drops that tag's later points.
"""
from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path

from flatline.diagnostics.readers.base import LogError, RawLog, Record

# Text tags that hold a run's training arguments as JSON (transformers TensorBoardCallback).
CONFIG_TAGS = ("args/text_summary", "args")
# 0 = keep every event of a tag (tensorboard/backend/event_processing/event_accumulator.py size_guidance).
KEEP_ALL = 0


def _text(event) -> str | None:
    values = event.tensor_proto.string_val
    return values[0].decode("utf-8", "replace") if values else None


def _scalar(event) -> float | None:
    from tensorboard.util import tensor_util

    array = tensor_util.make_ndarray(event.tensor_proto)
    return float(array.item()) if array.size == 1 and array.dtype.kind in "fiub" else None


def read_tensorboard(event_dir: Path) -> RawLog:
    if find_spec("tensorboard") is None:
        raise LogError(f"{event_dir}: reading TensorBoard event files needs the tensorboard package: "
                       "pip install 'flatline[tensorboard]' (or pip install tensorboard)")
    from tensorboard.backend.event_processing import event_accumulator

    guidance = {event_accumulator.SCALARS: KEEP_ALL, event_accumulator.TENSORS: KEEP_ALL}
    accumulator = event_accumulator.EventAccumulator(str(event_dir), size_guidance=guidance)
    try:
        accumulator.Reload()
    except Exception as exc:  # tensorboard raises its own errors for unreadable files
        raise LogError(f"{event_dir}: tensorboard could not read these event files ({type(exc).__name__}: {exc})") \
            from None
    tags = accumulator.Tags()
    rows: dict[int, dict] = {}
    for tag in tags.get("scalars", []):
        for event in accumulator.Scalars(tag):
            rows.setdefault(event.step, {})[tag] = event.value
    raw = RawLog("tensorboard", event_dir, run_name=event_dir.name)
    for tag in tags.get("tensors", []):
        events = accumulator.Tensors(tag)
        if tag in CONFIG_TAGS and events:
            try:
                config = json.loads(_text(events[-1]) or "")
            except ValueError:
                config = None
            if isinstance(config, dict):
                raw.config, raw.config_source = config, f"{event_dir} (TensorBoard text {tag})"
            continue
        for event in events:  # scalars written as tensors (TF2 tf.summary.scalar)
            value = _scalar(event)
            if value is not None:
                rows.setdefault(event.step, {})[tag] = value
    files = sorted(p.name for p in event_dir.glob("events.out.tfevents.*"))
    where = f"{event_dir}/{files[0]}" if len(files) == 1 else f"{event_dir} ({len(files)} event files)"
    raw.records = [Record(step, values, f"{where}: step {step}") for step, values in sorted(rows.items())]
    if len(files) > 1:
        raw.notes.append(f"{len(files)} event files in {event_dir.name} (a resumed run?): read together in name "
                         "order; where a later file restarts a tag at a lower step, its earlier points after that "
                         "step are replaced")
    return raw
