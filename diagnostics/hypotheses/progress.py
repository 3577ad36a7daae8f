"""progress.plateau: has the reward (or the held-out score) stopped improving while steps continue?"""
from __future__ import annotations

import math

import numpy as np

from flatline.diagnostics.history import MIN_TREND_POINTS
from flatline.diagnostics.hypotheses.common import (MIN_GAIN, NOISE_Z, enough_steps, flat_groups, near_ceiling, progress,
                                                  recent_part, reward_fall, reward_range)
from flatline.diagnostics.references import refs
from flatline.diagnostics.verdict import hypothesis

# Calling a plateau needs a run long enough to have one: below 10 steps a flat reward is "too early to tell".
PLATEAU_MIN_STEPS = 10
# A stall is called on evidence that the recent third is flat, not on a trend test that failed to find a rise (a slow
# gain under batch noise fails it too): the recent gain's upper bound (its slope plus STALL_Z standard errors) must
# stay below STALL_SHARE of what the rate before it would have bought over the same steps.
STALL_SHARE = 0.5
STALL_Z = 2.0
# Most recent groups all-equal: the flat reward is explained (the prompts the policy can learn are learned, the rest
# carry no signal), which advantage.degenerate_groups names; a stall is a reward that stops while signal remains.
SIGNAL_LEFT_FRAC = 0.5


@hypothesis("progress.plateau", "has reward (or held-out score) stopped improving while steps continue?")
def plateau(h, v):
    p = progress(h)
    if p is None:
        return v.skipped("no reward in the log")
    evidence = p.evidence()
    if not enough_steps(h):
        return v.skipped(f"only {h.steps} steps; a trend needs at least {MIN_TREND_POINTS}", evidence)
    if p.stalled and p.gain >= MIN_GAIN and not p.eval_rising_recently and not near_ceiling(h, p):
        stall = _stall_evidence(h)
        if stall is not None:
            evidence.update(stall)
            if stall["recent_gain_upper"] < STALL_SHARE * stall["gain_at_earlier_rate"]:
                if stall.get("flat_groups_recent", 0.0) >= SIGNAL_LEFT_FRAC:
                    return v.passed(f"the reward rose ({p.first:.3g} -> {p.last:.3g}) and has been flat since step "
                                    f"{p.recent_start:.0f}, with {stall['flat_groups_recent']:.0%} of recent groups "
                                    "all-equal: what the policy can learn on these prompts is learned (see "
                                    "advantage.degenerate_groups)", evidence)
                return _stall(p, evidence, v)
    if p.rising:
        how = (f"Kendall tau {p.trend.tau:.2f} (p = {p.trend.p_value:.3f})" if p.trend.rising
               else f"mean reward {p.first:.3g} -> {p.last:.3g}")
        return v.passed(f"reward is rising: {how}", evidence, refs("plateau"))
    if p.eval_rising:
        return v.passed(f"the held-out score rose {p.eval_first:.3g} -> {p.eval_last:.3g}", evidence)
    if p.at_ceiling:
        return v.passed(f"reward is at the task's maximum ({p.last:.3g} of {p.ceiling:.3g}): solved", evidence)
    if near_ceiling(h, p) and reward_fall(h) is None:
        bounds = reward_range(h)
        return v.passed(f"the reward stays at the top of its range ({p.first:.3g} -> {p.last:.3g}, range "
                        f"{bounds.low:.3g}-{bounds.high:.3g} from {bounds.source}): a run that starts near its ceiling "
                        "has no room to rise, so a flat reward is not a plateau", evidence)
    if h.steps < PLATEAU_MIN_STEPS:
        return v.inconclusive(f"no reward gain yet ({p.first:.3g} -> {p.last:.3g}), but {h.steps} steps are too few "
                              "to call a plateau", evidence, f"train for at least {PLATEAU_MIN_STEPS} steps")
    falling = p.trend.falling
    if not falling and p.gain + NOISE_Z * p.gain_se >= MIN_GAIN:
        return v.inconclusive(f"no clear reward gain yet ({p.first:.3g} -> {p.last:.3g} over {h.steps} steps), but the "
                              f"batch-to-batch noise (standard error {p.gain_se:.2g} on that change) cannot rule out "
                              f"a gain of {MIN_GAIN}", evidence, "train longer, or with more prompts per batch")
    return v.fail(("reward is falling" if falling else "reward is flat") +
                  f": {p.first:.3g} -> {p.last:.3g} over {h.steps} steps (Kendall tau {p.trend.tau:.2f}, "
                  f"p = {p.trend.p_value:.2f}, gain below {MIN_GAIN})", evidence,
                  "the failed hypotheses above name the likeliest cause; with none, train longer or raise "
                  "learning_rate, and compare with the control task (control.learns)", refs("plateau"))


def _stall_evidence(h) -> dict | None:
    """The recent third's gain (Theil-Sen, with an upper bound from the least-squares slope's standard error) against
    the gain the earlier part's rate would have bought over the same steps; None when either part is too short."""
    reward = h.series("reward").finite()
    recent = recent_part(reward)
    earlier = reward.head(len(reward) - len(recent))
    if len(recent) < 3 or len(earlier) < MIN_TREND_POINTS:
        return None
    x, y = recent.steps.astype(float), recent.values
    spread = float(np.sum((x - x.mean()) ** 2))
    if spread <= 0:
        return None
    slope_ls = float(np.sum((x - x.mean()) * (y - y.mean())) / spread)
    residual = y - y.mean() - slope_ls * (x - x.mean())
    slope_se = math.sqrt(float(np.sum(residual ** 2)) / (len(y) - 2) / spread)
    span = float(x[-1] - x[0])
    out = {"recent_gain": recent.trend().slope * span,
           "recent_gain_upper": (max(recent.trend().slope, slope_ls) + STALL_Z * slope_se) * span,
           "gain_at_earlier_rate": max(earlier.trend().slope, 0.0) * span}
    flat = recent_part(flat_groups(h).finite())
    if len(flat):
        out["flat_groups_recent"] = flat.median()
    return out


def _stall(p, evidence: dict, v):
    """The reward rose early, then stayed flat for the whole recent third: learning has stopped."""
    reason = (f"the reward rose ({p.first:.3g} -> {p.last:.3g}) but has been flat since step {p.recent_start:.0f} "
              f"(the last third of the run: Kendall tau {p.recent.tau:.2f}, p = {p.recent.p_value:.2f}), short of the "
              "task's maximum")
    return v.warn(reason + ": the steps since then are not buying progress", evidence,
                  "look at the entropy, kl and advantage verdicts for what stopped it (exploration gone, groups "
                  "without signal, a policy pinned or running away); otherwise stop the run here, or continue with "
                  "harder prompts or a lower learning_rate", refs("plateau"))
