"""Hermes-style tool calls: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` in a model's turn.

    turn = parse_turn(text)          # -> ParsedTurn(calls=[ToolCall("lookup", {"key": "apple"})], errors=[])
    turn.attempted                   # True when the text tried to call a tool (even if every attempt was malformed)

A turn with no `<tool_call>` at all is a final answer. Each malformed attempt is one error, named by its kind
(PARSE_ERRORS), so the failure rate of tool calls and its causes can be logged per step. Pure functions, no state.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

OPEN, CLOSE = "<tool_call>", "</tool_call>"
# Kinds of malformed tool call, in the order they are checked.
PARSE_ERRORS = ("unclosed", "bad_json", "not_object", "no_name", "bad_arguments")
_BLOCK = re.compile(re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE), re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict


@dataclass
class ParsedTurn:
    calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one PARSE_ERRORS kind per malformed attempt

    @property
    def attempted(self) -> bool:
        return bool(self.calls or self.errors)


def parse_call(body: str) -> ToolCall | str:
    """One tool call's JSON body -> a ToolCall, or the PARSE_ERRORS kind that makes it malformed."""
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, RecursionError):
        return "bad_json"
    if not isinstance(value, dict):
        return "not_object"
    name = value.get("name")
    if not isinstance(name, str) or not name.strip():
        return "no_name"
    arguments = value.get("arguments", {})
    if isinstance(arguments, str):  # some models (and OpenAI's wire format) send arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except (json.JSONDecodeError, RecursionError):
            return "bad_arguments"
    if not isinstance(arguments, dict):
        return "bad_arguments"
    return ToolCall(name.strip(), arguments)


def parse_turn(text: str) -> ParsedTurn:
    """Every `<tool_call>...</tool_call>` block of a turn, parsed; an opening tag never closed is one `unclosed`."""
    turn = ParsedTurn()
    for match in _BLOCK.finditer(text):
        parsed = parse_call(match.group(1).strip())
        (turn.errors if isinstance(parsed, str) else turn.calls).append(parsed)
    rest = _BLOCK.sub("", text)
    if OPEN in rest:
        turn.errors.append("unclosed")
    return turn


def format_call(name: str, arguments: dict) -> str:
    """The canonical text of one call (what a perfect model writes)."""
    return f"{OPEN}{json.dumps({'name': name, 'arguments': arguments})}{CLOSE}"
