"""Sync probe: exact hand-built cases, a real in-sync trainer, and a sampler scoring with different weights."""
import copy
import dataclasses
import math

import pytest
import torch

from flatline.common.record import StepRecord
from flatline.probes.base import ProbeContext
from flatline.probes.sync import SyncProbe, sync_stats
from tests.conftest import step_once, tiny_config

NAMES = {"logprob_slope", "log_ratio_mean", "logprob_diff_mean", "logprob_diff_max", "probs_diff_mean", "probs_diff_max", "k3_kl", "is_weight_mean",
         "is_weight_min", "is_weight_max", "ess"}


def test_identical_logprobs_agree_exactly():
    logps = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.1, 0.7, 0.3]]))
    s = sync_stats(logps, logps.clone(), torch.ones(2, 3))
    assert set(s) == NAMES
    assert s["logprob_diff_mean"] == s["logprob_diff_max"] == s["probs_diff_max"] == s["k3_kl"] == 0.0
    assert s["is_weight_mean"] == s["is_weight_min"] == s["is_weight_max"] == 1.0 and s["ess"] == 1.0


def test_one_token_with_log_ratio_one_gives_the_exact_ess():
    sampler = torch.full((2, 2), -1.0)
    trainer = sampler + torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # sequence weights e and 1
    s = sync_stats(sampler, trainer, torch.ones(2, 2))
    e = math.e
    assert s["ess"] == pytest.approx((e + 1) ** 2 / (2 * (e * e + 1)))
    assert s["logprob_diff_mean"] == pytest.approx(0.25) and s["logprob_diff_max"] == pytest.approx(1.0)
    assert s["is_weight_mean"] == pytest.approx((e + 3) / 4) and s["is_weight_max"] == pytest.approx(e)
    assert s["is_weight_min"] == pytest.approx(1.0)
    assert s["k3_kl"] == pytest.approx((e - 1 - 1) / 4)  # exp(1) - 1 - 1 on one token of four
    assert s["probs_diff_max"] == pytest.approx(math.exp(0) - math.exp(-1))


def test_masked_positions_and_empty_rows_are_ignored_and_huge_ratios_do_not_overflow():
    sampler = torch.zeros(3, 3)
    trainer = torch.tensor([[-1000.0, 5.0, 7.0], [0.0, 9.0, 9.0], [3.0, 3.0, 3.0]])  # garbage where masked
    mask = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 0, 0]])  # row 2 has no loss token: left out of the ESS
    s = sync_stats(sampler, trainer, mask)
    assert s["ess"] == pytest.approx(0.5)  # weights e^-1000 and 1: one of two sequences carries everything
    assert s["logprob_diff_max"] == 1000.0 and math.isfinite(s["k3_kl"])
    assert sync_stats(sampler, trainer, torch.zeros(3, 3)) == {}


def test_later_passes_over_a_rollout_are_skipped():
    logps = torch.zeros(1, 2)
    record = StepRecord(step=1, iteration=1, sampler_logprobs=logps, completion_mask=torch.ones(1, 2),
                        trainer_logprobs=logps + 1)
    assert SyncProbe().on_step(record) == {}
    record.iteration = 0
    assert SyncProbe().on_step(record)["logprob_diff_max"] == 1.0


@pytest.fixture(scope="module")
def stepped():
    return step_once(tiny_config("temperature=0.7"))


def test_real_sampler_and_trainer_are_in_sync(stepped):
    trainer, record = stepped
    s = SyncProbe(ProbeContext.from_trainer(trainer)).on_step(record)
    assert s["logprob_diff_max"] < 1e-4 and s["ess"] > 0.999


def test_sampler_scoring_with_other_weights_is_flagged(stepped):
    trainer, record = stepped
    stale = copy.deepcopy(record.model)  # the sampler's copy: the step's weights, perturbed
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in stale.named_parameters():
            base = record.pre_step_weights.get(name, p)
            p.copy_(base + 0.3 * base.std() * torch.randn(p.shape, generator=generator))
    sampler_logprobs = trainer.logprobs_no_grad(trainer.last_rollout, stale) * record.completion_mask
    bad = dataclasses.replace(record, sampler_logprobs=sampler_logprobs)
    s = SyncProbe(ProbeContext.from_trainer(trainer)).on_step(bad)
    assert s["logprob_diff_mean"] > 0.05 and s["ess"] < 1


def test_log_ratio_mean_is_positive_only_for_logprobs_before_temperature():
    torch.manual_seed(0)
    logits = torch.randn(64, 8, 50) * 3
    tokens = torch.distributions.Categorical(logits=logits / 0.7).sample()
    raw = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    processed = torch.log_softmax(logits / 0.7, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    mask = torch.ones(64, 8)
    assert sync_stats(processed, processed.clone(), mask)["logprob_slope"] == pytest.approx(1.0)
    raw_vs_processed = sync_stats(raw, processed, mask)  # sampler raw, trainer after temperature
    assert raw_vs_processed["log_ratio_mean"] > 0.05  # +KL(p_T || p_1)
    stale_logits = logits + torch.randn_like(logits)  # a sampler with other weights, reporting its own logprobs
    stale_tokens = torch.distributions.Categorical(logits=stale_logits / 0.7).sample()
    own = torch.log_softmax(stale_logits / 0.7, -1).gather(-1, stale_tokens.unsqueeze(-1)).squeeze(-1)
    trainer = torch.log_softmax(logits / 0.7, -1).gather(-1, stale_tokens.unsqueeze(-1)).squeeze(-1)
    assert sync_stats(own, trainer, mask)["log_ratio_mean"] < 0  # -KL(sampler || trainer)


def test_tracking_is_one_when_synced_and_zero_when_stale():
    from flatline.probes.staleness import tracking_stats

    torch.manual_seed(1)
    initial = -torch.rand(16, 10) * 3
    current = initial + 0.2 * torch.randn(16, 10)
    mask = torch.ones(16, 10)
    noise = 0.01 * torch.randn(16, 10)
    synced = tracking_stats(current + noise, current, initial, mask)
    stale = tracking_stats(initial + noise, current, initial, mask)
    assert synced["tracking"] == pytest.approx(1.0, abs=0.05) and synced["tracking_se"] < 0.05
    assert stale["tracking"] == pytest.approx(0.0, abs=0.05)
    assert tracking_stats(initial, initial.clone(), initial, mask) == {}  # the policy has not moved: nothing to read


def test_environment_tokens_in_the_loss_are_not_read_as_a_sampler_mismatch():
    # a multi-turn transcript: the tool's tokens (env_mask) have no sampler logprob (0), yet a mask_fn put them in
    # the loss; the sync numbers read the model's own tokens only
    trainer = torch.log(torch.tensor([[0.5, 0.2, 0.1, 0.5], [0.4, 0.3, 0.2, 0.4]]))
    env = torch.tensor([[False, True, True, False], [False, True, True, False]])
    sampler = torch.where(env, torch.zeros_like(trainer), trainer)
    record = StepRecord(step=1, iteration=0, sampler_logprobs=sampler, trainer_logprobs=trainer,
                        completion_mask=torch.ones(2, 4, dtype=torch.long), env_mask=env)
    s = SyncProbe().on_step(record)
    assert s["logprob_diff_max"] == 0.0 and s["is_weight_mean"] == 1.0
    record.env_mask = None  # without the environment mask the same tokens read as a mismatch
    assert SyncProbe().on_step(record)["logprob_diff_max"] > 1.0


def test_stale_weights_rows_are_spread_over_prompts():
    from flatline.probes.staleness import spread_rows

    assert spread_rows(32, 8).tolist() == [0, 8, 16, 24]  # one completion of each of the first 4 prompts
    assert spread_rows(16, 8).tolist() == [0, 8, 1, 9]  # two prompts: two completions of each
    assert spread_rows(10, 8).tolist() == [0, 1, 2, 3] and spread_rows(3, None).tolist() == [0, 1, 2]
