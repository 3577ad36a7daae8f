"""PolicyProbe on hand-built records (exact numbers) and on one real greedy tiny-trainer step with a KL term."""
import math

import pytest
import torch

from flatline.common.record import StepRecord
from flatline.probes.base import ProbeContext, ProbeSet
from flatline.probes.policy import PolicyProbe
from flatline.trainer.logprobs import token_entropy
from flatline.trainer.loop import build_trainer
from tests.conftest import tiny_config

V = 16  # vocabulary of the hand-built logits


def record(completions, entropy=None, mask=None, loss_parts=None):
    """A stand-in StepRecord: completions as token lists (right-padded with 0), entropy [N, T], loss mask [N, T]."""
    T = max(len(c) for c in completions)
    ids = torch.tensor([c + [0] * (T - len(c)) for c in completions])
    lengths = torch.tensor([len(c) for c in completions])
    if mask is None:
        mask = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).long()
    if entropy is None:
        entropy = token_entropy(torch.zeros(len(completions), T, V))  # uniform: log V everywhere
    return StepRecord(step=1, completion_ids=ids, completion_lengths=lengths, completion_mask=mask, entropy=entropy,
                      loss_parts=loss_parts or {"loss": 0.0})


def run(rec, G=4):
    return PolicyProbe(ProbeContext(num_generations=G)).on_step(rec)


DIVERSE = [[1, 2, 3], [4, 5], [1, 2, 4], [7], [3, 3], [3, 4], [5, 6, 7], [8, 9]]


def test_healthy_policy():
    out = run(record(DIVERSE))
    assert out["entropy_mean"] == pytest.approx(math.log(V)) and out["entropy_group_min"] == pytest.approx(math.log(V))
    assert out["identical_frac"] == 0.0 and out["duplicate_frac"] == 0.0
    assert "kl" not in out and "kl_loss_share" not in out  # beta = 0: no KL term


def test_greedy_sampling_gives_identical_groups():
    out = run(record([[1, 2, 3]] * 4 + [[5, 6]] * 4))
    assert out["identical_frac"] == 1.0 and out["duplicate_frac"] == 0.75  # (G - 1) / G


def test_duplicates_are_counted_per_group():
    # group 1: two copies of [1, 2] and two distinct; group 2: the same [9] as nothing in its own group
    out = run(record([[1, 2], [1, 2], [3], [4], [9], [8], [7], [6]]))
    assert out["identical_frac"] == 0.0 and out["duplicate_frac"] == 1 / 8
    # tokens past a completion's length (padding) do not make two completions differ
    padded = record([[1, 2]] * 4 + [[3]] * 4)
    padded.completion_ids[0, 1:] = 0
    padded.completion_lengths[0] = 1
    assert run(padded)["identical_frac"] == 0.5


def test_peaked_distribution_has_near_zero_entropy():
    logits = torch.zeros(8, 3, V)
    logits[..., 0] = 30.0  # nearly all mass on one token
    out = run(record(DIVERSE, entropy=token_entropy(logits)))
    assert out["entropy_mean"] < 1e-9 and out["entropy_group_min"] < 1e-9


def test_entropy_reads_loss_tokens_only_and_finds_the_lowest_group():
    entropy = torch.full((8, 3), 2.0)
    entropy[4:] = 0.5  # the second group is the low one
    entropy[:, 2] = 100.0  # past every completion's end: masked out
    mask = torch.tensor([[1, 1, 0]] * 8)
    out = run(record([[1, 2]] * 2 + [[3, 4], [5, 6]] + [[1, 1], [2, 2], [3, 3], [4, 4]], entropy=entropy, mask=mask))
    assert out["entropy_mean"] == pytest.approx(1.25) and out["entropy_group_min"] == pytest.approx(0.5)


def test_kl_penalty_swamping_the_policy_gradient():
    swamped = run(record(DIVERSE, loss_parts={"loss": 0.51, "kl": 5.0, "kl_loss": 0.5}))
    assert swamped["kl"] == 5.0 and swamped["kl_loss"] == 0.5 and swamped["pg_loss"] == pytest.approx(0.01)
    assert swamped["kl_loss_share"] == pytest.approx(0.5 / 0.51)
    healthy = run(record(DIVERSE, loss_parts={"loss": 0.2, "kl": 0.01, "kl_loss": 0.001}))
    assert healthy["kl_loss_share"] == pytest.approx(0.001 / 0.2)
    nothing = run(record(DIVERSE, loss_parts={"loss": 0.0, "kl": 0.0, "kl_loss": 0.0}))
    assert nothing["kl_loss_share"] == 0.0


def test_kl_gradient_share_needs_beta_and_reference_logprobs():
    rec = record([[1, 2]] * 4 + [[3]] * 4)
    mask = rec.completion_mask
    rec.trainer_logprobs = torch.zeros(8, 2)
    rec.ref_logprobs = torch.full((8, 2), math.log(0.5))  # |1 - exp(ref - logp)| = 0.5 per token
    rec.advantages = torch.tensor([1.0, -1.0] * 4)
    context = ProbeContext(num_generations=4)
    assert "kl_grad_share" not in PolicyProbe(context).on_step(rec)
    context.beta = 0.1
    tokens = float(mask.sum())  # 12: KL coefficient 0.05 per token, policy coefficient 1 per token
    assert PolicyProbe(context).on_step(rec)["kl_grad_share"] == pytest.approx(0.05 * tokens / (1.05 * tokens))
    context.beta = 100.0
    assert PolicyProbe(context).on_step(rec)["kl_grad_share"] == pytest.approx(50 / 51)


def test_the_record_is_not_changed():
    rec = record(DIVERSE)
    before = [t.clone() for t in (rec.entropy, rec.completion_mask, rec.completion_ids)]
    run(rec)
    after = (rec.entropy, rec.completion_mask, rec.completion_ids)
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_on_a_real_greedy_trainer_step_with_kl():
    trainer = build_trainer(tiny_config("temperature=0", "beta=0.1"))
    context = ProbeContext.from_trainer(trainer)
    context.beta = trainer.cfg.beta
    trainer.listeners.append(ProbeSet([PolicyProbe(context)]))
    row = trainer.step()
    assert row["policy/identical_frac"] == 1.0 and row["policy/duplicate_frac"] == 0.75
    assert row["policy/entropy_mean"] == pytest.approx(row["entropy"]) and row["policy/entropy_group_min"] > 0
    assert row["policy/kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference before any update
    assert 0.0 <= row["policy/kl_loss_share"] <= 1.0 and row["policy/kl_loss"] == pytest.approx(row["kl_loss"])
    assert row["policy/kl_grad_share"] == pytest.approx(0.0, abs=1e-6)  # ref == policy: the KL term pulls nowhere
