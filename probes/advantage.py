"""Advantage probe: is there anything to learn from this batch, and did the advantages come out right?

Reads record.rewards and record.advantages ([N], N = P groups x G completions, rows i*G .. i*G+G-1 share a
prompt) and reports, per step: how many groups have no reward variance (split into all at the ceiling,
all at the floor, and other), the spread of the per-group reward std, whether each group's advantages sum to
~0, non-finite values, the |advantage| distribution, and groups whose std is float noise but whose advantages
are not exactly 0 (the float32 trap). Group metrics are skipped when the group size is unknown or does not
divide N. Serves advantage.degenerate_groups and advantage.numerics.

Everything is computed in float64 from the record's tensors; nothing is written back.
"""
from __future__ import annotations

import math

import torch

from flatline.common.groups import group_moments
from flatline.probes.base import Probe
from flatline.probes.reward import reference_total, task_scores_record

# A group whose reward std is below this is "zero variance up to float32 noise": float32 keeps ~7 significant
# digits, and 8 float32 copies of 1.350639 have a float32 std of 1.19e-7, not 0 (docs/failure-catalogue.md,
# "Float32 advantage trap"); dividing by std + 1e-4 turns that into advantages of about -1e-3 instead of 0.
NEAR_ZERO_STD = 1e-6
# Relative tolerance for "the group's common reward is the ceiling / floor": rewards are float32 (~7 digits),
# the ceiling (a Python float total) is not rounded the same way.
VALUE_RTOL = 1e-6
# Quantiles of |advantage| reported as abs_p50 / abs_p90.
QUANTILES = (0.5, 0.9)


def grouped(values: torch.Tensor, num_generations: int) -> torch.Tensor | None:
    """[N] -> [P, G] in float64, or None when G does not divide N (or N == 0)."""
    n = values.numel()
    if num_generations is None or num_generations < 1 or n == 0 or n % num_generations:
        return None
    return values.detach().double().reshape(-1, num_generations)


def group_reward_stats(rewards: torch.Tensor, num_generations: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per group: Bessel std of the valid (non-NaN) rewards, whether they are all equal, and their common value.

    The std is the trainer's own (flatline.common.groups): exactly 0 where the valid rewards are all equal, and for
    a group with fewer than two valid rewards (no within-group variance to learn from).
    The common value is the group's highest valid reward, or NaN when it has none.
    Returns (std [P], flat [P] bool, common [P]); rewards must be groupable (see `grouped`).
    """
    moments = group_moments(rewards, num_generations)
    group = grouped(rewards, num_generations)  # [P, G]
    high = torch.where(moments.valid, group, torch.full_like(group, -math.inf)).amax(dim=1)
    common = torch.where(moments.valid.any(dim=1), high, torch.full_like(high, math.nan))  # [P], meaningful where flat
    return moments.std, moments.std == 0, common


def classify_flat_groups(flat: torch.Tensor, common: torch.Tensor, ceiling: float, floor: float) -> dict:
    """Counts of flat groups whose common value is the ceiling, the floor, or neither.

    The ceiling wins only when it is above the floor; a batch whose every reward is the same value at or below 0
    has ceiling == floor and its groups count as all at the floor (nothing earned). A group with no scored
    reward (common value NaN) counts as other.
    """
    def near(value: torch.Tensor, target: float) -> torch.Tensor:
        return (value - target).abs() <= VALUE_RTOL * max(1.0, abs(target))

    at_max = flat & near(common, ceiling) & torch.tensor(ceiling > floor)
    at_min = flat & ~at_max & near(common, floor)
    return {"all_max": int(at_max.sum()), "all_min": int(at_min.sum()), "other": int((flat & ~at_max & ~at_min).sum())}


def reward_bounds(rewards: torch.Tensor, task_max: float | None) -> tuple[float, float]:
    """(ceiling, floor) of the reward for the all-max / all-min split.

    Ceiling: the task's own maximum (its reference answer's total) when known, else the batch's highest finite
    reward; the batch maximum also wins when a completion beat the reference. Floor: 0 (nothing earned) or the
    batch minimum when a reward went below 0.
    """
    finite = rewards.detach().double()[torch.isfinite(rewards)]
    batch_max = float(finite.max()) if finite.numel() else 0.0
    batch_min = float(finite.min()) if finite.numel() else 0.0
    ceiling = batch_max if task_max is None else max(task_max, batch_max)
    return ceiling, min(0.0, batch_min)


def advantage_distribution(advantages: torch.Tensor) -> dict:
    """Fraction exactly 0, non-finite count, and |advantage| mean / p50 / p90 / max over the finite values."""
    adv = advantages.detach().double().reshape(-1)  # [N]
    finite = adv[torch.isfinite(adv)].abs()
    out = {"zero_frac": float((adv == 0).double().mean()) if adv.numel() else 0.0,
           "nonfinite_advantages": int((~torch.isfinite(adv)).sum())}
    if finite.numel():
        p50, p90 = torch.quantile(finite, torch.tensor(QUANTILES, dtype=finite.dtype)).tolist()
        out.update(abs_mean=float(finite.mean()), abs_p50=p50, abs_p90=p90, abs_max=float(finite.max()))
    return out


def mixed_prompt_groups(prompt_ids, prompt_mask, group_ids, num_generations: int) -> float | None:
    """Share of groups (rows i*G .. i*G+G-1) whose rows do not all share one prompt: their real prompt tokens
    differ, or (without prompt tokens) their group ids do. None when the record has neither."""
    if prompt_ids is not None:
        rows = prompt_ids.shape[0]
        if rows % num_generations:
            return None
        real = prompt_ids.masked_fill(~prompt_mask.bool(), -1) if prompt_mask is not None else prompt_ids
        grouped_rows = real.reshape(rows // num_generations, num_generations, -1)  # [P, G, L]
        same = (grouped_rows == grouped_rows[:, :1]).all(dim=2).all(dim=1)  # [P]
        return float((~same).float().mean())
    if group_ids is not None and len(group_ids) % num_generations == 0:
        blocks = [group_ids[i:i + num_generations] for i in range(0, len(group_ids), num_generations)]
        return sum(len(set(block)) > 1 for block in blocks) / len(blocks)
    return None


def group_metrics(rewards: torch.Tensor, advantages: torch.Tensor, num_generations: int,
                  task_max: float | None = None) -> dict:
    """Everything per group: std spread, zero-std split, advantage sums, float-noise std with non-zero advantages."""
    std, flat, common = group_reward_stats(rewards, num_generations)  # [P] each
    adv = grouped(advantages, num_generations)  # [P, G]
    P = std.numel()
    ceiling, floor = reward_bounds(rewards, task_max)
    split = classify_flat_groups(flat, common, ceiling, floor)
    # a group's advantages should sum to ~0 (mean-centred per group); non-finite ones are counted elsewhere
    sums = torch.where(torch.isfinite(adv), adv, torch.zeros_like(adv)).sum(dim=1)  # [P]
    near_zero = std < NEAR_ZERO_STD
    nonzero_adv = (adv != 0).any(dim=1)  # NaN != 0 too
    return {
        "num_groups": P,
        "reward_std_mean": float(std.mean()), "reward_std_min": float(std.min()), "reward_std_max": float(std.max()),
        "zero_std_frac": float(flat.double().mean()),
        "zero_std_all_max_frac": split["all_max"] / P,
        "zero_std_all_min_frac": split["all_min"] / P,
        "zero_std_other_frac": split["other"] / P,
        "reward_ceiling": ceiling, "reward_floor": floor,
        "group_sum_max_abs": float(sums.abs().max()),
        "near_zero_std_nonzero_adv": int((near_zero & nonzero_adv).sum()),
    }


class AdvantageProbe(Probe):
    """advantage/*: degenerate groups and advantage numerics, from record.rewards and record.advantages.

    The ceiling of the all-max split is the task's reference total (scored once, on the first call) when the
    step is scored by the task's own components; with a plug-in reward it is the batch maximum.
    """

    family = "advantage"
    tier = "cheap"
    every = 1

    def __init__(self, context=None, every=None):
        super().__init__(context, every)
        self._task_max: float | None = None
        self._task_max_tried = False

    def task_max(self, record) -> float | None:
        task = self.context.task
        if not task_scores_record(task, record):
            return None
        if not self._task_max_tried and record.examples:
            self._task_max_tried = True
            example = record.examples[0]
            if example.reference or example.reference_ids:  # no known-good answer: the batch maximum it is
                self._task_max, _ = reference_total(task, example)
        return self._task_max

    def on_step(self, record) -> dict:
        rewards, advantages = record.rewards, record.advantages  # [N], [N]
        if rewards is None or advantages is None:
            return {}
        G = self.context.num_generations
        out = {"nonfinite_rewards": int((~torch.isfinite(rewards)).sum()), **advantage_distribution(advantages)}
        if G is None:
            return out
        out["group_size"] = G
        out["group_size_ok"] = int(rewards.numel() % G == 0 and advantages.numel() == rewards.numel())
        if out["group_size_ok"] and rewards.numel():
            out.update(group_metrics(rewards, advantages, G, self.task_max(record)))
            mixed = mixed_prompt_groups(record.prompt_ids, record.prompt_mask, record.group_ids, G)
            if mixed is not None:
                out["mixed_prompt_groups_frac"] = mixed
        return out
