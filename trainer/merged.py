"""One global rollout from the ranks' rollouts, as one process would have built it on the same global batch.

    whole = merge_rollouts(gathered, pad_token_id)      # rank 0, after flatline.trainer.distributed.gather_to_main

Rows are concatenated in rank order (rank r holds the r-th block of prompts, so the order is the one process's).
Widths differ between ranks (each pads to its own longest prompt and completion): prompt-side tensors are padded on
the left, completion-side ones on the right, to the widest rank, with the pad id for token ids and 0 (False) for
masks and log-probabilities. Padded positions are outside every mask, so the probes read the same numbers; a tensor
over the prompt and the completion ([N, L+T], when a mask_fn trains prompt tokens) is padded in its two parts.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from flatline.trainer.rollout import Rollout
from flatline.trainer.samplers.base import SampleBatch


@dataclass
class StepTensors:
    """What backward leaves for the step record: trainer log-probabilities, entropy, and each micro-batch's loss
    parts (merged only once every rank's are in, as the one process merges its micro-batches)."""

    trainer_logprobs: torch.Tensor  # [n, T]
    entropy: torch.Tensor  # [n, T] or [n, L+T]
    loss_parts: list[dict]  # one per micro-batch


def pad_right(t: torch.Tensor, width: int, value=0) -> torch.Tensor:
    """[n, w] -> [n, width], `value` appended after each row."""
    return F.pad(t, (0, width - t.size(1)), value=value)


def pad_left(t: torch.Tensor, width: int, value=0) -> torch.Tensor:
    """[n, w] -> [n, width], `value` put before each row."""
    return F.pad(t, (width - t.size(1), 0), value=value)


def pad_joined(t: torch.Tensor, prompt_width: int, wide_prompt: int, wide_completion: int) -> torch.Tensor:
    """[n, L+T] (prompt positions first) -> [n, L'+T']: the prompt part padded left, the completion part right."""
    return torch.cat([pad_left(t[:, :prompt_width], wide_prompt), pad_right(t[:, prompt_width:], wide_completion)], 1)


def cat_rows(parts: list[torch.Tensor | None], pad) -> torch.Tensor | None:
    """Concatenate rank parts after padding each with `pad` (a function of one part); None when any part is None."""
    if any(p is None for p in parts):
        return None
    return torch.cat([pad(p) for p in parts])


def merge_samples(parts: list[SampleBatch], pad_token_id: int) -> SampleBatch:
    L = max(s.prompt_ids.size(1) for s in parts)
    T = max(s.completion_ids.size(1) for s in parts)
    return SampleBatch(
        prompt_ids=torch.cat([pad_left(s.prompt_ids, L, pad_token_id) for s in parts]),
        prompt_mask=torch.cat([pad_left(s.prompt_mask, L) for s in parts]),
        completion_ids=torch.cat([pad_right(s.completion_ids, T, pad_token_id) for s in parts]),
        sampler_logprobs=torch.cat([pad_right(s.sampler_logprobs, T) for s in parts]),
        completion_lengths=torch.cat([s.completion_lengths for s in parts]),
        truncated=torch.cat([s.truncated for s in parts]))


def completion_side(rollout: Rollout, L: int, T: int):
    """A padder for a [n, T] tensor of this rollout, or of [n, L+T] when its prompt tokens are in the loss."""
    prompt_width = rollout.samples.prompt_ids.size(1)

    def pad(t: torch.Tensor) -> torch.Tensor:
        if rollout.prompt_loss_mask is not None and t.size(1) == prompt_width + rollout.completion_mask.size(1):
            return pad_joined(t, prompt_width, L, T)
        return pad_right(t, T)
    return pad


def merge_rollouts(parts: list[Rollout], pad_token_id: int) -> Rollout:
    """The global rollout (see the module doc); one part comes back as it is."""
    if len(parts) == 1:
        return parts[0]
    samples = merge_samples([p.samples for p in parts], pad_token_id)
    L, T = samples.prompt_ids.size(1), samples.completion_ids.size(1)
    names = list(parts[0].reward_components)

    def joined(attribute: str) -> torch.Tensor | None:
        values = [getattr(p, attribute) for p in parts]
        if any(v is None for v in values):
            return None
        return torch.cat([completion_side(p, L, T)(v) for p, v in zip(parts, values)])

    prompt_loss = None
    if any(p.prompt_loss_mask is not None for p in parts):
        prompt_loss = torch.cat([pad_left(p.prompt_loss_mask, L) if p.prompt_loss_mask is not None else
                                 torch.zeros(len(p.completions), L, dtype=p.completion_mask.dtype) for p in parts])
    episodes = None if any(p.episodes is None for p in parts) else [e for p in parts for e in p.episodes]
    return Rollout(
        examples=[e for p in parts for e in p.examples], samples=samples,
        completion_mask=torch.cat([pad_right(p.completion_mask, T) for p in parts]),
        completion_lengths=torch.cat([p.completion_lengths for p in parts]),
        completions=[c for p in parts for c in p.completions],
        rewards=torch.cat([p.rewards for p in parts]),
        reward_components={name: [v for p in parts for v in p.reward_components[name]] for name in names},
        reward_weights=parts[0].reward_weights, reward_errors=sum(p.reward_errors for p in parts),
        advantages=torch.cat([p.advantages for p in parts]),
        old_logprobs=joined("old_logprobs"), ref_logprobs=joined("ref_logprobs"), prompt_loss_mask=prompt_loss,
        env_mask=cat_rows([p.env_mask for p in parts], lambda m: pad_right(m, T, False)), episodes=episodes)


def merge_step_tensors(parts: list[StepTensors], rollouts: list[Rollout], whole: Rollout) -> StepTensors:
    """The ranks' trainer log-probabilities, entropies and loss parts on the global rollout `whole`."""
    if len(parts) == 1:
        return parts[0]
    L, T = whole.samples.prompt_ids.size(1), whole.samples.completion_ids.size(1)
    return StepTensors(
        trainer_logprobs=torch.cat([pad_right(p.trainer_logprobs, T) for p in parts]),
        entropy=torch.cat([completion_side(r, L, T)(p.entropy) for p, r in zip(parts, rollouts)]),
        loss_parts=[part for p in parts for part in p.loss_parts])
