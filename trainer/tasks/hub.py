"""Where task rows come from: a local JSONL file or a Hugging Face hub spec.

A hub spec is `[hf:]owner/name[,subset][,split[start:stop]]`, e.g. `hf:openai/gsm8k,main,test[:256]`. The
subset is passed to `datasets.load_dataset` as the config name; the slice is taken as HF writes it (rows
start..stop-1 of the split). `datasets` is imported only when a spec is loaded. Leaves out: percent slices,
negative indices, streaming, revisions.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from flatline.common.errors import DataError
from flatline.trainer.tasks.base import read_jsonl

HUB_PREFIX = "hf:"
DEFAULT_SPLIT = "train"
LOCAL_SUFFIXES = (".jsonl", ".json")
"""A name ending like this is a file path (a missing file should say so), never a hub repo."""
SPEC_FORMAT = "[hf:]owner/name[,subset][,split[start:stop]], e.g. hf:openai/gsm8k,main,test[:256]"

_SPEC = re.compile(
    r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)"
    r"(?:,(?P<subset>[\w.-]*))?"
    r"(?:,(?P<split>[A-Za-z_][\w.-]*)(?:\[(?P<start>\d*):(?P<stop>\d*)\])?)?"
)


@dataclass(frozen=True)
class HubSpec:
    """A parsed hub spec; `text` is the spec as written (error messages quote it)."""

    text: str
    repo: str
    subset: str | None = None
    split: str = DEFAULT_SPLIT
    start: int | None = None
    stop: int | None = None


def parse_hub_spec(text: str) -> HubSpec:
    """Parse `[hf:]owner/name[,subset][,split[start:stop]]`; anything else is a DataError showing the format."""
    body = text.strip().removeprefix(HUB_PREFIX)
    match = _SPEC.fullmatch(body)
    if match is None:
        raise DataError(f"hub spec {text!r} is not valid: expected {SPEC_FORMAT}")
    start = int(match["start"]) if match["start"] else None
    stop = int(match["stop"]) if match["stop"] else None
    if start is not None and stop is not None and stop <= start:
        raise DataError(f"hub spec {text!r}: slice [{start}:{stop}] selects no rows")
    return HubSpec(text=text, repo=match["repo"], subset=match["subset"] or None,
                   split=match["split"] or DEFAULT_SPLIT, start=start, stop=stop)


def is_hub_spec(text: str) -> bool:
    """True for `hf:...`, or for a string that is not an existing path, has no file suffix and reads as a spec."""
    if text.startswith(HUB_PREFIX):
        return True
    if not text or Path(text).exists() or text.lower().endswith(LOCAL_SUFFIXES):
        return False
    return _SPEC.fullmatch(text) is not None


def load_hub_rows(spec: HubSpec, config_name: str | None = None) -> list[tuple[int, dict]]:
    """(row index in the split, row) for the spec's slice; a missing package or any load failure is a DataError."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"{spec.text}: loading from the Hugging Face hub needs the datasets package: pip install datasets") from None
    start = spec.start or 0
    try:
        dataset = datasets.load_dataset(spec.repo, config_name, split=spec.split)
        rows = list(islice(dataset, start, spec.stop))
    except Exception as exc:  # offline, not found, bad config or split: all reach the user as one line
        reason = " ".join(str(exc).split())
        raise DataError(f"{spec.text}: could not load from the Hugging Face hub ({type(exc).__name__}: {reason})") from None
    for index, row in enumerate(rows, start=start):
        if not isinstance(row, dict):
            raise DataError(f"{spec.text} row {index}: expected a record, got {type(row).__name__}")
    return list(enumerate(rows, start=start))


def load_records(source: str) -> list[tuple[str, dict]]:
    """(where, record) pairs from a JSONL path or a hub spec; `where` is "file:line" or "spec row N" for messages."""
    if is_hub_spec(source):
        spec = parse_hub_spec(source)
        return [(f"{spec.text} row {index}", row) for index, row in load_hub_rows(spec, spec.subset)]
    return [(f"{source}:{number}", record) for number, record in read_jsonl(source)]
