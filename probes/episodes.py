"""episodes/*: how multi-turn episodes ended and where their reward came from (record.episodes; skipped without).

- outcome/<name>: share of episodes ending each way (flatline.trainer.episodes.outcomes; names repeated here since a
  probe imports only flatline.common); early_end_frac: context_full + env_budget_exhausted;
- infra_frac: grader_error + tool_error + timeout; infra_scored_frac: those that still got a finite reward (scored
  as if the model had failed; `episodes.infra_scored_as_reward`);
- tool_calls_per_episode, tool_call_fail_rate: malformed or failed calls / attempted calls (absent when no call
  was attempted), parse_error_rate: malformed / attempted;
- per_call_share: the per-call terms' share of the reward's absolute mass, per_call_variance_share: their share of
  the within-group variance (what GRPO learns from), outcome_mean: the outcome term's mean;
- env_tokens_in_loss: environment tokens the loss trains on (count; masks/env_frac has their share);
- template_break_frac: share of tool turns where re-rendering the conversation changed earlier tokens;
- policy_lag_max: optimizer steps between the policy that sampled an episode and the step that trains on it.
"""
from __future__ import annotations

import math

import torch

from flatline.probes.base import Probe

OUTCOMES = ("finished", "max_turns", "context_full", "env_budget_exhausted", "tool_error", "timeout", "grader_error")
INFRA = ("tool_error", "timeout", "grader_error")
EARLY = ("context_full", "env_budget_exhausted")


def group_variance(values: list[float], size: int) -> float:
    """Sum over groups of `size` of the population variance of the finite values."""
    total = 0.0
    for start in range(0, len(values), size):
        group = [v for v in values[start:start + size] if v is not None and math.isfinite(v)]
        if len(group) > 1:
            mean = sum(group) / len(group)
            total += sum((v - mean) ** 2 for v in group) / len(group)
    return total


def episode_stats(episodes: list[dict], rewards, weights: dict, num_generations: int) -> dict:
    n = len(episodes)
    out = {f"outcome/{name}": sum(e["outcome"] == name for e in episodes) / n for name in OUTCOMES}
    out["early_end_frac"] = sum(out[f"outcome/{name}"] for name in EARLY)
    out["infra_frac"] = sum(out[f"outcome/{name}"] for name in INFRA)
    finite = [math.isfinite(float(r)) for r in rewards]
    out["infra_scored_frac"] = sum(e["outcome"] in INFRA and ok for e, ok in zip(episodes, finite)) / n
    attempted = sum(e["calls_ok"] + e["calls_failed"] + e["parse_errors"] for e in episodes)
    out["tool_calls_per_episode"] = attempted / n
    if attempted:
        out["tool_call_fail_rate"] = sum(e["calls_failed"] + e["parse_errors"] for e in episodes) / attempted
        out["parse_error_rate"] = sum(e["parse_errors"] for e in episodes) / attempted
    outcome = [e["outcome_term"] for e in episodes]
    calls = [e["call_term"] for e in episodes]
    w_out, w_call = weights.get("outcome", 1.0), weights.get("tool_calls", 1.0)
    mass_out = sum(abs(w_out * v) for v in outcome if v is not None)
    mass_call = sum(abs(w_call * v) for v in calls if v is not None)
    if mass_out + mass_call > 0:
        out["per_call_share"] = mass_call / (mass_out + mass_call)
    var_out = w_out ** 2 * group_variance(outcome, num_generations)
    var_call = w_call ** 2 * group_variance(calls, num_generations)
    if var_out + var_call > 0:
        out["per_call_variance_share"] = var_call / (var_out + var_call)
    scored = [v for v in outcome if v is not None]
    if scored:
        out["outcome_mean"] = sum(scored) / len(scored)
    turns_with_env = sum(max(0, e["turns"] - 1) for e in episodes)
    out["template_break_frac"] = sum(e["template_breaks"] for e in episodes) / turns_with_env if turns_with_env else 0.0
    out["turns_mean"] = sum(e["turns"] for e in episodes) / n
    return out


class EpisodeProbe(Probe):
    """episodes/*: outcomes, tool-call failures, reward shares and environment tokens in the loss of a multi-turn step."""

    family = "episodes"
    tier = "cheap"

    def on_step(self, record) -> dict | None:
        episodes = record.episodes
        if not episodes or record.rewards is None:
            return None
        G = self.context.num_generations or len(episodes)
        out = episode_stats(episodes, record.rewards.tolist(), record.reward_weights or {}, G)
        out["policy_lag_max"] = max(record.step - 1 - e["policy_step"] for e in episodes)
        if record.env_mask is not None and record.completion_mask is not None:
            loss = record.completion_mask.bool()  # [N, T] the completion part of the loss mask
            out["env_tokens_in_loss"] = int((loss & record.env_mask.bool()).sum())
            out["env_tokens"] = int(record.env_mask.sum())
        return out
