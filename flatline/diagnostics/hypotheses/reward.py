"""reward.*: is there within-group variance at all, does one component own it, does the scorer work, is it gamed."""
from __future__ import annotations

import math

from flatline.diagnostics.hypotheses.common import MIN_GAIN, enough_steps, progress
from flatline.diagnostics.references import refs
from flatline.diagnostics.verdict import hypothesis

# No signal: at least 80% of steps without a single group with reward variance (not counting steps where every
# group is at the maximum: that is a solved batch). The post-training-toolkit flags group_reward_std < 0.01
# sustained over 20 steps; on short runs we ask for 80% of the steps instead of a fixed 20.
NO_SIGNAL_STEPS_FRAC = 0.8
SOME_SIGNAL_STEPS_FRAC = 0.5
# A component is saturated when 95% of its scored values sit at one end (it never, or always, pays).
SATURATED_FRAC = 0.95
# A component "owns" the variance at 90% of the summed within-group variance.
OWNS_VARIANCE = 0.9
# Reward functions should not raise: 1% of completions unscorable is already a parser bug worth fixing.
ERROR_FRAC = 0.01


def _batch_size(h) -> float:
    groups, size = h.series("advantage/num_groups").last(), h.series("advantage/group_size").last()
    if math.isfinite(groups) and math.isfinite(size):
        return groups * size
    return float(h.setting("per_device_train_batch_size", math.nan))


@hypothesis("reward.no_signal", "is there any within-group reward variance at all?")
def no_signal(h, v):
    flat = h.series("advantage/zero_std_frac")
    if not len(flat):
        flat = h.series("frac_reward_zero_std")
    if not len(flat.finite()):
        return v.skipped("no advantage/zero_std_frac or frac_reward_zero_std in the log")
    all_max = h.series("advantage/zero_std_all_max_frac")
    p = progress(h)
    # a batch all at the maximum is "solved" only after the reward rose to it: a reward that is constant from the
    # start (or a plug-in whose maximum is unknown, so every flat group reads as all-max) is silent, not solved
    rose = p is not None and p.rising
    solved = {s for s, x in zip(all_max.steps, all_max.values) if x >= 1.0} if rose else set()
    judged = [(s, x) for s, x in zip(flat.steps, flat.values) if s not in solved and math.isfinite(x)]
    evidence = {"steps": len(flat), "solved_steps": len(solved)}
    if not judged:
        return v.passed("every step's groups were all at the maximum reward: solved, not silent", evidence)
    silent = sum(x >= 1.0 for _, x in judged) / len(judged)
    evidence["steps_without_variance_frac"] = silent
    std = h.series("reward_std")
    if len(std):
        evidence["reward_std_mean"] = std.mean()
    if silent >= NO_SIGNAL_STEPS_FRAC:
        return v.fail(f"{silent:.0%} of steps had no group with any reward variance: the advantages, and so the "
                      "gradient, are zero", evidence,
                      "check the reward on known-good and known-bad answers (a constant reward gives this); if it "
                      "scores correctly, the task is out of reach: easier prompts, more num_generations, partial credit",
                      refs("zero_std", "ptt_std"))
    if silent >= SOME_SIGNAL_STEPS_FRAC:
        return v.inconclusive(f"{silent:.0%} of steps had no reward variance in any group; the rest had some",
                              evidence, "raise num_generations so more groups see both outcomes", refs("ptt_std"))
    return v.passed(f"{1 - silent:.0%} of steps had reward variance within some group", evidence)


def _components(h) -> list[str]:
    names = h.names("reward/")
    return sorted({n[len("reward/"):-len("/variance_share")] for n in names if n.endswith("/variance_share")})


@hypothesis("reward.component_dominance", "does one reward component saturate or own all the variance?")
def component_dominance(h, v):
    components = _components(h)
    if not components:
        return v.skipped("needs flatline's reward probe (reward/<component>/variance_share)")
    if len(components) == 1:
        return v.passed(f"a single reward component ({components[0]}): nothing to dominate", {})
    evidence, saturated, shares = {}, [], {}
    for name in components:
        share = h.series(f"reward/{name}/variance_share").mean()
        at_min = h.series(f"reward/{name}/frac_at_min").mean()
        at_max = h.series(f"reward/{name}/frac_at_max").mean()
        lo, hi = h.series(f"reward/{name}/min").mean(), h.series(f"reward/{name}/max").mean()
        evidence.update({f"{name}/variance_share": share, f"{name}/frac_at_min": at_min, f"{name}/frac_at_max": at_max})
        constant = math.isfinite(lo) and math.isfinite(hi) and lo == hi
        if at_min >= SATURATED_FRAC and not (constant and lo > 0):
            saturated.append((name, "min", f"{name} sits at its minimum on {at_min:.0%} of completions"))
        elif at_max >= SATURATED_FRAC:
            saturated.append((name, "max", f"{name} sits at its maximum on {at_max:.0%} of completions"))
        if math.isfinite(share):
            shares[name] = share
    owner = max(shares, key=shares.get) if shares else None
    owns_all = owner is not None and shares[owner] >= OWNS_VARIANCE
    if not saturated and not owns_all:
        return v.passed("every component varies and none owns the variance", evidence)
    if len(saturated) == len(components):
        return v.passed("no component varies at all: the reward as a whole is silent (reward.no_signal), no single "
                        "component dominates", evidence)
    parts = [text for _, _, text in saturated]
    if owner is not None and (owns_all or saturated):
        parts.append(f"the reward moves mostly through {owner} ({shares[owner]:.0%} of the within-group variance)")
    never = [name for name, end, _ in saturated if end == "min"]
    always = [name for name, end, _ in saturated if end == "max"]
    advice = []
    if never:
        advice.append(f"{' and '.join(never)} (almost) never pay: confirm each gives a known-good answer full marks "
                      "(the reward self-check) and that the prompt states the format they check; if so, the model cannot earn "
                      "them yet: easier prompts, more num_generations, or a graded component that pays partial progress")
    if always:
        advice.append(f"{' and '.join(always)} always pay and teach nothing: drop them or lower their reward_weights")
    if owner is not None:
        advice.append(f"as it stands the run learns {owner}, not the task")
    return v.fail("; ".join(parts), evidence, "; ".join(advice), refs("rldoctor_composition"))


@hypothesis("reward.parse_failures", "do reward functions error, return None, or fail on known-good answers?")
def parse_failures(h, v):
    errors = h.series("reward/errors") if h.has("reward/errors") else h.series("rewards/errors")
    self_ok = h.series("reward/self_check_ok")
    if not len(errors) and not len(self_ok):
        return v.skipped("needs flatline's reward probe (reward/errors, reward/self_check_ok)")
    evidence, findings = {}, []
    batch = _batch_size(h)
    if len(errors):
        total = float(errors.values[errors.values == errors.values].sum())
        rate = total / (batch * len(errors)) if math.isfinite(batch) and batch > 0 else math.nan
        evidence.update(reward_errors_total=total, reward_error_frac=rate)
        if total > 0 and (not math.isfinite(rate) or rate >= ERROR_FRAC):
            findings.append(f"the reward raised on {total:.0f} completions ({rate:.1%})")
    none = h.series("rewards/unscored")
    if len(none) and math.isfinite(batch) and batch > 0:
        rate = float(none.values.sum()) / (batch * len(none))
        evidence["unscored_frac"] = rate
        if rate >= ERROR_FRAC:
            findings.append(f"{rate:.1%} of completions could not be scored (None from every component)")
    if len(self_ok):
        evidence["self_check_ok"] = self_ok.last()
        if self_ok.frac(lambda x: x < 1) > 0:
            total = h.series("reward/self_check_total").last()
            findings.append("the reward does not give full marks to the task's own reference answer"
                            + (f" (it scores {total:.3g})" if math.isfinite(total) else " (scoring it raised)"))
    if not findings:
        return v.passed("the reward scores every completion and gives the reference answer full marks", evidence)
    return v.fail("; ".join(findings), evidence,
                  "run the reward function on the reference answers and a few completions from samples.jsonl; "
                  "completions may arrive as chat message lists, not strings; return 0.0, not None or an exception, "
                  "for unparsable output", refs("parsing"))


# Reward hacking: train reward rising by at least MIN_GAIN while the held-out score gains less than a quarter of it.
HELD_OUT_SHARE = 0.25


@hypothesis("reward.hacking", "is training reward rising while a held-out score is flat or falling?")
def hacking(h, v):
    p = progress(h)
    if p is None or not enough_steps(h):
        return v.skipped("needs a reward series of at least 6 steps")
    if p.eval_points < 2:
        return v.skipped("needs a held-out score (eval/reward at two or more steps; set eval_every)")
    evidence = p.evidence()
    if not p.rising:
        return v.passed("training reward is not rising, so there is no gain to be gamed", evidence)
    if p.eval_gain >= max(HELD_OUT_SHARE * p.gain, MIN_GAIN / 2):
        return v.passed(f"held-out score rose with the training reward ({p.eval_first:.3g} -> {p.eval_last:.3g})",
                        evidence)
    if p.eval_points < 3:
        return v.inconclusive("training reward rose but the held-out score was measured only twice",
                              evidence, "evaluate more often (eval_every) or on more prompts (eval_size)")
    return v.fail(f"training reward rose ({p.first:.3g} -> {p.last:.3g}) while the held-out score did not "
                  f"({p.eval_first:.3g} -> {p.eval_last:.3g}): the reward is being gamed",
                  evidence, "read samples.jsonl for high-reward completions that are wrong; tighten the verifier "
                  "(exact answer extraction, format checks that cannot be satisfied by padding)", refs("hacking"))
