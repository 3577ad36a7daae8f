"""Tool environments: an object with reset() and step(call) -> StepResult, and the step budget that limits them.

    budget = StepBudget(8)                          # one per rollout, or one object shared by a group's rollouts
    env = KeyValueEnv(store={"apple": 42}, budget=budget)
    env.reset()
    result = env.step(ToolCall("lookup", {"key": "apple"}))   # StepResult("42", reward=1.0, done=False, info={"ok": True})

A call the model got wrong (unknown tool, bad arguments, a missing key) is the model's failure: an error observation
and reward -1, the episode goes on. An environment that raises is an infrastructure failure (the runner ends the
episode as `tool_error`, never scored as the model's fault). An empty budget ends the episode as
`env_budget_exhausted`. Shared budgets are how a step limit meant per episode ends up split across parallel rollouts.
"""
from __future__ import annotations

import ast
import operator
from dataclasses import dataclass, field

from flatline.trainer.episodes.toolcall import ToolCall

# Per-call reward of the shipped environment: +1 for a call that ran, -1 for one the model got wrong (the shape of
# "+0.5 per valid tool call, -0.5 per error" in issue 16's data-science agent; the weight sets the scale).
CALL_OK, CALL_FAILED = 1.0, -1.0
# The calculator refuses numbers beyond this and expressions longer than this (no 9**9**9 hangs).
CALC_MAX_ABS, CALC_MAX_CHARS = 1e12, 200


@dataclass
class StepResult:
    observation: str
    reward: float = 0.0  # the per-call reward term
    done: bool = False
    info: dict = field(default_factory=dict)  # "ok": the call ran; "error": why not; "budget_exhausted": True


class StepBudget:
    """Environment steps left; one object per rollout, or one shared by several (then they compete for it)."""

    def __init__(self, limit: int):
        self.limit = limit  # 0: unlimited
        self.used = 0

    def take(self) -> bool:
        """Use one step; False when none is left."""
        if self.limit and self.used >= self.limit:
            return False
        self.used += 1
        return True


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.USub: operator.neg, ast.UAdd: operator.pos}


def calculate(expression: str) -> float:
    """+ - * / and parentheses over numbers; ValueError for anything else (no names, no calls, no powers)."""
    if len(expression) > CALC_MAX_CHARS:
        raise ValueError("expression too long")

    def value(node):
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            result = _OPS[type(node.op)](value(node.left), value(node.right))
        elif isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            result = _OPS[type(node.op)](value(node.operand))
        else:
            raise ValueError(f"unsupported expression element {type(node).__name__}")
        if abs(result) > CALC_MAX_ABS:
            raise ValueError("number too large")
        return result

    try:
        return value(ast.parse(expression, mode="eval"))
    except (SyntaxError, ZeroDivisionError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None


def show_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.6g}"


class KeyValueEnv:
    """Two tools over a small key-value store: lookup(key) and calculator(expression)."""

    TOOLS = {"lookup": ("key",), "calculator": ("expression",)}

    def __init__(self, store: dict[str, int], budget: StepBudget):
        self.store, self.budget = dict(store), budget
        self.calls = 0

    def reset(self) -> None:
        self.calls = 0  # the store is fixed per example; a shared budget is not reset by one of its rollouts

    def step(self, call: ToolCall) -> StepResult:
        if not self.budget.take():
            return StepResult("error: the environment's step budget is exhausted", 0.0, True,
                              {"ok": False, "error": "budget", "budget_exhausted": True})
        self.calls += 1
        if call.name not in self.TOOLS:
            return self._failed(f"unknown tool {call.name!r}; tools: {', '.join(self.TOOLS)}", "unknown_tool")
        (argument,) = self.TOOLS[call.name]
        if set(call.arguments) != {argument} or not isinstance(call.arguments[argument], (str, int, float)):
            return self._failed(f"{call.name} takes one argument {argument!r}", "bad_arguments")
        given = str(call.arguments[argument]).strip()
        if call.name == "lookup":
            if given not in self.store:
                return self._failed(f"no key {given!r}", "missing_key")
            return StepResult(str(self.store[given]), CALL_OK, False, {"ok": True})
        try:
            return StepResult(show_number(calculate(given)), CALL_OK, False, {"ok": True})
        except ValueError as exc:
            return self._failed(f"cannot evaluate {given!r}: {exc}", "bad_expression")

    @staticmethod
    def _failed(message: str, kind: str) -> StepResult:
        return StepResult(f"error: {message}", CALL_FAILED, False, {"ok": False, "error": kind})
