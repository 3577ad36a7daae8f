"""A reward that returns something unusable stops the run at once with one line naming the function, what it
returned and what was expected; the run directory it leaves is complete and marked failed, and its log book entry
says FAILED. A reward that raises or returns None/NaN is not stopped: the judges diagnose those."""
import json
import os
from pathlib import Path

import pytest

from flatline.common.errors import PluginError
from flatline.harness.cli import main
from flatline.trainer.rollout import RewardScorer
from flatline.trainer.tasks.base import Example, Task

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = [Example(id=f"e{i}", messages=[{"role": "user", "content": "q"}], row={"answer": str(i)}) for i in range(2)]
COMPLETIONS = ["a", "b", "c", "d"]  # 2 examples x G = 2


def score_with(reward):
    reward.__module__ = "my_rewards"
    scorer = RewardScorer(Task([], [], {}), reward, {}, prompt_text=lambda e: e.id)
    return scorer.score(EXAMPLES, COMPLETIONS, [[1]] * 4, num_generations=2)


@pytest.mark.parametrize("returned, described", [
    ([0.5, 0.5, 0.5], "list of 3 values [0.5, 0.5, 0.5]"),
    (["1", "0", "1", "0"], "list of 4 values ['1', '0', '1', '0'] (position 0 is str '1')"),
    ("1010", "str '1010'"),
    (0.5, "float 0.5"),
    (None, "None"),
    ({"em": [1.0] * 4, "f1": [1.0]}, "for component 'f1' list of 1 value [1.0]"),
    ([[1.0]] * 4, "list of 4 values [[1.0], [1.0], [1.0], [1.0]] (position 0 is list [1.0])"),
])
def test_an_unusable_return_is_one_line_naming_function_value_and_expectation(returned, described):
    def short(prompts, completions, **kwargs):
        return returned

    with pytest.raises(PluginError) as info:
        score_with(short)
    message = str(info.value)
    assert message == (f"reward my_rewards:test_an_unusable_return_is_one_line_naming_function_value_and_expectation."
                       f"<locals>.short returned {described}; expected 4 floats or None, one per completion (a list, "
                       f"or a dict of such lists, one per component)")
    assert "\n" not in message


@pytest.mark.parametrize("returned", [
    [1, 0.5, None, True], (1.0, 0.0, 1.0, 0.0), {"em": [1.0, 0.0, None, 1.0], "f1": [0.5] * 4},
])
def test_usable_returns_become_floats_or_none(returned):
    def fine(prompts, completions, **kwargs):
        return returned

    components, errors, weights = score_with(fine)
    assert errors == 0 and all(len(v) == 4 for v in components.values())
    assert all(v is None or type(v) is float for values in components.values() for v in values)


def test_arrays_and_tensors_are_accepted():
    import numpy as np
    import torch

    for returned in (np.array([1.0, 0.0, 1.0, 0.0]), torch.tensor([1.0, 0.0, 1.0, 0.0])):
        components, _, _ = score_with(lambda prompts, completions, **kwargs: returned)
        assert list(components.values())[0] == [1.0, 0.0, 1.0, 0.0]


def test_non_finite_values_warn_once_and_go_on_to_be_diagnosed():
    def infinite(prompts, completions, **kwargs):
        return [float("-inf"), 1.0, float("nan"), 0.0]

    with pytest.warns(UserWarning, match=r"reward my_rewards:.*infinite returned 2 non-finite values .* among 4"):
        components, errors, _ = score_with(infinite)
    assert errors == 0 and components["infinite"][1:4:2] == [1.0, 0.0]


def test_a_reward_that_raises_is_still_counted_not_stopped():
    def raising(prompts, completions, **kwargs):
        raise ValueError("cannot parse")

    with pytest.warns(UserWarning, match="raised ValueError"):
        components, errors, _ = score_with(raising)
    assert errors == 4 and components == {"raising": [None] * 4}


def test_a_task_scorer_returning_junk_is_named():
    class JunkTask(Task):
        name, components = "junk", ("reward",)

        def score(self, completion, example, completion_ids):
            return {"reward": "yes"}

    scorer = RewardScorer(JunkTask([], [], {"reward": 1.0}), None, {}, prompt_text=lambda e: e.id)
    with pytest.raises(PluginError, match=r"task scorer (tests\.)?test_reward_check:.*JunkTask.score returned str 'yes' "
                                          r"for component 'reward'; expected a float or None"):
        scorer.score(EXAMPLES, COMPLETIONS, [[1]] * 4, num_generations=2)


WRONG_LENGTH = '''
def short(prompts, completions, **kwargs):
    return [1.0] * (len(completions) - 1)
'''


def test_the_cli_stops_at_step_1_with_one_line_and_leaves_a_complete_failed_run(tmp_path, capsys, monkeypatch):
    (tmp_path / "wrong_rewards.py").write_text(WRONG_LENGTH)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    code = main(["train", str(REPO / "configs" / "bandit.toml"), "--set", "reward=wrong_rewards:short",
                 "--set", "max_steps=5", "--set", "progress_bar=false", "--out", str(run), "--no-preflight"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == ("flatline: error: reward wrong_rewards:short returned list of 15 values [1.0, 1.0, 1.0, 1.0, ...]; "
                   "expected 16 floats or None, one per completion (a list, or a dict of such lists, one per component)")
    assert sorted(p.name for p in run.iterdir()) == ["config.toml", "metrics.jsonl", "samples.jsonl", "summary.json"]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["steps_completed"], summary["max_steps"]) == ("failed", 0, 5)
    assert summary["error"] == "PluginError: " + err.removeprefix("flatline: error: ")
    book = Path(os.environ["FLATLINE_LOG"]).read_text()
    assert book.count("<!-- flatline-entry ") == 1 and "<!-- flatline-entry status=failed run=" in book
    assert "- status: **FAILED** (during step 1 of 5: PluginError: reward wrong_rewards:short returned list of 15" in book


def test_preflight_refuses_the_same_reward_before_any_run_directory(tmp_path, capsys, monkeypatch):
    (tmp_path / "wrong_rewards.py").write_text(WRONG_LENGTH)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    code = main(["train", str(REPO / "configs" / "bandit.toml"), "--set", "reward=wrong_rewards:short",
                 "--set", "max_steps=5", "--set", "progress_bar=false", "--out", str(run)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not run.exists()
    assert err.startswith("flatline: error: preflight refused: reward: reward wrong_rewards:short cannot score the "
                          "known-good reference answer (PluginError: reward wrong_rewards:short returned list of 0")
