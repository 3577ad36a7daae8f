"""Statistics of reward groups, in float64: the G completions of a prompt are adjacent (rows i*G .. i*G+G-1).

The trainer's advantages and the probes that check them use these same definitions. NaN rewards (a completion
no reward component could score) are left out of their group.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GroupMoments:
    valid: torch.Tensor  # [P, G] bool: the reward is not NaN
    count: torch.Tensor  # [P, 1] valid rewards per group
    centered: torch.Tensor  # [P, G] reward minus the group's mean of valid rewards, 0 where invalid
    std: torch.Tensor  # [P] Bessel std of the valid rewards, exactly 0 where they are all equal
    flat: torch.Tensor  # [P] bool: fewer than two valid rewards, or all of them equal


def group_moments(rewards: torch.Tensor, num_generations: int) -> GroupMoments:
    """Mean-centred rewards and the Bessel (ddof=1, as TRL's nanstd) std of each group. rewards: [N], N = P * G.

    A group whose valid rewards are all equal has std exactly 0: in float32, 1.350639 repeated has a std near 1.2e-7,
    not 0, and would otherwise be read as a group with signal.
    """
    grouped = rewards.detach().double().view(-1, num_generations)  # [P, G]
    valid = ~torch.isnan(grouped)
    count = valid.sum(dim=1, keepdim=True)  # [P, 1]
    filled = torch.where(valid, grouped, torch.zeros_like(grouped))
    mean = filled.sum(dim=1, keepdim=True) / count.clamp(min=1)  # [P, 1]
    centered = torch.where(valid, grouped - mean, torch.zeros_like(grouped))  # [P, G]
    std = (centered.pow(2).sum(dim=1) / (count.squeeze(1) - 1).clamp(min=1)).sqrt()  # [P]
    flat = group_spread(grouped, valid) == 0
    return GroupMoments(valid, count, centered, torch.where(flat, torch.zeros_like(std), std), flat)


def group_spread(grouped: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """max - min of each group's valid values; 0 for groups with fewer than two. [P, G] -> [P]"""
    high = torch.where(valid, grouped, torch.full_like(grouped, -torch.inf)).amax(dim=1)
    low = torch.where(valid, grouped, torch.full_like(grouped, torch.inf)).amin(dim=1)
    return torch.where(valid.sum(dim=1) > 1, high - low, torch.zeros_like(high))


def group_reward_std(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Bessel std of each group's valid rewards, exactly 0 where they are all equal. [N] -> [P] float64"""
    return group_moments(rewards, num_generations).std
