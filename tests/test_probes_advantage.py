"""AdvantageProbe on hand-built rollouts (exact numbers) and on one real tiny-trainer step."""
import math
from types import SimpleNamespace

import pytest
import torch

from flatline.common.record import StepRecord
from flatline.probes.advantage import AdvantageProbe, group_reward_stats
from flatline.probes.base import ProbeContext, ProbeSet
from flatline.trainer.algorithm import group_advantages
from flatline.trainer.loop import build_trainer
from tests.conftest import tiny_config


def record(rewards, advantages=None, G=4, components=None):
    """A stand-in StepRecord with what the advantage probe reads."""
    rewards = torch.tensor(rewards, dtype=torch.float32)
    advantages = group_advantages(rewards, G) if advantages is None else torch.as_tensor(advantages, dtype=torch.float32)
    return StepRecord(step=1, rewards=rewards, advantages=advantages, examples=[],
                      reward_components=components or {"reward": rewards.tolist()})


def run(rec, G=4, task=None):
    return AdvantageProbe(ProbeContext(num_generations=G, task=task)).on_step(rec)


def test_healthy_groups():
    out = run(record([1, 0, 0, 0, 1, 1, 0, 0]))
    assert out["group_size"] == 4 and out["num_groups"] == 2 and out["group_size_ok"] == 1
    assert out["reward_std_min"] == pytest.approx(0.5) and out["reward_std_max"] == pytest.approx(math.sqrt(1 / 3))
    assert out["reward_std_mean"] == pytest.approx((0.5 + math.sqrt(1 / 3)) / 2)
    assert out["zero_std_frac"] == 0.0 and out["zero_std_all_max_frac"] == 0.0 and out["zero_std_other_frac"] == 0.0
    assert out["group_sum_max_abs"] < 1e-6
    assert out["zero_frac"] == 0.0 and out["nonfinite_rewards"] == 0 and out["nonfinite_advantages"] == 0
    assert out["abs_max"] == pytest.approx(0.75 / (0.5 + 1e-4), rel=1e-6)
    assert out["near_zero_std_nonzero_adv"] == 0


def test_every_group_at_the_maximum_or_at_the_minimum():
    all_max = run(record([1.0] * 8))
    assert all_max["zero_std_frac"] == 1.0 and all_max["zero_std_all_max_frac"] == 1.0
    assert all_max["zero_std_all_min_frac"] == 0.0 and all_max["zero_frac"] == 1.0
    all_min = run(record([0.0] * 8))
    assert all_min["zero_std_frac"] == 1.0 and all_min["zero_std_all_min_frac"] == 1.0
    assert all_min["zero_std_all_max_frac"] == 0.0 and all_min["reward_std_max"] == 0.0


def test_zero_std_split_max_min_other():
    out = run(record([1] * 4 + [0] * 4 + [0.5] * 4 + [1, 0, 1, 0]))
    assert out["zero_std_frac"] == 0.75
    assert (out["zero_std_all_max_frac"], out["zero_std_all_min_frac"], out["zero_std_other_frac"]) == (0.25, 0.25, 0.25)


class FakeTask:
    components = ("correct", "format")
    weights = {"correct": 0.8, "format": 0.2}

    def score(self, completion, example, completion_ids):
        return {"correct": 1.0, "format": 1.0}

    def total(self, components):
        return sum(self.weights[k] * v for k, v in components.items())


def test_the_ceiling_is_the_task_reference_when_the_task_scores_the_rollout():
    rewards = [0.2] * 8  # every completion formatted, none correct
    components = {"correct": [0.0] * 8, "format": [1.0] * 8}
    rec = record(rewards, components=components)
    rec.examples = [SimpleNamespace(reference="42", reference_ids=())]
    with_task = run(rec, task=FakeTask())
    assert with_task["reward_ceiling"] == 1.0 and with_task["zero_std_other_frac"] == 1.0
    assert with_task["zero_std_all_max_frac"] == 0.0
    without_task = run(rec)  # no task: the batch maximum is all we know
    assert without_task["reward_ceiling"] == pytest.approx(0.2) and without_task["zero_std_all_max_frac"] == 1.0


def test_float32_trap_is_counted():
    rewards = torch.full((8,), 1.350639, dtype=torch.float32)
    trl_advantages = (rewards - rewards.mean()) / (rewards.std() + 1e-4)  # TRL's formula, in float32
    assert (trl_advantages.abs() > 5e-4).all()  # about -1.2e-3, not 0
    out = run(record(rewards.tolist(), trl_advantages, G=8), G=8)
    assert out["near_zero_std_nonzero_adv"] == 1
    assert out["reward_std_max"] == 0.0 and out["zero_std_frac"] == 1.0 and out["zero_frac"] == 0.0
    assert out["abs_max"] == pytest.approx(float(trl_advantages.abs().max()))
    fixed = run(record(rewards.tolist(), G=8), G=8)  # the trainer's float64 advantages
    assert fixed["near_zero_std_nonzero_adv"] == 0 and fixed["zero_frac"] == 1.0


def test_batch_normalised_advantages_do_not_sum_to_zero_per_group():
    rewards = torch.tensor([1.0] * 4 + [0.0] * 4)
    batch = (rewards - rewards.mean()) / rewards.std()  # whole-batch normalisation, the wrong grouping
    out = run(record(rewards.tolist(), batch))
    # each group: 4 * 0.5 / sqrt(2/7) = sqrt(14)
    assert out["group_sum_max_abs"] == pytest.approx(math.sqrt(14), rel=1e-6)
    assert out["near_zero_std_nonzero_adv"] == 2  # both groups are flat yet get advantages


def test_non_finite_values_are_counted():
    advantages = group_advantages(torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0]), 4)
    advantages[1] = math.nan
    advantages[6] = math.inf
    out = run(record([1, math.nan, 0, 0, 1, 1, 0, 0], advantages))
    assert out["nonfinite_rewards"] == 1 and out["nonfinite_advantages"] == 2
    assert math.isfinite(out["group_sum_max_abs"]) and math.isfinite(out["abs_max"])


def test_group_size_unknown_or_not_dividing():
    no_group = run(record([1, 0, 1, 0, 1, 0], advantages=torch.zeros(6)), G=None)
    assert "zero_std_frac" not in no_group and "group_size" not in no_group and no_group["zero_frac"] == 1.0
    ragged = run(record([1, 0, 1, 0, 1, 0], advantages=torch.zeros(6)), G=4)
    assert ragged["group_size_ok"] == 0 and "num_groups" not in ragged


def test_group_std_ignores_unscored_completions():
    std, flat, common = group_reward_stats(torch.tensor([1.0, 1.0, math.nan, 1.0, math.nan] + [math.nan] * 3), 4)
    assert std.tolist() == [0.0, 0.0] and flat.tolist() == [True, True]
    assert common[0] == 1.0 and math.isnan(common[1])


def test_the_record_is_not_changed():
    rec = record([1, 0, math.nan, 0, 1, 1, 0, 0])
    before = (rec.rewards.clone(), rec.advantages.clone())
    run(rec)
    assert torch.equal(rec.rewards.nan_to_num(-1), before[0].nan_to_num(-1))
    assert torch.equal(rec.advantages, before[1])


def test_on_a_real_trainer_step():
    trainer = build_trainer(tiny_config("seed=1"))
    trainer.listeners.append(ProbeSet([AdvantageProbe(ProbeContext.from_trainer(trainer))]))
    row = trainer.step()
    assert row["advantage/group_size"] == 4 and row["advantage/num_groups"] == 2
    assert row["advantage/zero_std_frac"] == pytest.approx(row["frac_reward_zero_std"])
    assert row["advantage/reward_std_mean"] == pytest.approx(row["reward_std"])
    assert row["advantage/reward_ceiling"] == 1.0  # the bandit's reference (arm 0) scores 1
    assert row["advantage/group_sum_max_abs"] < 1e-5 and row["advantage/near_zero_std_nonzero_adv"] == 0
    assert row["advantage/nonfinite_advantages"] == 0 and 0.0 <= row["advantage/zero_frac"] <= 1.0
