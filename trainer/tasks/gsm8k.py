"""GSM8K: grade-school maths word problems, scored by numeric exact match of the final answer.

Rows are GSM8K records, {"question": str, "answer": "<worked solution>\\n#### <number>"}, from a local JSONL
file (`data`, e.g. data/gsm8k/train.jsonl) or a hub spec (`hf:openai/gsm8k,main,test[:256]`).
Eval rows come from `eval_data` when set, else the last `eval_size` rows of `data` are held out.

A completion's answer is the number after its last '####' (GSM8K's own format), else its last number
(lm-eval's "flexible" match); commas, '$' and a trailing '.' are dropped and numbers compare by value, so
"19.0" matches "19". The arithmetic task reuses this scorer. Leaves out: fractions, units, words for numbers.
"""
from __future__ import annotations

import math
import re

from flatline.common.errors import ConfigError, DataError
from flatline.trainer.tasks.base import (
    Example,
    Task,
    hold_out,
    require_field,
    require_text,
    resolve_weights,
)
from flatline.trainer.tasks.hub import load_records

ANSWER_MARK = "####"
INSTRUCTION = "Solve the problem step by step. Then write the final answer as a number on the last line after '####', e.g. '#### 42'."
DEFAULT_WEIGHTS = {"correct": 1.0}

# An optional minus and '$', then digits either grouped by thousands commas or plain, then optional decimals.
# Grouping only by 3 digits keeps "1,2,3" as three numbers rather than 123.
_NUMBER = re.compile(r"-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def parse_number(text: str) -> float | None:
    """The value of a number as GSM8K writes it ("1,234", "$5.00", "-3", "72."); None if it is not one."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _clean(number: str) -> str:
    return number.replace(",", "").replace("$", "").rstrip(".")


def extract_answer(text: str) -> str | None:
    """The number after the last '####', else the last number in the text (cleaned), else None."""
    _, mark, tail = text.rpartition(ANSWER_MARK)
    if mark:
        after_mark = _NUMBER.search(tail)
        if after_mark:
            return _clean(after_mark.group())
    numbers = _NUMBER.findall(text)
    return _clean(numbers[-1]) if numbers else None


def final_answer(answer: str) -> str:
    """The number after the last '####' of a GSM8K `answer` field (assumes a validated row)."""
    return answer.rpartition(ANSWER_MARK)[2].strip()


def is_correct(completion: str, answer: str) -> bool:
    """Whether the completion's extracted answer equals `answer` (a number string) by value."""
    predicted = extract_answer(completion)
    return predicted is not None and parse_number(predicted) == parse_number(answer)


def score_correct(completion: str, row: dict) -> dict[str, float]:
    """{"correct": 1.0 or 0.0} for a completion against a validated GSM8K row."""
    return {"correct": float(is_correct(completion, final_answer(row["answer"])))}


def validate_row(record: dict, where: str) -> dict:
    """The record, checked: `question` a non-empty string, `answer` a string ending in '#### <number>'."""
    require_text(record, "question", where)
    answer = require_field(record, "answer", str, where)
    _, mark, tail = answer.rpartition(ANSWER_MARK)
    if not mark or parse_number(tail) is None:
        raise DataError(f"{where}: field 'answer' must end with '#### <number>' (GSM8K format)")
    return record


def make_example(row: dict, example_id: str, instruction: str) -> Example:
    """A one-message chat prompt (question, blank line, instruction) whose reference is the row's answer."""
    content = f"{row['question']}\n\n{instruction}"
    return Example(id=example_id, messages=[{"role": "user", "content": content}], row=row, reference=row["answer"])


def load_rows(source: str) -> list[dict]:
    """Every row of a JSONL path or hub spec, validated (the first bad row raises)."""
    return [validate_row(record, where) for where, record in load_records(source)]


class GSM8KTask(Task):
    """Numeric exact match on the final answer; component "correct" (1.0 or 0.0)."""

    name = "gsm8k"
    components = tuple(DEFAULT_WEIGHTS)

    def score(self, completion: str, example: Example, completion_ids: list[int]) -> dict[str, float | None]:
        return score_correct(completion, example.row)


def from_config(config) -> GSM8KTask:
    """Load and validate `data` (and `eval_data`) now, so a bad row stops the run before a model loads."""
    if not config.data:
        raise ConfigError("data: task gsm8k needs a JSONL path (e.g. data/gsm8k/train.jsonl) "
                          "or a hub spec (e.g. hf:openai/gsm8k,main,train)")
    weights = resolve_weights("gsm8k", DEFAULT_WEIGHTS, config.reward_weights)
    rows = load_rows(config.data)
    eval_rows = load_rows(config.eval_data) if config.eval_data else None
    train, held = hold_out(rows, eval_rows, config.eval_size, config.train_size, config.data)
    return GSM8KTask(
        train=[make_example(row, f"gsm8k-train-{i}", INSTRUCTION) for i, row in enumerate(train)],
        eval=[make_example(row, f"gsm8k-eval-{i}", INSTRUCTION) for i, row in enumerate(held)],
        weights=weights,
    )
