"""Reward probe: which reward components carry signal, do they fail, and does the scorer pass its own answer?

Reads record.reward_components ({name: [N] values, None = not scored}) and .reward_errors, and per
component reports mean, std, max, min, the share of batch values at its max and at its min, None counts,
and its share of the within-group variance (the part GRPO learns from). Once per run (first call, then
cached) it scores the first example's known-good reference with the task's own scorer: a total below the
task's maximum means the scorer rejects correct answers. Serves reward.no_signal, reward.component_dominance
and reward.parse_failures.
"""
from __future__ import annotations

import math

import torch

from flatline.probes.base import Probe

# |total - maximum| within this counts as the maximum: totals are sums of a few float weights (0.4 + 0.4 + 0.2).
SELF_CHECK_TOL = 1e-6


def scored_values(values: list) -> torch.Tensor:
    """The non-None values of one component as float64. [N] list -> [n]"""
    return torch.tensor([float(v) for v in values if v is not None], dtype=torch.float64)


def component_stats(values: list) -> dict:
    """mean, Bessel std, max, min, share of scored values at the max / at the min, and the None count."""
    scored = scored_values(values)
    out = {"none": sum(v is None for v in values)}
    if scored.numel():
        high, low = float(scored.max()), float(scored.min())
        out.update(mean=float(scored.mean()), std=float(scored.std()) if scored.numel() > 1 else 0.0,
                   max=high, min=low, frac_at_max=float((scored == high).double().mean()),
                   frac_at_min=float((scored == low).double().mean()))
    return out


def within_group_variance(values: list, num_generations: int) -> float:
    """Sum over groups of the population variance of the group's scored values (groups with < 2 add 0)."""
    total = 0.0
    for start in range(0, len(values), num_generations):
        group = scored_values(values[start:start + num_generations])
        if group.numel() > 1:
            total += float((group - group.mean()).pow(2).mean())
    return total


def variance_shares(components: dict[str, list], num_generations: int, weights: dict[str, float] | None = None) -> dict:
    """Each component's share of the summed within-group variance of weight * component.

    Weights (those the total was combined with; else 1) make a weight-0 component own nothing; covariance
    between components is ignored, so shares describe who varies, not an exact decomposition of the total's
    variance. When no component varies within any group the total is 0 and every share is 0: there is no
    variance to own (reward.no_signal reports that case).
    """
    weights = weights or {}
    variances = {name: weights.get(name, 1.0) ** 2 * within_group_variance(values, num_generations)
                 for name, values in components.items()}
    total = sum(variances.values())
    return {name: (v / total if total > 0 else 0.0) for name, v in variances.items()}


def reference_total(task, example) -> tuple[float | None, str | None]:
    """Score the example's known-good reference (text and ids) with the task: (total, None) or (None, error)."""
    try:
        components = task.score(example.reference, example, list(example.reference_ids))
        return float(task.total(components)), None
    except Exception as exc:  # the scorer is the thing under test: its failure is a finding, not a crash
        return None, f"{type(exc).__name__}: {exc}"


def task_scores_record(task, record) -> bool:
    """True when the step's reward components are the task's own (no plug-in `reward` replaced them)."""
    return task is not None and set(record.reward_components) == set(getattr(task, "components", ()))


def max_total(weights: dict[str, float]) -> float:
    """The largest total a completion can earn: every component at 1 (each is scored "higher is better" in [0, 1])."""
    return float(sum(w for w in weights.values() if w > 0))


def self_check(task, example) -> dict:
    """self_check_ok (1/0) and self_check_total (absent when scoring the reference raised)."""
    total, error = reference_total(task, example)
    if total is None:
        return {"self_check_ok": 0, "self_check_raised": 1}
    ok = math.isfinite(total) and total >= max_total(task.weights) - SELF_CHECK_TOL  # uncapped per-call terms: more
    return {"self_check_total": total, "self_check_ok": int(ok), "self_check_raised": 0}


class RewardProbe(Probe):
    """reward/*: per-component stats and variance shares, errors, None counts, and the reference self-check.

    The self-check applies only when the step was scored by the task's own components: with a plug-in `reward` the
    task's scorer is not what trains. Components weigh what the record says (record.reward_weights), else 1.
    """

    family = "reward"
    tier = "cheap"
    every = 1

    def __init__(self, context=None, every=None):
        super().__init__(context, every)
        self._self_check: dict | None = None

    def on_step(self, record) -> dict:
        components = record.reward_components
        uses_task = task_scores_record(self.context.task, record)
        out = {"errors": int(record.reward_errors), "none": 0}
        for name, values in components.items():
            stats = component_stats(values)
            out["none"] += stats["none"]
            out.update({f"{name}/{key}": value for key, value in stats.items()})
        G = self.context.num_generations
        N = len(next(iter(components.values()))) if components else 0
        if G and N and N % G == 0:
            shares = variance_shares(components, G, record.reward_weights)
            out.update({f"{name}/variance_share": share for name, share in shares.items()})
        if uses_task and self._self_check is None and record.examples:
            example = record.examples[0]
            if example.reference or example.reference_ids:
                self._self_check = self_check(self.context.task, example)
        out.update(self._self_check or {})
        return out
