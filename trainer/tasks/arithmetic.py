"""Arithmetic: generated "What is a + b?" / "What is a - b?" problems, the easy control task.

Problems are written as GSM8K records ({"question", "answer": "12 + 7 = 19\\n#### 19"}) and scored by
gsm8k's scorer (numeric exact match, component "correct"). Operands run 0..arithmetic_max_operand; a
subtraction has a >= b so answers are never negative. All distinct problems are shuffled with `seed`; eval
takes the first `eval_size`, train the next `train_size` (0 = all the rest), so the splits never share a
question.
"""
from __future__ import annotations

import random

from flatline.common.errors import ConfigError
from flatline.trainer.tasks import gsm8k
from flatline.trainer.tasks.base import resolve_weights

INSTRUCTION = "Answer with just the number."
DEFAULT_MAX_OPERAND = 20
OPERATORS = ("+", "-")


def make_row(a: int, op: str, b: int) -> dict:
    """One problem as a GSM8K record."""
    result = a + b if op == "+" else a - b
    return {"question": f"What is {a} {op} {b}?", "answer": f"{a} {op} {b} = {result}\n{gsm8k.ANSWER_MARK} {result}"}


def all_problems(max_operand: int) -> list[dict]:
    """Every distinct problem, in a fixed order: all sums a + b, then all differences a - b with a >= b."""
    sums = [make_row(a, "+", b) for a in range(max_operand + 1) for b in range(max_operand + 1)]
    differences = [make_row(a, "-", b) for a in range(max_operand + 1) for b in range(a + 1)]
    return sums + differences


class ArithmeticTask(gsm8k.GSM8KTask):
    """GSM8K's scorer on generated problems."""

    name = "arithmetic"


def from_config(config) -> ArithmeticTask:
    """Generate the problems for `seed`, `train_size`, `eval_size` and `arithmetic_max_operand`."""
    if config.data or config.eval_data:
        raise ConfigError("data: task arithmetic generates its own problems; leave data and eval_data empty")
    if config.arithmetic_max_operand < 1:
        raise ConfigError(f"arithmetic_max_operand: must be >= 1, got {config.arithmetic_max_operand}")
    weights = resolve_weights("arithmetic", gsm8k.DEFAULT_WEIGHTS, config.reward_weights)
    problems = all_problems(config.arithmetic_max_operand)
    random.Random(config.seed).shuffle(problems)
    held, rest = problems[:config.eval_size], problems[config.eval_size:]
    train = rest[:config.train_size] if config.train_size > 0 else rest
    if not train or len(train) < config.train_size:
        raise ConfigError(
            f"train_size: arithmetic_max_operand={config.arithmetic_max_operand} gives {len(problems)} distinct problems, "
            f"fewer than train_size + eval_size = {config.train_size + config.eval_size}; raise arithmetic_max_operand")
    return ArithmeticTask(
        train=[gsm8k.make_example(row, f"arithmetic-train-{i}", INSTRUCTION) for i, row in enumerate(train)],
        eval=[gsm8k.make_example(row, f"arithmetic-eval-{i}", INSTRUCTION) for i, row in enumerate(held)],
        weights=weights,
    )
