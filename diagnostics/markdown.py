"""Markdown that text from a model, a config or a log cannot break: escaped table cells and fenced quotes."""
from __future__ import annotations

import re

# Characters with a meaning inside a line of CommonMark/GFM text or a table cell; each gets a backslash. Line-start
# constructs (#, -, +, 1.) cannot arise: escaped text never starts a line, its newlines become a visible mark.
_INLINE_SPECIAL = re.compile(r"([\\`*\[\]|<>~&]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def escape_inline(text) -> str:
    """One line of literal text for a table cell or a sentence: specials backslashed, newlines shown as ⏎."""
    text = _CONTROL.sub("", str(text)).replace("\r\n", "\n").replace("\r", "\n")
    return _INLINE_SPECIAL.sub(r"\\\1", text).replace("\n", " ⏎ ")


def fenced(text, info: str = "text") -> str:
    """`text` verbatim in a fenced code block whose fence is longer than any backtick run inside it, so the
    quoted text can neither close the block nor start markdown or HTML of its own."""
    text = _CONTROL.sub("", str(text)).replace("\r\n", "\n").replace("\r", "\n")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A GFM table; cells must already be escaped (or be trusted markdown such as a status word)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
