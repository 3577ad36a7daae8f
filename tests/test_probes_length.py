"""LengthProbe on hand-built rollouts (exact numbers) and on one real tiny-trainer step with a 2-token budget."""

import pytest
import torch

from flatline.common.record import StepRecord
from flatline.probes.base import ProbeContext, ProbeSet
from flatline.probes.length import LengthProbe, reward_by_truncation
from flatline.trainer.loop import build_trainer
from tests.conftest import tiny_config


def record(lengths, truncated, prompt_lengths):
    """A stand-in StepRecord: completion lengths, truncation flags and left-padded prompt masks."""
    width = max(prompt_lengths)
    prompt_mask = torch.tensor([[0] * (width - n) + [1] * n for n in prompt_lengths])
    return StepRecord(step=1, completion_lengths=torch.tensor(lengths), truncated=torch.tensor(truncated),
                      prompt_mask=prompt_mask)


def run(rec, max_completion_length=8, max_prompt_length=512, context_length=2048):
    ctx = ProbeContext(num_generations=2, max_completion_length=max_completion_length,
                       max_prompt_length=max_prompt_length, context_length=context_length)
    return LengthProbe(ctx).on_step(rec)


def test_healthy_lengths():
    out = run(record([3, 5, 2, 8], [False, False, False, True], [4, 4, 6, 6]))
    assert (out["mean"], out["min"], out["max"]) == (4.5, 2.0, 8.0)
    assert out["p90"] == pytest.approx(7.1)  # linear interpolation in [2, 3, 5, 8]
    assert out["truncated_frac"] == 0.25
    assert out["terminated_mean"] == pytest.approx(10 / 3) and out["terminated_max"] == 5.0
    assert out["prompt_mean"] == 5.0 and out["prompt_max"] == 6.0
    assert out["prompt_limit_frac"] == pytest.approx(6 / 512) and out["context_overflow_frac"] == 0.0


def test_every_completion_truncated():
    out = run(record([2, 2, 2, 2], [True] * 4, [4] * 4), max_completion_length=2)
    assert out["truncated_frac"] == 1.0 and out["terminated_mean"] == 0.0 and out["terminated_max"] == 0.0
    assert out["mean"] == 2.0 and out["p90"] == 2.0


def test_prompt_plus_budget_over_the_context():
    out = run(record([3, 3, 3, 3], [False] * 4, [30, 30, 10, 10]), max_completion_length=8, max_prompt_length=20,
              context_length=32)
    assert out["context_overflow_frac"] == 0.5  # 30 + 8 > 32, 10 + 8 <= 32
    assert out["prompt_limit_frac"] == 1.5  # a 30-token prompt against max_prompt_length 20


def test_unknown_limits_are_skipped():
    out = LengthProbe(ProbeContext()).on_step(record([3, 4], [False, False], [5, 5]))
    assert "prompt_limit_frac" not in out and "context_overflow_frac" not in out and out["prompt_max"] == 5.0


def test_on_a_real_trainer_step_with_a_two_token_budget():
    trainer = build_trainer(tiny_config("max_completion_length=2"))
    trainer.listeners.append(ProbeSet([LengthProbe(ProbeContext.from_trainer(trainer))]))
    row = trainer.step()
    rollout = trainer.last_rollout
    assert row["length/truncated_frac"] == float(rollout.samples.truncated.float().mean()) == row["completions/clipped_ratio"]
    truncated = rollout.samples.truncated
    if truncated.any():
        assert row["length/truncated_reward_mean"] == pytest.approx(float(rollout.rewards[truncated].double().mean()))
    assert row["length/truncated_frac"] == 1.0  # this seed samples no EOS in 2 tokens
    assert row["length/max"] == 2.0 and row["length/mean"] == row["completions/mean_length"]
    prompt = float(rollout.samples.prompt_mask.sum(dim=1).max())
    assert row["length/prompt_max"] == prompt and row["length/prompt_limit_frac"] == pytest.approx(prompt / 512)
    assert row["length/context_overflow_frac"] == 0.0  # tiny-random has 2048 positions


def test_reward_of_truncated_and_terminated_completions():
    out = reward_by_truncation(torch.tensor([0.0, 1.0, float("nan"), 1.0]), torch.tensor([True, False, True, False]))
    assert out == {"truncated_reward_mean": 0.0, "terminated_reward_mean": 1.0}  # the NaN (unscored) row left out
    assert reward_by_truncation(torch.tensor([1.0, 0.0]), torch.tensor([False, False])) == {"terminated_reward_mean": 0.5}
