"""progress.plateau: has the reward (or the held-out score) stopped improving while steps continue?"""
from __future__ import annotations

from flatline.diagnostics.history import MIN_TREND_POINTS
from flatline.diagnostics.hypotheses.common import MIN_GAIN, enough_steps, progress
from flatline.diagnostics.references import refs
from flatline.diagnostics.verdict import hypothesis

# Calling a plateau needs a run long enough to have one: below 10 steps a flat reward is "too early to tell".
PLATEAU_MIN_STEPS = 10


@hypothesis("progress.plateau", "has reward (or held-out score) stopped improving while steps continue?")
def plateau(h, v):
    p = progress(h)
    if p is None:
        return v.skipped("no reward in the log")
    evidence = p.evidence()
    if not enough_steps(h):
        return v.skipped(f"only {h.steps} steps; a trend needs at least {MIN_TREND_POINTS}", evidence)
    if p.stalled and not p.eval_rising_recently:
        return _stall(p, evidence, v)
    if p.rising:
        how = (f"Kendall tau {p.trend.tau:.2f} (p = {p.trend.p_value:.3f})" if p.trend.rising
               else f"mean reward {p.first:.3g} -> {p.last:.3g}")
        return v.passed(f"reward is rising: {how}", evidence, refs("plateau"))
    if p.eval_rising:
        return v.passed(f"the held-out score rose {p.eval_first:.3g} -> {p.eval_last:.3g}", evidence)
    if p.at_ceiling:
        return v.passed(f"reward is at the task's maximum ({p.last:.3g} of {p.ceiling:.3g}): solved", evidence)
    if h.steps < PLATEAU_MIN_STEPS:
        return v.inconclusive(f"no reward gain yet ({p.first:.3g} -> {p.last:.3g}), but {h.steps} steps are too few "
                              "to call a plateau", evidence, f"train for at least {PLATEAU_MIN_STEPS} steps")
    falling = p.trend.falling
    return v.fail(("reward is falling" if falling else "reward is flat") +
                  f": {p.first:.3g} -> {p.last:.3g} over {h.steps} steps (Kendall tau {p.trend.tau:.2f}, "
                  f"p = {p.trend.p_value:.2f}, gain below {MIN_GAIN})", evidence,
                  "the failed hypotheses above name the likeliest cause; with none, train longer or raise "
                  "learning_rate, and compare with the control task (control.learns)", refs("plateau"))


def _stall(p, evidence: dict, v):
    """The reward rose early, then stayed flat for the whole recent third: learning has stopped."""
    reason = (f"the reward rose ({p.first:.3g} -> {p.last:.3g}) but has been flat since step {p.recent_start:.0f} "
              f"(the last third of the run: Kendall tau {p.recent.tau:.2f}, p = {p.recent.p_value:.2f}), short of the "
              "task's maximum")
    return v.warn(reason + ": the steps since then are not buying progress", evidence,
                  "look at the entropy, kl and advantage verdicts for what stopped it (exploration gone, groups "
                  "without signal, a policy pinned or running away); otherwise stop the run here, or continue with "
                  "harder prompts or a lower learning_rate", refs("plateau"))
