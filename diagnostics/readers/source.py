"""What the user named, made into a file the readers can read as often as they need: a regular file or directory
as it is; standard input (`-`), a pipe (`/dev/stdin`, `<(zcat m.jsonl.gz)`), a FIFO or a device read ONCE into
memory, at most MAX_LOG_BYTES, and kept in a private temporary directory under its own name; a `.gz` file
decompressed the same way. Nothing the user named is ever written to. Text logs above MAX_LOG_BYTES are refused
with the reason (reading one takes several times its size in memory).

    with opened("-") as (path, shown):     # path: a readable file or directory; shown: what messages call it
        ...
"""
from __future__ import annotations

import gzip
import os
import stat
import sys
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path

from flatline.diagnostics.readers.base import LogError

# The largest text log read (bytes). Parsing holds the bytes, the decoded text and the rows at once: a 512 MiB log
# needs a few GiB. Binary formats (.wandb, TensorBoard events) are read by their own libraries, record by record.
MAX_LOG_BYTES = 512 * 1024 * 1024
CHUNK = 1024 * 1024
STDIN = "-"


def _size_text(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def too_large(path: Path, size: int) -> LogError:
    return LogError(f"{path}: is {_size_text(size)}, above the {_size_text(MAX_LOG_BYTES)} flatline reads from a text "
                    "log; pass a trimmed copy (for JSON Lines: tail -n 200000 FILE > recent.jsonl), or the run's "
                    "W&B or TensorBoard log")


def _read_bounded(stream, shown: str) -> bytes:
    chunks, total = [], 0
    while True:
        try:
            chunk = stream.read(CHUNK)
        except (OSError, EOFError, zlib.error) as exc:
            raise LogError(f"{shown}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > MAX_LOG_BYTES:
            raise LogError(f"{shown}: holds more than {_size_text(MAX_LOG_BYTES)}, more than flatline reads from a "
                           "text log; pass a trimmed copy (for JSON Lines: tail -n 200000)")
        if not chunks and b"\x00" in chunk[:4096]:
            raise LogError(f"{shown}: is a binary stream, not a log flatline reads; pass the run's metrics log")
        chunks.append(chunk)


def _kind(path: Path) -> str:
    """'dir', 'file', 'stream' (anything else that can be read: a pipe, a FIFO, a device) or 'absent'."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "absent"
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else "stream"


@contextmanager
def opened(argument):
    """(a path the readers can read, the name messages give it); temporary copies are removed on exit."""
    text = str(argument)
    if text == STDIN:
        data = _read_bounded(sys.stdin.buffer, "standard input")
        with _spooled(data, "stdin") as path:
            yield path, "standard input"
        return
    path = Path(argument)
    kind = _kind(path)
    if kind == "absent":
        yield path, text
        return
    if kind == "stream":
        try:
            with open(path, "rb") as handle:
                data = _read_bounded(handle, text)
        except OSError as exc:
            raise LogError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        with _spooled(data, path.name if path.suffix else "stream") as copy:
            yield copy, text
        return
    if kind == "file" and path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as handle:
                data = _read_bounded(handle, text)
        except (OSError, gzip.BadGzipFile) as exc:
            raise LogError(f"{path}: not a readable gzip file ({exc}); pass the log itself or a whole .gz copy") \
                from None
        with _spooled(data, path.stem) as copy:
            yield copy, text
        return
    yield path, text


@contextmanager
def _spooled(data: bytes, name: str):
    with tempfile.TemporaryDirectory(prefix="flatline-input-") as directory:
        copy = Path(directory) / (Path(name).name or "input")
        copy.write_bytes(data)
        yield copy
