"""GRPO as small pure functions over tensors. N = completions (prompts x G), T = completion tokens, V = vocabulary.

Each function is a plug point's default (advantage_fn, mask_fn, loss_fn) and follows TRL's GRPOTrainer
(trl 1.16, grpo_trainer.py) unless a comment says where and why it departs.
"""
from __future__ import annotations

import torch

from flatline.common.groups import group_moments

# TRL adds 1e-4 to the std before dividing (grpo_trainer.py: `advantages / (std_rewards + 1e-4)`).
DEFAULT_ADVANTAGE_EPS = 1e-4


def group_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str = "group",
                     eps: float = DEFAULT_ADVANTAGE_EPS) -> torch.Tensor:
    """Reward minus its group mean, divided by the group (or batch) std; NaN rewards (unscorable) get 0.

    rewards: [N] with N = prompts * num_generations, the completions of a prompt adjacent.
    The std is Bessel-corrected (ddof=1) as TRL's nanstd. Computed in float64 (flatline.common.groups), and a group
    whose rewards are all equal gets exactly zero advantages, even at eps = 0.
    """
    moments = group_moments(rewards, num_generations)
    if scale_rewards == "group":
        advantages = moments.centered / (moments.std.unsqueeze(1) + eps)  # [P, G]
    elif scale_rewards == "batch":
        values = rewards.detach().double()[~torch.isnan(rewards)]
        std = values.std() if values.numel() > 1 else torch.zeros((), dtype=values.dtype)
        advantages = moments.centered / (std + eps)
    elif scale_rewards == "none":
        advantages = moments.centered
    else:
        raise ValueError(f"scale_rewards must be group, batch or none, got {scale_rewards!r}")
    zero = moments.flat.unsqueeze(1) | ~moments.valid  # [P, G]
    advantages = torch.where(zero, torch.zeros_like(advantages), advantages)
    return advantages.view(-1).to(rewards.dtype)  # [N]


def completion_mask(completion_ids: torch.Tensor, eos_token_ids: list[int] | tuple[int, ...]) -> torch.Tensor:
    """1 for each completion token up to and including the first EOS, 0 after it (padding).

    completion_ids: [N, T] right-padded. A row without EOS (truncated) is kept whole. The mask is found from
    the first EOS, never from the pad id, so it stays right when pad == eos.
    Returns [N, T] int64.
    """
    T = completion_ids.size(1)
    is_eos = torch.isin(completion_ids, torch.as_tensor(list(eos_token_ids), device=completion_ids.device))  # [N, T]
    first_eos = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1), torch.full_like(is_eos[:, 0], T, dtype=torch.long))  # [N]
    positions = torch.arange(T, device=completion_ids.device).unsqueeze(0)  # [1, T]
    return (positions <= first_eos.unsqueeze(1)).long()  # [N, T]


def kl_k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference) (Schulman), >= 0. [N, T] -> [N, T]"""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values where mask is 1 (0 when the mask is empty). [N, T], [N, T] -> []"""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
                loss_type: str = "dapo", epsilon_low: float = 0.2, epsilon_high: float = 0.2, beta: float = 0.0,
                ref_logps: torch.Tensor | None = None, max_completion_length: int = 1,
                num_items_in_batch: int | None = None, gradient_accumulation_steps: int = 1):
    """The clipped GRPO surrogate (+ beta * k3 KL) of one micro-batch, aggregated as TRL's loss_type.

    logps, old_logps, ref_logps, mask: [N, T]; advantages: [N].
    grpo: mean over each sequence's tokens, then over sequences; bnpo: mean over the micro-batch's tokens;
    dr_grpo: sum / (N * max_completion_length); dapo: sum / num_items_in_batch (tokens of the whole
    accumulated batch, so micro-batches add up to one token mean). All but dapo are divided by
    gradient_accumulation_steps, so the returned loss is exactly what to backpropagate.
    Returns (loss [], parts: dict of detached scalars for logging).
    """
    mask = mask.to(logps.dtype)
    ratio = torch.exp(logps - old_logps)  # [N, T]
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)  # [N, T]
    adv = advantages.unsqueeze(1)  # [N, 1]
    per_token = -torch.min(ratio * adv, clipped * adv)  # [N, T]
    kl = None
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta != 0 needs ref_logps")
        kl = kl_k3(logps, ref_logps)  # [N, T]
        per_token = per_token + beta * kl
    loss = aggregate(per_token, mask, loss_type, max_completion_length, num_items_in_batch, gradient_accumulation_steps)

    with torch.no_grad():
        low = (ratio < 1 - epsilon_low) & (adv < 0)
        high = (ratio > 1 + epsilon_high) & (adv > 0)
        parts = {
            "loss": loss.detach() * (1 if loss_type == "dapo" else gradient_accumulation_steps),
            "clip_ratio/low_mean": masked_mean(low.to(logps.dtype), mask),
            "clip_ratio/high_mean": masked_mean(high.to(logps.dtype), mask),
            "clip_ratio/region_mean": masked_mean((low | high).to(logps.dtype), mask),
        }
        if kl is not None:
            kl_part = aggregate(beta * kl, mask, loss_type, max_completion_length, num_items_in_batch, 1)
            parts["kl"] = masked_mean(kl, mask)
            parts["kl_loss"] = kl_part.detach()
    return loss, parts


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str, max_completion_length: int,
              num_items_in_batch: int | None, gradient_accumulation_steps: int) -> torch.Tensor:
    """Reduce a [N, T] per-token loss to a scalar as loss_type says (see policy_loss)."""
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (per_token.size(0) * max_completion_length)
    elif loss_type == "dapo":
        total = mask.sum() if num_items_in_batch is None else torch.as_tensor(float(num_items_in_batch))
        return (per_token * mask).sum() / total.clamp(min=1.0)
    else:
        raise ValueError(f"loss_type must be grpo, bnpo, dr_grpo or dapo, got {loss_type!r}")
    return loss / gradient_accumulation_steps
