"""MuSiQue: multi-hop question answering over given paragraphs, scored like SQuAD (EM and token F1).

Rows follow MuSiQue's record schema (validated field by field, see `validate_record`). They come from a local
JSONL file, a hub spec (`bdsaglam/musique,answerable,train[:256]`: the subset `answerable` keeps rows with
answerable == True, `full` or none keeps all), or, when `data` is empty, the offline generator in
musique_synthetic.py. Eval rows come from `eval_data`, else the last `eval_size` rows of `data`, else the
generator with its own seed stream.

The prompt lists the paragraphs as "Title: text" blocks, then the question and INSTRUCTION. Rewards: "em" and
"f1" (best over answer and aliases, after SQuAD normalisation) on the text after the last `Answer:` line (else
the last non-empty line), and "format" (an `Answer:` line with text is present). Leaves out: MuSiQue's
answerability prediction and support-paragraph metrics (unanswerable rows are still scored on `answer`).
"""
from __future__ import annotations

import re
import string
from collections import Counter

from flatline.common.errors import DataError
from flatline.trainer.tasks import musique_synthetic
from flatline.trainer.tasks.base import (
    Example,
    Task,
    hold_out,
    require_field,
    require_text,
    resolve_weights,
)
from flatline.trainer.tasks.hub import is_hub_spec, load_records, parse_hub_spec

INSTRUCTION = ("Answer the question using the paragraphs above. Think briefly if you need to, then end with a line "
               "of the form 'Answer: <short answer>'.")
DEFAULT_WEIGHTS = {"em": 0.4, "f1": 0.4, "format": 0.2}
"""Sum 1.0; format is a small shaping term so it cannot outweigh a correct answer."""
SUBSETS = ("answerable", "full")
DEFAULT_SYNTHETIC_TRAIN_SIZE = 256
"""Rows generated when train_size is 0 ("all" has no meaning for a generator)."""

# A line "Answer: ...", any case, also in markdown bold ("**Answer:** ...").
_ANSWER_LINE = re.compile(r"^[ \t]*\**[ \t]*answer[ \t]*:\**(.*)$", re.IGNORECASE | re.MULTILINE)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


# ---- schema ----

def _paragraph(item, where: str, path: str) -> int:
    if not isinstance(item, dict):
        raise DataError(f"{where}: field '{path}' must be an object, got {type(item).__name__}")
    idx = require_field(item, "idx", int, where, f"{path}.idx")
    require_field(item, "title", str, where, f"{path}.title")
    require_field(item, "paragraph_text", str, where, f"{path}.paragraph_text")
    require_field(item, "is_supporting", bool, where, f"{path}.is_supporting")
    return idx


def _hop(item, where: str, path: str, paragraph_ids: set[int]) -> None:
    if not isinstance(item, dict):
        raise DataError(f"{where}: field '{path}' must be an object, got {type(item).__name__}")
    require_field(item, "id", int, where, f"{path}.id")
    require_field(item, "question", str, where, f"{path}.question")
    require_field(item, "answer", str, where, f"{path}.answer")
    support = require_field(item, "paragraph_support_idx", (int, type(None)), where, f"{path}.paragraph_support_idx")
    if support is not None and support not in paragraph_ids:
        raise DataError(f"{where}: field '{path}.paragraph_support_idx' is {support}, which is no paragraph's idx")


def validate_record(record: dict, where: str) -> dict:
    """The record, checked against MuSiQue's schema; errors name `where` and the field path (paragraphs[3].title)."""
    require_field(record, "id", str, where)
    paragraphs = require_field(record, "paragraphs", list, where)
    if not paragraphs:
        raise DataError(f"{where}: field 'paragraphs' must not be empty")
    paragraph_ids: set[int] = set()
    for i, item in enumerate(paragraphs):
        idx = _paragraph(item, where, f"paragraphs[{i}]")
        if idx in paragraph_ids:
            raise DataError(f"{where}: field 'paragraphs[{i}].idx' repeats idx {idx}")
        paragraph_ids.add(idx)
    require_text(record, "question", where)
    hops = require_field(record, "question_decomposition", list, where)
    if not hops:
        raise DataError(f"{where}: field 'question_decomposition' must not be empty")
    for i, item in enumerate(hops):
        _hop(item, where, f"question_decomposition[{i}]", paragraph_ids)
    require_text(record, "answer", where)
    for i, alias in enumerate(require_field(record, "answer_aliases", list, where)):
        if not isinstance(alias, str):
            raise DataError(f"{where}: field 'answer_aliases[{i}]' must be str, got {type(alias).__name__}")
    require_field(record, "answerable", bool, where)
    return record


# ---- scoring ----

def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation, drop articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token F1 of two answers after normalisation (two empty answers count as a match)."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def extract_prediction(completion: str) -> tuple[str, bool]:
    """(predicted answer, whether an `Answer:` line was found): the text after the last `Answer:` line, else
    the last non-empty line."""
    lines = _ANSWER_LINE.findall(completion)
    if lines:
        return lines[-1].strip().strip("*").strip(), True
    non_empty = [line.strip() for line in completion.splitlines() if line.strip()]
    return (non_empty[-1] if non_empty else ""), False


def score_completion(completion: str, row: dict) -> dict[str, float]:
    """{"em", "f1", "format"} for one completion against a validated MuSiQue row."""
    prediction, has_line = extract_prediction(completion)
    golds = [row["answer"], *row["answer_aliases"]]
    return {
        "em": max(float(normalize_answer(prediction) == normalize_answer(gold)) for gold in golds),
        "f1": max(token_f1(prediction, gold) for gold in golds),
        "format": float(has_line and bool(prediction.strip())),
    }


# ---- prompt, loading, task ----

def format_prompt(row: dict) -> str:
    """The paragraphs as "Title: text" blocks, then the question, then INSTRUCTION."""
    blocks = [f"{p['title']}: {p['paragraph_text']}" for p in row["paragraphs"]]
    return "\n\n".join([*blocks, f"Question: {row['question']}", INSTRUCTION])


def make_example(row: dict) -> Example:
    """A one-message chat prompt; the reference is "Answer: <answer>"."""
    return Example(id=row["id"], messages=[{"role": "user", "content": format_prompt(row)}], row=row,
                   reference=f"Answer: {row['answer']}")


def load_rows(source: str) -> list[dict]:
    """Every row of a JSONL path or hub spec, validated; a hub spec's subset `answerable` keeps answerable rows."""
    subset = parse_hub_spec(source).subset if is_hub_spec(source) else None
    if subset not in (*SUBSETS, None):
        raise DataError(f"{source}: MuSiQue subset must be one of {', '.join(SUBSETS)} or left out, got {subset!r}")
    rows = [validate_record(record, where) for where, record in load_records(source)]
    rows = [row for row in rows if row["answerable"]] if subset == "answerable" else rows
    if not rows:
        raise DataError(f"{source}: no rows left to use")
    return rows


class MusiqueTask(Task):
    """Components "em", "f1", "format"; default weights 0.4 / 0.4 / 0.2."""

    name = "musique"
    components = tuple(DEFAULT_WEIGHTS)

    def score(self, completion: str, example: Example, completion_ids: list[int]) -> dict[str, float | None]:
        return score_completion(completion, example.row)


def from_config(config) -> MusiqueTask:
    """Rows from `data`/`eval_data` (validated now) or from the generator when `data` is empty."""
    weights = resolve_weights("musique", DEFAULT_WEIGHTS, config.reward_weights)
    eval_rows = load_rows(config.eval_data) if config.eval_data else None
    if config.data:
        train, held = hold_out(load_rows(config.data), eval_rows, config.eval_size, config.train_size, config.data)
    else:
        held = eval_rows if eval_rows is not None else musique_synthetic.generate(config.seed, "eval", config.eval_size)
        held = held[:config.eval_size] if config.eval_size > 0 else held
        exclude = frozenset(row["question"] for row in held)
        train = musique_synthetic.generate(config.seed, "train", config.train_size or DEFAULT_SYNTHETIC_TRAIN_SIZE, exclude)
    return MusiqueTask([make_example(row) for row in train], [make_example(row) for row in held], weights)
