"""kl.*: does the KL penalty swamp the policy gradient, and is the policy running away from the reference."""
from __future__ import annotations

from flatline.diagnostics.hypotheses.common import (RECENT_MIN_POINTS, at_steps, progress, recent_part,
                                                     rise_not_ruled_out, signal_steps, solved, window_size)
from flatline.diagnostics.references import refs
from flatline.diagnostics.verdict import hypothesis

# The KL term "dominates" when it pulls on the logprobs harder than the policy-gradient term (over half of the
# summed per-token gradient coefficients). The loss values cannot tell: the policy term's value is ~0 on-policy
# whatever its gradient (TRL #3452), so policy/kl_loss_share reads ~1 on healthy runs.
KL_GRAD_SHARE_MAX = 0.5
# Per-token KL to the reference: GRPO runs with beta ~0.04 stay well under 1 nat/token; a significant rise that
# ends above it, without a matching reward gain, is the policy leaving the reference's support for nothing
# (rldoctor's kl_drift judges the trend the same way); with the reward rising it is the policy finding the answer.
KL_DRIFT_MAX = 1.0
# Half of that, still rising, is worth watching (rldoctor's kl_drift reports INFO from 0.5 nats/token).
KL_WATCH = 0.5


@hypothesis("kl.penalty_dominates", "does the KL term swamp the policy-gradient term?")
def penalty_dominates(h, v):
    beta = h.setting("beta")
    if beta is not None and float(beta) == 0:
        return v.passed("beta = 0: there is no KL term", {"beta": 0.0}, refs("kl_beta"))
    share = h.series("policy/kl_grad_share").finite()
    if not len(share):
        return v.skipped("needs flatline's policy probe with beta > 0 (policy/kl_grad_share)")
    signal = signal_steps(h)
    judged = at_steps(share, signal)
    if not len(judged):
        return v.skipped("no step had non-zero advantages, so only the KL term could pull (see advantage.degenerate_groups)")
    evidence = {"kl_grad_share_median": judged.median(), "beta": beta if beta is not None else "unknown"}
    if judged.median() > KL_GRAD_SHARE_MAX:
        return v.fail(f"the KL term supplies {judged.median():.0%} of the per-token gradient pull: the policy is held "
                      "at the reference", evidence,
                      f"lower beta (now {beta}) by 10x, or to 0 as DAPO and Dr. GRPO do", refs("kl_beta", "dapo"))
    return v.passed(f"the KL term supplies {judged.median():.0%} of the gradient pull", evidence, refs("kl_beta"))


@hypothesis("kl.drift", "is the policy running away from the reference (KL growing without bound)?")
def drift(h, v):
    kl = h.series("kl").finite()
    if not len(kl):
        if h.setting("beta") is not None and float(h.setting("beta")) == 0:
            return v.skipped("beta = 0: no reference model, so no kl is measured (set beta > 0 to track it)")
        return v.skipped("no kl in the log")
    trend, recent = kl.trend(), recent_part(kl).trend()
    last = kl.tail(window_size(len(kl))).median()
    evidence = {"kl_last": last, "kl_max": kl.max(), "kl_kendall_tau": trend.tau, "kl_kendall_p": trend.p_value}
    if recent.points >= RECENT_MIN_POINTS:
        evidence["kl_recent_kendall_tau"] = recent.tau
    # without bound: rising over the run and still rising in its recent part (a KL that levelled off is bounded)
    unbounded = trend.rising and (recent.rising or recent.points < RECENT_MIN_POINTS)
    p = progress(h)
    if unbounded and last > KL_DRIFT_MAX and solved(h, p):
        return v.passed(f"KL rose to {last:.3g} nats/token as the run reached the task's maximum: the policy moved to "
                        "what pays, as it should", {**evidence, **p.evidence(trend=False)}, refs("kl_beta"))
    if unbounded and last > KL_DRIFT_MAX:
        if p is not None:
            evidence.update(p.evidence(trend=False))
        prescription = ("raise beta (the KL weight) or lower learning_rate; read late samples for degenerate text; "
                        "if the reward keeps rising, check the held-out score (reward.hacking)")
        reason = f"KL to the reference is still rising and reached {last:.3g} nats/token"
        if p is not None and p.learning_now:
            return v.warn(reason + " while the reward rises: a policy this far from the reference, still moving "
                          "away, is one the KL term no longer holds", evidence, prescription, refs("kl_beta"))
        if p is not None and p.rising:
            return v.warn(reason + f" after the reward rose ({p.first:.3g} -> {p.last:.3g}) and has stopped rising: "
                          "the move bought reward so far; if the reward stays flat while KL climbs, the policy is "
                          "leaving the reference for nothing", evidence, prescription, refs("kl_beta"))
        # "no longer rising" needs the reward shown flat or falling: a gain the noise cannot rule out leaves it open
        if rise_not_ruled_out(h, p):
            return v.inconclusive(reason + f", and whether the reward still rises cannot be told yet ({p.first:.3g} "
                                  f"-> {p.last:.3g}, standard error {p.gain_se:.2g} on that change)", evidence,
                                  prescription, refs("kl_beta"))
        return v.fail(reason + (" with the reward no longer rising" if p is not None else ""), evidence,
                      prescription, refs("kl_beta"))
    if unbounded and last > KL_WATCH:
        return v.inconclusive(f"KL rising ({last:.3g} nats/token), still below {KL_DRIFT_MAX}", evidence,
                              "watch it on a longer run")
    if last > KL_DRIFT_MAX:
        return v.passed(f"KL {last:.3g} nats/token, high but levelled off", evidence)
    return v.passed(f"KL {last:.3g} nats/token, not running away", evidence)
