"""Tests for trainer/tasks: data loading and validation, prompts, rewards, hub specs. No network, < 20 s."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from flatline.common.errors import ConfigError, DataError
from flatline.trainer.config import Config
from flatline.trainer.tasks import (
    TASK_NAMES,
    arithmetic,
    bandit,
    build_task,
    gsm8k,
    hub,
    musique,
    musique_synthetic,
)
from flatline.trainer.tasks.base import Example
from flatline.trainer.tasks.gsm8k import extract_answer, parse_number

GSM8K_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"  # shared/ sits beside the checkout
GSM8K_TRAIN_ROWS = 7473  # the official train split
SMOLLM_VOCAB = 49152  # SmolLM2's vocabulary size


def cfg(**changes) -> Config:
    """The trainer's own Config, small, with `changes` applied (unvalidated, so bad values reach build_task)."""
    return replace(Config(task="arithmetic", train_size=64, eval_size=16), **changes)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


# ---- GSM8K answer extraction ----

@pytest.mark.parametrize("text, expected", [
    ("The answer is 1,234.", "1234"),
    ("#### 72", "72"),
    ("It costs $5.00", "5.00"),
    ("no digits here", None),
    ("The temperature fell to -3 degrees", "-3"),
    ("#### -15", "-15"),
    ("First 10, then 20.\n#### 30\nCheck: 99", "30"),  # the number after the last '####' wins over later numbers
    ("#### oops, I think 7", "7"),
    ("#### 5 was a slip.\n#### 8", "8"),  # the last '####' counts
    ("list 1,2,3", "3"),  # commas not in thousands groups separate numbers
    ("$1,000,000 total.", "1000000"),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_parse_number():
    assert parse_number("19.0") == parse_number("19") == 19.0
    assert parse_number("$1,234.") == 1234.0
    assert parse_number("-3") == -3.0
    assert parse_number("abc") is None
    assert parse_number("nan") is None


def test_gsm8k_is_correct_by_value():
    assert gsm8k.is_correct("so 19.0 in total", "19")
    assert gsm8k.is_correct("#### $1,200", "1200")
    assert not gsm8k.is_correct("#### 18", "19")
    assert not gsm8k.is_correct("I don't know", "19")


# ---- GSM8K data ----

def test_gsm8k_real_train_file_holds_out_eval():
    task = build_task(cfg(task="gsm8k", data=str(GSM8K_DIR / "train.jsonl"), train_size=0, eval_size=100))
    train, held = task.examples("train"), task.examples("eval")
    assert len(train) == GSM8K_TRAIN_ROWS - 100 and len(held) == 100
    assert not {e.row["question"] for e in train} & {e.row["question"] for e in held}
    assert not {e.id for e in train} & {e.id for e in held}
    last_line = (GSM8K_DIR / "train.jsonl").read_text().splitlines()[-1]
    assert held[-1].row == json.loads(last_line)  # the held-out rows are the file's last ones
    assert "####" in train[0].messages[0]["content"] and train[0].row["question"] in train[0].messages[0]["content"]


def test_gsm8k_eval_data_and_train_size():
    task = build_task(cfg(task="gsm8k", data=str(GSM8K_DIR / "train.jsonl"),
                          eval_data=str(GSM8K_DIR / "test.jsonl"), train_size=50, eval_size=0))
    assert len(task.examples("train")) == 50
    assert len(task.examples("eval")) == 1319  # the official test split, eval_size 0 = all


def test_gsm8k_malformed_row_names_file_line_and_field(tmp_path):
    good = {"question": "What is 1 + 1?", "answer": "1 + 1 = 2\n#### 2"}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, good, {"question": "Q?", "answer": "two"}])
    with pytest.raises(DataError) as info:
        build_task(cfg(task="gsm8k", data=str(path), eval_size=1))
    message = str(info.value)
    assert "bad.jsonl:3:" in message and "'answer'" in message and "####" in message and "\n" not in message


@pytest.mark.parametrize("line, field_name", [
    ('{"answer": "#### 2"}', "question"),
    ('{"question": "", "answer": "#### 2"}', "question"),
    ('{"question": "Q?", "answer": 2}', "answer"),
])
def test_gsm8k_other_bad_rows(tmp_path, line, field_name):
    path = write_jsonl(tmp_path / "x.jsonl", ['{"question": "Q?", "answer": "#### 1"}', "", line])
    with pytest.raises(DataError, match=rf"x\.jsonl:3: .*'{field_name}'"):
        build_task(cfg(task="gsm8k", data=str(path), eval_size=1))


def test_gsm8k_missing_file_and_missing_data(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_task(cfg(task="gsm8k", data=str(tmp_path / "nope.jsonl")))
    with pytest.raises(ConfigError, match="data"):
        build_task(cfg(task="gsm8k", data=""))


# ---- references score the maximum, wrong answers score 0 ----

def _tasks():
    return [
        build_task(cfg(task="bandit")),
        build_task(cfg(task="arithmetic")),
        build_task(cfg(task="gsm8k", data=str(GSM8K_DIR / "test.jsonl"), eval_size=50)),
        build_task(cfg(task="musique", train_size=32, eval_size=8)),
        build_task(cfg(task="tools", train_size=8, eval_size=4)),
        build_task(cfg(task="tools", tools_question="sum", train_size=8, eval_size=4)),
    ]


@pytest.mark.parametrize("task", _tasks(), ids=lambda t: t.name)
def test_reference_scores_maximum_and_wrong_scores_zero(task):
    best = sum(task.weights.values())
    assert best > 0 and set(task.components) == set(task.weights)
    for split in ("train", "eval"):
        for example in task.examples(split):
            components = task.score(example.reference, example, list(example.reference_ids))
            assert set(components) == set(task.components)
            assert task.total(components) == pytest.approx(best), example.id
            assert task.total(task.score("#### -987654321\nzzz", example, [1])) == 0.0


def test_task_names_all_build():
    assert {t.name for t in _tasks()} == set(TASK_NAMES)


def test_tools_sum_question_takes_two_lookups_and_the_sum():
    task = build_task(cfg(task="tools", tools_question="sum", tool_call_reward_cap=0.0, train_size=16, eval_size=4))
    for example in task.examples("train"):
        first, second = example.row["keys"]
        store = example.row["store"]
        assert first != second and f'"{first}" and "{second}"' in example.row["question"]
        assert example.row["value"] == store[first] + store[second]
        assert task.score(example.reference, example, []) == {"outcome": 1.0, "tool_calls": 2.0}
        one_lookup = example.reference.split("\n", 1)[1]  # the second call and the sum: no outcome lost, one call less
        assert task.score(one_lookup, example, []) == {"outcome": 1.0, "tool_calls": 1.0}
    with pytest.raises(ConfigError, match="tools_store_size: a sum question needs 2 keys"):
        build_task(cfg(task="tools", tools_question="sum", tools_store_size=1))


# ---- arithmetic ----

def test_arithmetic_rows_and_splits():
    task = build_task(cfg(task="arithmetic", train_size=256, eval_size=64, seed=3))
    train, held = task.examples("train"), task.examples("eval")
    assert len(train) == 256 and len(held) == 64
    assert not {e.row["question"] for e in train} & {e.row["question"] for e in held}
    again = build_task(cfg(task="arithmetic", train_size=256, eval_size=64, seed=3))
    assert [e.row for e in again.examples("train")] == [e.row for e in train]
    other = build_task(cfg(task="arithmetic", train_size=256, eval_size=64, seed=4))
    assert [e.row for e in other.examples("train")] != [e.row for e in train]
    for example in train:
        gsm8k.validate_row(example.row, example.id)  # GSM8K's record format
        assert example.messages[0]["content"].endswith(arithmetic.INSTRUCTION)
    assert arithmetic.make_row(12, "+", 7) == {"question": "What is 12 + 7?", "answer": "12 + 7 = 19\n#### 19"}
    assert arithmetic.make_row(12, "-", 7)["answer"].endswith("#### 5")


def test_arithmetic_scores_with_gsm8k_scorer():
    task = build_task(cfg(task="arithmetic"))
    example = next(e for e in task.examples("train") if e.row["question"] != "What is 0 + 0?")
    number = gsm8k.final_answer(example.row["answer"])
    assert task.score(number, example, []) == {"correct": 1.0}
    assert task.score(str(int(number) + 1), example, []) == {"correct": 0.0}
    assert type(task).score is gsm8k.GSM8KTask.score  # shared, not copied


def test_arithmetic_too_many_rows():
    with pytest.raises(ConfigError, match="arithmetic_max_operand"):
        build_task(cfg(task="arithmetic", arithmetic_max_operand=3, train_size=100))


# ---- bandit ----

@pytest.mark.parametrize("arms", [2, 3, 4, 7])
def test_bandit_chance_fraction(arms):
    assert abs(bandit.chance_reward(SMOLLM_VOCAB, arms) - 1 / arms) < 1e-3


def test_bandit_rewards():
    task = build_task(cfg(task="bandit", bandit_arms=4))
    (example,) = task.examples("train")
    assert example.reference_ids == (0,) and example.messages[0]["content"] == bandit.PROMPT
    assert task.score("", example, [0]) == {"reward": 1.0}
    assert task.score("", example, [8]) == {"reward": 1.0}
    assert [task.score("", example, [i])["reward"] for i in (1, 2, 3, 5)] == [0.0] * 4
    assert task.score("", example, [5, 0]) == {"reward": 0.0}  # only the first token counts
    assert task.score("", example, []) == {"reward": 0.0}
    (held,) = task.examples("eval")
    assert held.messages == example.messages and held.id != example.id
    with pytest.raises(ConfigError, match="bandit_arms"):
        build_task(cfg(task="bandit", bandit_arms=1))


# ---- MuSiQue scoring ----

ROW = {"answer": "Dr. Mira Okafor", "answer_aliases": ["Mira Okafor", "Okafor"]}


def test_musique_normalisation_and_f1():
    assert musique.normalize_answer("  The  Okafor-Reyes, Inc. ") == "okaforreyes inc"
    assert musique.token_f1("Mira Okafor Smith", "Mira Okafor") == pytest.approx(0.8)
    assert musique.token_f1("Okafor", "Mira Okafor") == pytest.approx(2 / 3)
    assert musique.token_f1("nobody", "Mira Okafor") == 0.0


@pytest.mark.parametrize("completion, expected", [
    ("Answer: Dr. Mira Okafor", {"em": 1.0, "f1": 1.0, "format": 1.0}),
    ("The spouse is X.\nAnswer: the okafor.", {"em": 1.0, "f1": 1.0, "format": 1.0}),  # alias, article, punctuation
    ("Answer: Mira Okafor Smith", {"em": 0.0, "f1": 0.8, "format": 1.0}),
    ("I think\nMira Okafor", {"em": 1.0, "f1": 1.0, "format": 0.0}),  # last line, no Answer: line
    ("Answer: Tom\nlater\nanswer: Mira Okafor", {"em": 1.0, "f1": 1.0, "format": 1.0}),  # the last Answer: line
    ("**Answer:** Okafor", {"em": 1.0, "f1": 1.0, "format": 1.0}),
    ("Answer:", {"em": 0.0, "f1": 0.0, "format": 0.0}),
    ("", {"em": 0.0, "f1": 0.0, "format": 0.0}),
])
def test_musique_score(completion, expected):
    assert musique.score_completion(completion, ROW) == pytest.approx(expected)


def test_musique_default_weights_total():
    task = build_task(cfg(task="musique", train_size=4, eval_size=2))
    assert task.weights == {"em": 0.4, "f1": 0.4, "format": 0.2}
    example = Example(id="x", messages=[], row=ROW, reference="Answer: Dr. Mira Okafor")
    assert task.total(task.score("Answer: Mira Okafor Smith", example, [])) == pytest.approx(0.4 * 0.8 + 0.2)


# ---- synthetic MuSiQue ----

def test_synthetic_musique_deterministic_and_valid():
    rows = musique_synthetic.generate(7, "train", 60)
    assert rows == musique_synthetic.generate(7, "train", 60)
    assert [r["question"] for r in rows] != [r["question"] for r in musique_synthetic.generate(8, "train", 60)]
    assert len({r["question"] for r in rows}) == 60
    hop_counts = set()
    for row in rows:
        musique.validate_record(row, row["id"])
        hops = row["question_decomposition"]
        hop_counts.add(len(hops))
        assert 2 <= len(hops) <= 4
        by_idx = {p["idx"]: p for p in row["paragraphs"]}
        for hop in hops:
            paragraph = by_idx[hop["paragraph_support_idx"]]
            assert paragraph["is_supporting"]
            assert hop["answer"] in paragraph["paragraph_text"]  # the hop's answer is stated where it is supported
        assert sum(p["is_supporting"] for p in row["paragraphs"]) == len(hops)
        assert hops[-1]["answer"] == row["answer"] and row["answer"] not in row["question"]
        assert [p["idx"] for p in row["paragraphs"]] == list(range(len(row["paragraphs"])))
    assert hop_counts == {2, 3, 4}
    first_positions = {tuple(p["is_supporting"] for p in row["paragraphs"]) for row in rows}
    assert len(first_positions) > 10  # supporting paragraphs are shuffled among distractors, not always first


def test_synthetic_musique_task_splits():
    task = build_task(cfg(task="musique", train_size=100, eval_size=30, seed=5))
    train, held = task.examples("train"), task.examples("eval")
    assert len(train) == 100 and len(held) == 30
    assert not {e.row["question"] for e in train} & {e.row["question"] for e in held}
    prompt = train[0].messages[0]["content"]
    first = train[0].row["paragraphs"][0]
    assert prompt.startswith(f"{first['title']}: {first['paragraph_text']}")
    assert f"Question: {train[0].row['question']}" in prompt and prompt.endswith(musique.INSTRUCTION)
    assert max(len(e.messages[0]["content"]) for e in train) < 1600  # ~4 chars a token: under ~400 tokens


# ---- MuSiQue files ----

def test_musique_file_errors_name_field_path(tmp_path):
    rows = musique_synthetic.generate(0, "train", 3)
    bad_title = json.loads(json.dumps(rows[2]))
    bad_title["paragraphs"][3]["title"] = 5
    path = write_jsonl(tmp_path / "m.jsonl", [rows[0], rows[1], bad_title])
    with pytest.raises(DataError, match=r"m\.jsonl:3: field 'paragraphs\[3\]\.title' must be str"):
        build_task(cfg(task="musique", data=str(path), eval_size=1))
    bad_support = json.loads(json.dumps(rows[2]))
    bad_support["question_decomposition"][1]["paragraph_support_idx"] = 99
    write_jsonl(path, [rows[0], bad_support])
    with pytest.raises(DataError, match=r"m\.jsonl:2: field 'question_decomposition\[1\]\.paragraph_support_idx'"):
        build_task(cfg(task="musique", data=str(path), eval_size=1))
    missing = {k: v for k, v in rows[0].items() if k != "answerable"}
    write_jsonl(path, [missing])
    with pytest.raises(DataError, match=r"m\.jsonl:1: missing field 'answerable'"):
        build_task(cfg(task="musique", data=str(path), eval_size=0))


def test_musique_file_loads(tmp_path):
    rows = musique_synthetic.generate(0, "train", 10)
    rows[0]["question_decomposition"][0]["paragraph_support_idx"] = None  # allowed by the schema
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    task = build_task(cfg(task="musique", data=str(path), train_size=0, eval_size=3))
    assert [e.row for e in task.examples("eval")] == rows[-3:]
    assert [e.id for e in task.examples("train")] == [r["id"] for r in rows[:7]]


# ---- hub specs ----

def test_parse_hub_spec():
    spec = hub.parse_hub_spec("hf:openai/gsm8k,main,test[:256]")
    assert (spec.repo, spec.subset, spec.split, spec.start, spec.stop) == ("openai/gsm8k", "main", "test", None, 256)
    spec = hub.parse_hub_spec("bdsaglam/musique,answerable,train[:256]")
    assert (spec.repo, spec.subset, spec.split, spec.start, spec.stop) == ("bdsaglam/musique", "answerable", "train", None, 256)
    spec = hub.parse_hub_spec("owner/name,,validation[10:20]")
    assert (spec.subset, spec.split, spec.start, spec.stop) == (None, "validation", 10, 20)
    spec = hub.parse_hub_spec("owner/name,x,train[100:]")
    assert (spec.start, spec.stop) == (100, None)
    spec = hub.parse_hub_spec("owner/name")
    assert (spec.subset, spec.split, spec.start, spec.stop) == (None, "train", None, None)
    for bad in ("hf:gsm8k", "hf:openai/gsm8k,main,test[5:2]", "hf:a/b,c,d,e", "hf:a/b,main,test[:x]"):
        with pytest.raises(DataError, match="hub spec"):
            hub.parse_hub_spec(bad)


def test_is_hub_spec(tmp_path):
    existing = tmp_path / "owner"
    existing.mkdir()
    (existing / "name").write_text("")
    assert hub.is_hub_spec("openai/gsm8k,main,test[:256]") and hub.is_hub_spec("hf:anything")
    assert not hub.is_hub_spec(str(existing / "name"))
    assert not hub.is_hub_spec("data/missing.jsonl")  # a missing file reads as a missing file
    assert not hub.is_hub_spec("")


def _fake_datasets(monkeypatch, rows=None, error=None):
    datasets = pytest.importorskip("datasets")
    calls = []

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        if error:
            raise error
        return list(rows)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_gsm8k_rows_are_sliced(monkeypatch):
    rows = [{"question": f"What is {i} + 0?", "answer": f"#### {i}"} for i in range(10)]
    calls = _fake_datasets(monkeypatch, rows)
    task = build_task(cfg(task="gsm8k", data="hf:openai/gsm8k,main,test[2:8]", train_size=0, eval_size=2))
    assert calls == [("openai/gsm8k", "main", "test")]
    assert [e.row["answer"] for e in task.examples("train")] == ["#### 2", "#### 3", "#### 4", "#### 5"]
    assert [e.row["answer"] for e in task.examples("eval")] == ["#### 6", "#### 7"]


def test_hub_bad_row_names_spec_and_row(monkeypatch):
    _fake_datasets(monkeypatch, [{"question": "Q?", "answer": "#### 1"}, {"question": "Q?", "answer": "x"}])
    with pytest.raises(DataError, match=r"hf:openai/gsm8k,main,test row 1: field 'answer'"):
        build_task(cfg(task="gsm8k", data="hf:openai/gsm8k,main,test", eval_size=0))


def test_hub_musique_answerable_filter(monkeypatch):
    rows = musique_synthetic.generate(0, "train", 6)
    for i, row in enumerate(rows):
        row["answerable"] = i % 2 == 0
    _fake_datasets(monkeypatch, rows)
    task = build_task(cfg(task="musique", data="bdsaglam/musique,answerable,train[:5]", train_size=0, eval_size=1))
    assert [e.id for e in task.examples("train")] == [rows[0]["id"], rows[2]["id"]]
    assert [e.id for e in task.examples("eval")] == [rows[4]["id"]]
    full = build_task(cfg(task="musique", data="bdsaglam/musique,full,train", train_size=0, eval_size=1))
    assert len(full.examples("train")) == 5
    with pytest.raises(DataError, match="subset"):
        build_task(cfg(task="musique", data="bdsaglam/musique,bogus,train", eval_size=1))


def test_hub_load_failure_is_one_line_data_error(monkeypatch):
    _fake_datasets(monkeypatch, error=ConnectionError("offline:\n cannot reach huggingface.co"))
    with pytest.raises(DataError) as info:
        build_task(cfg(task="gsm8k", data="hf:openai/gsm8k,main,test[:256]"))
    message = str(info.value)
    assert "hf:openai/gsm8k,main,test[:256]" in message and "cannot reach huggingface.co" in message
    assert "\n" not in message


def test_hub_missing_datasets_package(hide_module):
    hide_module("datasets")
    with pytest.raises(DataError, match="pip install datasets"):
        hub.load_hub_rows(hub.parse_hub_spec("hf:openai/gsm8k,main,test"))


# ---- config errors ----

def test_unknown_reward_component_names_valid_ones():
    with pytest.raises(ConfigError) as info:
        build_task(cfg(task="musique", reward_weights={"accuracy": 1.0}))
    assert "accuracy" in str(info.value) and "em, f1, format" in str(info.value)
    with pytest.raises(ConfigError, match="correct"):
        build_task(cfg(task="arithmetic", reward_weights={"em": 1.0}))


def test_reward_weights_override_keeps_other_defaults():
    task = build_task(cfg(task="musique", train_size=2, eval_size=1, reward_weights={"format": 0.0}))
    assert task.weights == {"em": 0.4, "f1": 0.4, "format": 0.0}
    with pytest.raises(ConfigError, match="reward_weights.em"):
        build_task(cfg(task="musique", reward_weights={"em": -1.0}))


def test_unknown_task():
    with pytest.raises(ConfigError, match="did you mean 'gsm8k'"):
        build_task(cfg(task="gsm8"))
