"""FlatlineCallback driven through transformers' own callback hooks, in the order its Trainer calls them, with known
steps (a real torch model and optimizer, transformers' TrainingArguments, TrainerState and TrainerControl; no TRL
needed): each step's metrics row holds that step's numbers and is on disk before the next step begins; and bad
arguments are refused at construction, before anything is created."""
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from flatline.integrations.trl import FlatlineCallback
from flatline.integrations.trl_args import CallbackArgumentError


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_each_steps_row_holds_that_steps_numbers_and_is_written_before_the_next_step_begins(tmp_path):
    model = torch.nn.Linear(3, 1, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=3, report_to=[], use_cpu=True)
    state, control = TrainerState(max_steps=3, is_world_process_zero=True), TrainerControl()
    callback = FlatlineCallback(run_dir=tmp_path / "run", judge_every=1000, log_book=str(tmp_path / "LOG.md"),
                                log=lambda *a: None)
    with pytest.warns(UserWarning, match="GRPOTrainer was not found"):  # no GRPOTrainer: model-level probes only
        callback.on_train_begin(args, state, control, model=model, optimizer=optimizer)
    metrics = callback.run_dir / "metrics.jsonl"
    seen_before_step = []
    for k in (1, 2, 3):
        callback.on_step_begin(args, state, control)
        seen_before_step.append([row["step"] for row in rows(metrics)])
        optimizer.zero_grad()
        model(torch.full((1, 3), float(k))).sum().backward()  # step k's gradient: [k, k, k], norm k * sqrt(3)
        optimizer.step()
        state.global_step = k
        callback.on_step_end(args, state, control)
        callback.on_log(args, state, control, logs={"loss": 0.5 * k, "reward": float(k), "eval_reward": 10.0 * k})
    callback.on_log(args, state, control, logs={"train_runtime": 7.0})  # transformers' end-of-training figures
    callback.on_train_end(args, state, control)

    assert seen_before_step == [[], [1], [1, 2]]  # row k is on disk before step k + 1 begins
    written = rows(metrics)
    assert [row["step"] for row in written] == [1, 2, 3]
    for k, row in zip((1, 2, 3), written):
        assert (row["loss"], row["reward"], row["eval/reward"]) == (0.5 * k, float(k), 10.0 * k)
        assert row["gradients/global_norm"] == pytest.approx(k * math.sqrt(3), rel=1e-6)
    assert written[-1]["train_runtime"] == 7.0 and "train_runtime" not in written[1]
    summary = json.loads((callback.run_dir / "summary.json").read_text())
    assert (summary["status"], summary["steps_completed"], summary["reward_last"]) == ("completed", 3, 2.0)


@pytest.mark.parametrize("argument, value, says", [
    ("judge_every", float("nan"), "must be an integer in [1, 1000000]"),
    ("judge_every", 2.5, "must be an integer in [1, 1000000]"),
    ("judge_every", 0, "must be an integer in [1, 1000000]"),
    ("log", None, "pass a function taking one line"),
    ("log_book", 123, "pass a markdown file such as 'reports/LOG.md', or '' for the default"),
    ("run_dir", "", "pass a new directory such as 'runs/my-run'"),
    ("run_dir", "runs/a\nb", "holds the unprintable character '\\n'"),
    ("probes", "all", "pass a probe level: one of 'none', 'cheap', 'full'"),
    ("stop_on", "warn", "pass None (only report) or 'fail'"),
])
def test_a_bad_argument_is_refused_at_construction_in_one_line_naming_it_and_nothing_is_created(
        tmp_path, monkeypatch, argument, value, says):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as refused:
        FlatlineCallback(**{argument: value})
    message = str(refused.value)
    assert isinstance(refused.value, CallbackArgumentError) and "\n" not in message
    assert message.startswith(f"FlatlineCallback argument '{argument}': ") and says in message
    assert list(tmp_path.iterdir()) == []


def test_a_run_dir_under_a_file_is_refused_at_construction(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CallbackArgumentError, match=r"'run_dir'.*notes.txt is not a folder"):
        FlatlineCallback(run_dir=tmp_path / "notes.txt" / "run")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "mine"


def test_good_arguments_are_kept_as_given():
    callback = FlatlineCallback(run_dir=Path("runs/x"), probes="full", judge_every=3, stop_on="fail",
                                log_book=Path("LOG.md"), log=print)
    settings = callback.settings
    assert (settings.probes, settings.judge_every, settings.stop_on, settings.log_book) == ("full", 3, "fail",
                                                                                           Path("LOG.md"))
    assert callback.run_dir is None  # made when training starts, on the main process
