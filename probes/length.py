"""Length probe: are completions cut at the limit, and do prompts plus the completion budget fit the context?

Reads record.completion_lengths ([N] tokens up to and including EOS), record.truncated ([N] bool)
and record.prompt_mask ([N, L]), and the limits in the probe context (max_completion_length,
max_prompt_length, context_length). Serves length.truncation (with the mean reward of truncated and of terminated completions) and
length.context_overflow; length.growth
reads the `mean` history.
"""
from __future__ import annotations

import torch

from flatline.probes.base import Probe

# The tail quantile reported as p90 (TRL logs mean/min/max only; a long tail hides in the mean).
TAIL_QUANTILE = 0.9


def completion_length_stats(lengths: torch.Tensor, truncated: torch.Tensor) -> dict:
    """Completion length mean/min/max/p90, truncated fraction, and mean/max of the terminated (non-truncated) ones.

    The terminated stats are 0.0 when every completion was truncated (TRL's convention for
    completions/mean_terminated_length; a terminated completion holds its EOS, so 0 cannot be a real length).
    """
    lengths = lengths.detach().double().reshape(-1)  # [N]
    truncated = truncated.detach().bool().reshape(-1)  # [N]
    if lengths.numel() == 0:
        return {}
    terminated = lengths[~truncated]
    return {
        "mean": float(lengths.mean()), "min": float(lengths.min()), "max": float(lengths.max()),
        "p90": float(torch.quantile(lengths, TAIL_QUANTILE)),
        "truncated_frac": float(truncated.double().mean()),
        "terminated_mean": float(terminated.mean()) if terminated.numel() else 0.0,
        "terminated_max": float(terminated.max()) if terminated.numel() else 0.0,
    }


def prompt_length_stats(prompt_mask: torch.Tensor, max_prompt_length: int | None, max_completion_length: int | None,
                        context_length: int | None) -> dict:
    """Prompt length mean/max, max prompt / max_prompt_length, and the fraction of rows whose prompt plus the
    full completion budget exceeds the context (the model would be asked for positions it has no embedding for)."""
    prompt_lengths = prompt_mask.detach().sum(dim=1).double()  # [N]
    if prompt_lengths.numel() == 0:
        return {}
    out = {"prompt_mean": float(prompt_lengths.mean()), "prompt_max": float(prompt_lengths.max())}
    if max_prompt_length:
        out["prompt_limit_frac"] = out["prompt_max"] / max_prompt_length
    if max_completion_length is not None and context_length:
        overflow = prompt_lengths + max_completion_length > context_length  # [N]
        out["context_overflow_frac"] = float(overflow.double().mean())
    return out


class LengthProbe(Probe):
    """length/*: completion lengths and truncation, prompt lengths against their limit and the context."""

    family = "length"
    tier = "cheap"
    every = 1

    def on_step(self, record) -> dict:
        ctx, out = self.context, {}
        if record.completion_lengths is not None and record.truncated is not None:
            out.update(completion_length_stats(record.completion_lengths, record.truncated))
            if record.rewards is not None:
                out.update(reward_by_truncation(record.rewards, record.truncated))
        if record.prompt_mask is not None:
            out.update(prompt_length_stats(record.prompt_mask, ctx.max_prompt_length, ctx.max_completion_length,
                                           ctx.context_length))
        return out


def reward_by_truncation(rewards: torch.Tensor, truncated: torch.Tensor) -> dict:
    """Mean reward of the truncated and of the terminated completions (each absent when there are none, NaN
    rewards left out): whether the length limit costs reward, or only cuts text the reward does not need."""
    rewards = rewards.detach().double().reshape(-1)  # [N]
    truncated = truncated.detach().bool().reshape(-1)  # [N]
    scored = torch.isfinite(rewards)
    out = {}
    for name, rows in (("truncated_reward_mean", truncated & scored), ("terminated_reward_mean", ~truncated & scored)):
        if rows.any():
            out[name] = float(rewards[rows].mean())
    return out
