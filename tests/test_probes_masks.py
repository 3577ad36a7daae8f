"""Mask probe: hand-built masks with known shares (prompt, padding, pad == eos) and the alignment re-score on
a real tiny trainer."""
import dataclasses
import math

import pytest
import torch

from flatline.probes.base import ProbeContext, ProbeSet
from flatline.probes.masks import (
    GAP_MARKER,
    MaskAlignmentProbe,
    MaskProbe,
    alignment_check,
    first_eos_lengths,
    full_sequence_view,
    loss_region_text,
    mask_stats,
    rescored_logprobs,
)
from flatline.trainer.algorithm import completion_mask
from flatline.trainer.rollout import Rollout
from flatline.trainer.samplers import SampleBatch, left_pad
from tests.conftest import step_once, tiny_config

PAD = EOS = 2  # the pad == eos trap
# row 0: 1 left pad + 3 prompt tokens, completion of 3 tokens ending in EOS, then 2 pads (== EOS)
# row 1: 4 prompt tokens, 5 completion tokens, no EOS (truncated)
PROMPT_IDS = torch.tensor([[PAD, 11, 12, 13], [14, 15, 16, 17]])
PROMPT_MASK = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
COMPLETION_IDS = torch.tensor([[21, 22, EOS, PAD, PAD], [23, 24, 25, 26, 27]])
LENGTHS = torch.tensor([3, 5])
RIGHT_MASK = completion_mask(COMPLETION_IDS, (EOS,))  # [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]: 8 tokens


def stats(completion_loss_mask, prompt_loss_mask=None, **kwargs):
    input_ids, loss_mask, prompt_lengths, start = full_sequence_view(PROMPT_IDS, PROMPT_MASK, COMPLETION_IDS,
                                                                     completion_loss_mask)
    if prompt_loss_mask is not None:  # a user's loop that trains on (part of) the prompt too
        loss_mask = torch.cat([prompt_loss_mask, completion_loss_mask], dim=1)
    kwargs.setdefault("completion_lengths", LENGTHS)
    return mask_stats(input_ids, loss_mask, prompt_lengths, start, PAD, (EOS,), **kwargs)


def test_healthy_mask_trains_on_completions_and_their_eos_only():
    s = stats(RIGHT_MASK)
    assert s == {"loss_tokens": 8, "loss_tokens_per_completion": 4.0, "prompt_frac": 0.0, "pad_frac": 0.0,
                 "env_frac": 0.0, "completion_excluded_frac": 0.0, "finished_frac": 0.5, "eos_in_loss_frac": 1.0}


def test_a_mask_a_token_late_or_stopping_a_token_early_leaves_completion_tokens_out():
    late = torch.tensor([[0, 1, 1, 0, 0], [0, 1, 1, 1, 1]])  # the first completion token never trained
    assert stats(late)["completion_excluded_frac"] == pytest.approx(2 / 6)  # of 2 + 4 tokens before the last
    early = torch.tensor([[1, 0, 1, 0, 0], [1, 1, 1, 0, 1]])
    assert stats(early)["completion_excluded_frac"] == pytest.approx(2 / 6)
    nothing = torch.tensor([[0, 0, 0, 0, 0], [1, 1, 1, 1, 1]])  # a row masked out whole (truncation masking) is a choice
    assert stats(nothing)["completion_excluded_frac"] == 0.0


def test_completion_lengths_are_found_from_the_first_eos_when_not_given():
    assert stats(RIGHT_MASK, completion_lengths=None) == stats(RIGHT_MASK)
    assert first_eos_lengths(COMPLETION_IDS, (EOS,), PAD).tolist() == [3, 5]
    # pad distinct from eos: a row without EOS ends at its first pad
    assert first_eos_lengths(torch.tensor([[5, 6, 0, 0], [5, 9, 6, 0]]), (9,), 0).tolist() == [2, 2]


def test_prompt_in_loss_share_is_prompt_tokens_over_all_loss_tokens():
    s = stats(RIGHT_MASK, prompt_loss_mask=PROMPT_MASK)  # 3 + 4 real prompt tokens, 8 completion tokens
    assert s["prompt_frac"] == pytest.approx(7 / 15) and s["pad_frac"] == 0.0 and s["loss_tokens"] == 15
    s = stats(RIGHT_MASK, prompt_loss_mask=torch.ones_like(PROMPT_MASK))  # every prompt column, left pad too
    assert s["prompt_frac"] == pytest.approx(7 / 16) and s["pad_frac"] == pytest.approx(1 / 16)


def test_padding_after_eos_in_loss_share_is_exact():
    s = stats(torch.ones_like(COMPLETION_IDS))  # row 0's two pads after its EOS are trained on
    assert s["pad_frac"] == pytest.approx(2 / 10) and s["prompt_frac"] == 0.0 and s["eos_in_loss_frac"] == 1.0


def test_pad_equal_to_eos_mask_drops_the_eos():
    wrong = (COMPLETION_IDS != PAD).long()  # the classic mask: "not padding" also drops the EOS when pad == eos
    s = stats(wrong)
    assert s["eos_in_loss_frac"] == 0.0 and s["pad_frac"] == 0.0 and s["loss_tokens"] == 7
    assert stats(RIGHT_MASK)["eos_in_loss_frac"] == 1.0


def test_no_finished_completion_leaves_eos_share_out():
    s = stats(RIGHT_MASK, completion_lengths=torch.tensor([2, 5]))  # row 0 cut before its EOS
    assert s["finished_frac"] == 0.0 and "eos_in_loss_frac" not in s


def test_env_tokens_share_and_empty_mask():
    env = torch.zeros(2, 9, dtype=torch.bool)
    env[1, 4 + 1] = True  # one tool-output token in row 1's completion
    assert stats(RIGHT_MASK, env_mask=env)["env_frac"] == pytest.approx(1 / 8)
    empty = stats(torch.zeros_like(COMPLETION_IDS))
    assert empty["loss_tokens"] == 0 and empty["prompt_frac"] == empty["pad_frac"] == 0.0
    assert empty["eos_in_loss_frac"] == 0.0


class FakeTokenizer:
    def decode(self, ids, skip_special_tokens=False):
        return " ".join(f"<{i}>" if i == EOS else f"t{i}" for i in ids)


def test_loss_region_text_shows_what_is_trained_with_gaps_marked():
    input_ids, loss_mask, _, _ = full_sequence_view(PROMPT_IDS, PROMPT_MASK, COMPLETION_IDS, RIGHT_MASK)
    assert loss_region_text(FakeTokenizer(), input_ids, loss_mask) == ["t21 t22 <2>", "t23 t24 t25 t26 t27"]
    loss_mask[1, 4 + 2] = 0  # a hole (an environment turn left out)
    loss_mask[0, 3] = 1  # the last prompt token trained on
    assert loss_region_text(FakeTokenizer(), input_ids, loss_mask, rows=2) == [
        "t13 t21 t22 <2>", f"t23 t24{GAP_MARKER}t26 t27"]


# --- alignment on a real tiny trainer ---

@pytest.fixture(scope="module")
def stepped():
    """A bandit trainer after one step whose update changed the weights, and that step's record."""
    trainer, record = step_once(tiny_config())
    return trainer, record, ProbeContext.from_trainer(trainer)


def test_real_record_mask_is_healthy(stepped):
    _, record, context = stepped
    s = MaskProbe(context).on_step(record)
    assert s["prompt_frac"] == s["pad_frac"] == s["env_frac"] == 0.0
    assert s["loss_tokens"] == int(record.completion_mask.sum())


def test_alignment_of_a_real_step_matches_and_the_off_by_one_does_not(stepped):
    trainer, record, context = stepped
    changed = max(float((record.pre_step_weights[n] - p.detach()).abs().max()) for n, p in trainer.trainable)
    assert changed > 1e-3  # the step moved the weights: the check must score with the pre-step ones
    rng, training = torch.get_rng_state(), record.model.training
    weights = {n: p.detach().clone() for n, p in trainer.trainable}
    row = ProbeSet([MaskProbe(context), MaskAlignmentProbe(context)]).on_step(record)
    assert row["masks/alignment_max_diff"] < 1e-4
    assert row["masks/alignment_shifted_diff"] > 0.1
    assert torch.equal(torch.get_rng_state(), rng) and record.model.training == training
    assert all(torch.equal(weights[n], p) for n, p in trainer.trainable)


def test_shifted_trainer_logprobs_are_flagged(stepped):
    _, record, context = stepped
    probe = MaskAlignmentProbe(context)
    rolled = dataclasses.replace(record, trainer_logprobs=torch.roll(record.trainer_logprobs, 1, dims=1))
    assert probe.on_step(rolled)["alignment_max_diff"] > 0.1
    with torch.no_grad():  # logprob at t taken from the logits that predict token t-1's position: off by one
        _, off_by_one = rescored_logprobs(record.model, record.prompt_ids[:2], record.prompt_mask[:2],
                                          record.completion_ids[:2],
                                          context.temperature, params=record.pre_step_weights)
    shifted = record.trainer_logprobs.clone()
    shifted[:2] = off_by_one
    result = probe.on_step(dataclasses.replace(record, trainer_logprobs=shifted))
    assert result["alignment_max_diff"] > 0.1 and result["alignment_shifted_diff"] < 1e-4
    assert probe.on_step(dataclasses.replace(record, pre_step_weights=None)) == {}


def test_alignment_with_left_padded_prompts_of_different_lengths(stepped):
    trainer, _, context = stepped
    G, T = trainer.cfg.num_generations, 5
    prompt_ids, prompt_mask = left_pad([[5, 6, 7, 8, 9, 10, 11], [12, 13, 14]], trainer.tokenizer.pad_token_id)
    generator = torch.Generator().manual_seed(0)
    completion_ids = torch.randint(100, 1000, (2 * G, T), generator=generator)
    samples = SampleBatch(prompt_ids.repeat_interleave(G, 0), prompt_mask.repeat_interleave(G, 0), completion_ids,
                          torch.zeros(2 * G, T), torch.full((2 * G,), T), torch.ones(2 * G, dtype=torch.bool))
    mask = torch.ones(2 * G, T, dtype=torch.long)
    rollout = Rollout([None, None], samples, mask, torch.full((2 * G,), T), [""] * 2 * G, torch.zeros(2 * G), {}, {},
                      0, torch.zeros(2 * G))
    trainer_logprobs = trainer.logprobs_no_grad(rollout, trainer.model)  # [N, T] the trainer's own path
    rows = torch.tensor([0, G])  # one row of each prompt length
    result = alignment_check(trainer.model, samples.prompt_ids[rows], samples.prompt_mask[rows], completion_ids[rows],
                             mask[rows], trainer_logprobs[rows], context.temperature)
    assert result["alignment_max_diff"] < 1e-4 and result["alignment_shifted_diff"] > 0.1
    assert math.isfinite(result["alignment_shifted_diff"])
