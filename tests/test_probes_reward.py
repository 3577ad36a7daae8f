"""RewardProbe on hand-built rollouts (exact numbers), fake and real tasks, and real tiny-trainer steps."""
import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

from flatline.common.record import StepRecord
from flatline.probes.base import ProbeContext, ProbeSet
from flatline.probes.reward import RewardProbe, variance_shares
from flatline.trainer.loop import build_trainer
from flatline.trainer.tasks import build_task
from tests.conftest import tiny_config


def record(components, errors=0, examples=()):
    """A stand-in StepRecord with what the reward probe reads."""
    return StepRecord(step=1, reward_components=components, reward_errors=errors, examples=list(examples))


def run(rec, G=4, task=None):
    return RewardProbe(ProbeContext(num_generations=G, task=task)).on_step(rec)


def test_healthy_components():
    out = run(record({"em": [1, 0, 0, 0, 1, 1, 0, 0], "format": [1, 1, 1, 0, 1, 1, 1, 1]}))
    # within-group population variances: em 0.1875 + 0.25, format 0.1875 + 0 -> shares 0.7 / 0.3
    assert out["em/variance_share"] == pytest.approx(0.7) and out["format/variance_share"] == pytest.approx(0.3)
    assert out["em/mean"] == pytest.approx(0.375) and out["em/std"] == pytest.approx(math.sqrt(1.875 / 7))
    assert out["em/frac_at_max"] == pytest.approx(3 / 8) and out["em/frac_at_min"] == pytest.approx(5 / 8)
    assert out["format/frac_at_max"] == pytest.approx(7 / 8) and out["format/max"] == 1.0 and out["format/min"] == 0.0
    assert out["errors"] == 0 and out["none"] == 0 and "self_check_ok" not in out


def test_constant_reward_has_no_variance_to_share():
    out = run(record({"reward": [1.0] * 8}))
    assert out["reward/variance_share"] == 0.0
    assert out["reward/frac_at_max"] == 1.0 and out["reward/frac_at_min"] == 1.0 and out["reward/std"] == 0.0


def test_one_component_owns_all_the_variance():
    out = run(record({"em": [0.0] * 8, "format": [1, 0, 1, 0, 1, 1, 0, 0]}))
    assert out["format/variance_share"] == 1.0 and out["em/variance_share"] == 0.0
    assert out["em/frac_at_max"] == 1.0  # em never moves off 0


def test_task_weights_scale_the_shares():
    components = {"em": [1, 0, 1, 0], "format": [1, 0, 1, 0]}
    assert variance_shares(components, 4) == {"em": 0.5, "format": 0.5}
    weighted = variance_shares(components, 4, {"em": 0.4, "format": 0.2})
    assert weighted["em"] == pytest.approx(0.16 / 0.20) and weighted["format"] == pytest.approx(0.04 / 0.20)


def test_none_values_and_errors_are_counted():
    out = run(record({"em": [1, None, 0, 0, None, None, 1, 0], "format": [1.0] * 8}, errors=2))
    assert out["errors"] == 2 and out["none"] == 3 and out["em/none"] == 3 and out["format/none"] == 0
    assert out["em/mean"] == pytest.approx(2 / 5)
    all_none = run(record({"reward": [None] * 8}, errors=8))
    assert all_none["none"] == 8 and all_none["reward/variance_share"] == 0.0 and "reward/mean" not in all_none


class StrictTask:
    """A scorer that rejects its own reference (an answer-format mismatch); counts its calls."""

    components = ("correct",)
    weights = {"correct": 1.0}

    def __init__(self, fail_with=None):
        self.calls = 0
        self.fail_with = fail_with

    def score(self, completion, example, completion_ids):
        self.calls += 1
        if self.fail_with:
            raise self.fail_with
        return {"correct": 1.0 if completion.strip().startswith("Answer:") else 0.0}

    def total(self, components):
        return sum(self.weights[k] * (v or 0.0) for k, v in components.items())


def test_scorer_that_fails_its_own_reference():
    task = StrictTask()
    probe = RewardProbe(ProbeContext(num_generations=4, task=task))
    rec = record({"correct": [0.0] * 4}, examples=[SimpleNamespace(reference="#### 42", reference_ids=())])
    first, second = probe.on_step(rec), probe.on_step(rec)
    assert first["self_check_ok"] == 0 and first["self_check_total"] == 0.0
    assert second["self_check_ok"] == 0 and task.calls == 1  # scored once, then cached
    raising = run(rec, task=StrictTask(fail_with=ValueError("no answer found")))
    assert raising["self_check_ok"] == 0 and raising["self_check_raised"] == 1 and "self_check_total" not in raising


def test_real_task_passes_its_self_check():
    task = build_task(tiny_config(task="arithmetic"))
    example = task.examples("train")[0]
    out = run(record({"correct": [1.0, 0.0, 0.0, 0.0]}, examples=[example]), task=task)
    assert out["self_check_ok"] == 1 and out["self_check_total"] == 1.0 and out["self_check_raised"] == 0


def test_an_uncapped_per_call_term_may_pay_the_reference_more_than_full_marks():
    # two lookups at +1 each, uncapped, weighted 2: 1 + 2 x 2 = 5 against the nominal 1 + 2 = 3; that is no
    # parse failure (the preflight's repetition check is where an uncapped bonus is caught)
    from flatline.probes.reward import self_check
    task = build_task(tiny_config("tools_question=sum", "tool_call_reward_cap=0", "reward_weights.tool_calls=2",
                                  task="tools"))
    assert self_check(task, task.examples("train")[0]) == {"self_check_total": 5.0, "self_check_ok": 1,
                                                            "self_check_raised": 0}
    short = build_task(tiny_config("tools_question=sum", task="tools"))
    example = short.examples("train")[0]
    wrong_sum = dataclasses.replace(example, reference=example.reference.rsplit("\n", 1)[0] + "\n0")
    assert self_check(short, wrong_sum)["self_check_ok"] == 0


def test_self_check_skipped_for_a_plug_in_reward():
    out = run(record({"my_reward": [1.0, 0.0, 0.0, 0.0]}, examples=[SimpleNamespace(reference="x", reference_ids=())]),
              task=StrictTask())
    assert "self_check_ok" not in out


def test_on_real_trainer_steps(tmp_path, monkeypatch):
    trainer = build_trainer(tiny_config("seed=1"))
    trainer.listeners.append(ProbeSet([RewardProbe(ProbeContext.from_trainer(trainer))]))
    row = trainer.step()
    assert row["reward/self_check_ok"] == 1 and row["reward/self_check_total"] == 1.0  # bandit arm 0 pays 1
    assert row["reward/errors"] == 0 and row["reward/none"] == 0
    assert row["reward/reward/mean"] == pytest.approx(row["rewards/reward/mean"])
    assert row["reward/reward/variance_share"] == (0.0 if row["frac_reward_zero_std"] == 1.0 else 1.0)

    (tmp_path / "flaky_reward.py").write_text("def parse_reward(prompts, completions):\n    raise ValueError('cannot parse')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    trainer = build_trainer(tiny_config("reward=flaky_reward:parse_reward"))
    trainer.listeners.append(ProbeSet([RewardProbe(ProbeContext.from_trainer(trainer))]))
    with pytest.warns(UserWarning, match="cannot parse"):
        row = trainer.step()
    assert row["reward/errors"] == 8 and row["reward/none"] == 8 and row["reward/parse_reward/none"] == 8
    assert row["reward/parse_reward/variance_share"] == 0.0 and "reward/self_check_ok" not in row
