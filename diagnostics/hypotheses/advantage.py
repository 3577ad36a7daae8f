"""advantage.*: groups with no reward variance (and whether they sit at the max or the min), advantage numerics."""
from __future__ import annotations

import math

from flatline.diagnostics.hypotheses.common import (RECENT_MIN_POINTS, SPARSE_START, all_correct_share, at_top,
                                                  collapsed_from_a_high, flat_groups, optimizer_steps, policy_moved,
                                                  progress, recent_part, reward_fall, reward_level, reward_range,
                                                  solved, sustained_from, waiting_for_first_rewards, window_size)
from flatline.diagnostics.references import refs
from flatline.diagnostics.verdict import hypothesis

# "Most groups": at or above half of the groups flat over the run, half the batch adds no gradient (TRL #3857;
# DAPO's dynamic sampling exists to filter exactly these groups).
DEGENERATE_FRAC = 0.5
# From a third of the groups flat, the wasted share of the batch is worth a look (inconclusive).
DEGENERATE_WARN_FRAC = 1 / 3
# A kind of flat group (all-max or all-min) "dominates" when it makes up two thirds of the flat groups.
DOMINANT_SHARE = 2 / 3
# A group's advantages must sum to ~0; float32 rounding of unit-scale advantages over G <= 64 members is ~1e-6,
# a real grouping or normalisation bug gives O(1). 1e-3 (times the advantage scale) sits between the two.
GROUP_SUM_TOL = 1e-3

TOO_HARD = ("the task is too hard for the model as it is: give it easier prompts first (a curriculum, or drop "
            "prompts no completion solves), raise num_generations (e.g. 16) so rare successes land in a group, "
            "give partial credit (a graded reward such as token F1) or show the answer format in the prompt")
TOO_EASY = ("the task is too easy: drop prompts every completion already solves, or move to harder data; "
            "on these prompts there is nothing left to learn")


def _kind(h, p, flat_frac: float) -> tuple[str, bool]:
    """Which kind of flat group dominates: all-min (too hard), all-max (too easy) or mixed; and whether the split was
    measured (flatline's advantage probe) or read from where the reward sits in its own run."""
    all_max = recent_part(h.series("advantage/zero_std_all_max_frac")).mean()
    all_min = recent_part(h.series("advantage/zero_std_all_min_frac")).mean()
    if math.isfinite(all_max) and math.isfinite(all_min):
        if flat_frac > 0 and all_min / flat_frac >= DOMINANT_SHARE:
            return "all-min", True
        if flat_frac > 0 and all_max / flat_frac >= DOMINANT_SHARE:
            return "all-max", True
        return "mixed", True
    # No split in the log (TRL logs only frac_reward_zero_std): read it from the success rate. A group of G completions
    # that each succeed with probability p is all-correct with probability p^G and all-wrong with (1-p)^G, so where the
    # reward sits in its range says which kind of flat group dominates (references: degenerate_p).
    bounds = reward_range(h)
    if p is not None and bounds is not None and bounds.from_the_log:
        share = all_correct_share(h, bounds.level(p.last))
        if share >= DOMINANT_SHARE:
            return "all-max", False
        if share <= 1 - DOMINANT_SHARE:
            return "all-min", False
        return "mixed", False
    # the reward's range is unknown: groups flat after the reward rose to the top of its run are all-correct; groups
    # flat with the reward never materially up are all-wrong
    if p is not None and p.material_gain and at_top(h.series("reward")):
        return "all-max", False
    if p is not None and not p.material_gain and not p.eval_rising:
        return "all-min", False
    return "mixed", False


@hypothesis("advantage.degenerate_groups", "do most groups have zero reward variance (all-correct / all-wrong)?")
def degenerate_groups(h, v):
    flat = flat_groups(h).finite()
    if not len(flat):
        return v.skipped("no advantage/zero_std_frac (flatline's advantage probe), frac_reward_zero_std or reward_std in "
                         "the log")
    flat_frac = flat.mean()
    recent_frac = recent_part(flat).mean() if len(flat) >= 2 * RECENT_MIN_POINTS else flat_frac
    p = progress(h)
    kind, measured = _kind(h, p, recent_frac)
    evidence = {"zero_std_frac_mean": flat_frac, "zero_std_frac_recent": recent_frac,
                "steps_mostly_flat_frac": flat.frac(lambda x: x >= DEGENERATE_FRAC), "flat_kind": kind}
    if measured:
        evidence.update(all_max_frac_mean=h.series("advantage/zero_std_all_max_frac").mean(),
                        all_min_frac_mean=h.series("advantage/zero_std_all_min_frac").mean())
    if p is not None:
        evidence.update(p.evidence(trend=False))
    worst = max(flat_frac, recent_frac)
    if worst < DEGENERATE_WARN_FRAC:
        return v.passed(f"{flat_frac:.0%} of groups had no reward variance on average; most groups carry signal",
                        evidence)
    if solved(h, p):
        return v.passed(f"{recent_frac:.0%} of recent groups are flat at the task's maximum: solved on these prompts",
                        evidence)
    onset = sustained_from(flat, lambda x: x >= DEGENERATE_FRAC)
    if math.isfinite(onset):
        evidence["onset_step"] = onset
    if kind == "all-max":
        return _all_correct(h, v, p, recent_frac, worst, measured, evidence)
    fall = reward_fall(h) if p is not None else None
    gained = p is not None and (p.material_gain or p.eval_rising)
    if fall is not None and collapsed_from_a_high(h, fall):
        return _after_a_fall(v, fall, worst, evidence)
    prescription = TOO_HARD if kind == "all-min" else (
        "filter flat groups out of the batch (DAPO dynamic sampling) and raise num_generations")
    where = ("every completion at the minimum reward (too hard)" if kind == "all-min"
             else "all-max and all-min together")
    how = "" if measured else " (read from where the reward sits in its range; flatline's advantage probe measures the split)"
    reason = f"{worst:.0%} of groups had zero reward variance, mostly {where}{how}: those groups give zero advantage"
    refs_ = refs("zero_std", "rldoctor")
    if worst < DEGENERATE_FRAC:
        return v.inconclusive(reason + "; under half of the groups, so they slow learning more than they stop it",
                              evidence, prescription, refs_)
    waiting = waiting_for_first_rewards(h, p) if kind == "all-min" and not gained else 0.0
    if waiting:
        evidence["optimizer_steps"] = optimizer_steps(h)
        return v.inconclusive(reason + f"; with the reward at the floor of its range after {optimizer_steps(h):.0f} "
                              "optimizer steps, this is how a sparse reward starts (the policy has yet to find rewarded "
                              f"completions): not called too hard for {waiting:.0f} more steps", evidence, prescription,
                              refs_ + [SPARSE_START])
    if p is not None and not gained and not p.ends_apart:
        return v.inconclusive(reason + f"; {p.trend.points} logged rows cannot yet show whether the reward rises "
                              f"through them (its first and last windows of {window_size(p.trend.points)} overlap): "
                              "judged again as the log grows", evidence, prescription, refs_)
    if gained:
        if recent_frac >= DEGENERATE_FRAC and p.barely_rising and not p.eval_rising_recently and fall is not None:
            return v.warn(f"{recent_frac:.0%} of recent groups have zero reward variance, mostly {where}{how}, and the "
                          f"reward has stopped rising ({p.recent_gain:+.3g} over the last third): the earlier gain "
                          "came from groups that no longer carry signal", evidence, prescription, refs_)
        return v.inconclusive(reason + ", yet the reward is rising on the rest", evidence, prescription, refs_)
    # the side guessed from the run's course alone (no split measured, the reward's range unknown): a policy that
    # moved is learning from the groups that do vary, so the flat ones slow it rather than stop it
    bounds = reward_range(h)
    guessed = not measured and (bounds is None or not bounds.from_the_log)
    moved = policy_moved(h) if guessed else {}
    if moved:
        evidence.update({f"moved/{name}": change for name, change in moved.items()})
        return v.inconclusive(reason + f"; the policy moved ({'; '.join(f'{k} {c}' for k, c in moved.items())}), so "
                              "the groups that vary are being learned from", evidence, prescription, refs_)
    return v.fail(reason, evidence, prescription, refs("zero_std", "zero_std_swift", "rldoctor", "degenerate_p"))


def _all_correct(h, v, p, recent_frac: float, worst: float, measured: bool, evidence: dict):
    """Groups flat at the top: information with a prescription (harder prompts, a curriculum, filter what is solved),
    never a fail: the policy gets these prompts right, which is what training is for."""
    how = "" if measured else " (read from where the reward sits in its range; flatline's advantage probe measures the split)"
    reason = (f"{worst:.0%} of groups had zero reward variance, mostly every completion at the maximum reward "
              f"(too easy){how}: those groups give zero advantage")
    refs_ = refs("zero_std", "rldoctor", "degenerate_p")
    if p is not None and p.rising:
        if p.learning_now and not p.barely_rising:  # still climbing toward the top: converging, not a fault yet
            return v.passed(f"{recent_frac:.0%} of recent groups are all at the maximum reward while the reward still "
                            "rises: the run is converging on these prompts", evidence)
        # read from the reward's level alone, all-correct groups are only evidenced at the top of the run's own course
        if recent_frac < DEGENERATE_FRAC or not (measured or (p.material_gain and at_top(h.series("reward")))):
            return v.inconclusive(reason + "; under half of the groups, or the reward still short of its own best, so "
                                  "they slow learning more than they stop it", evidence, TOO_EASY, refs_)
        return v.warn(f"{recent_frac:.0%} of recent groups are all-correct and the reward has all but stopped rising "
                      f"(+{max(p.recent_gain, 0):.3g} over the last third) short of the task's maximum: the batch is "
                      "running out of signal", evidence, TOO_EASY, refs_)
    level = reward_level(h, p.last) if p is not None else math.nan
    if math.isfinite(level):
        evidence["reward_level_in_range"] = level
    return v.inconclusive(f"{reason}; the reward sat at {level:.0%} of its range from the start: the model already "
                          "solves most of these prompts, so there is little left to learn on them (a solved task, not "
                          "a dead signal)", evidence, TOO_EASY, refs_)


def _after_a_fall(v, fall, worst: float, evidence: dict):
    """Groups went flat after the reward fell from a high level: a consequence of a collapse, never "too hard" (the
    policy earned that reward on these prompts)."""
    # groups flat at the minimum are the fall's doing, not its cause: no onset, so the headline leads with what moved
    # before them (a fail without an onset follows every dated one)
    flat_from = max(evidence.pop("onset_step", fall.below_step), fall.below_step)
    evidence.update(reward_peak=fall.peak, follows_fall_from_step=fall.peak_step, reward_fall_step=fall.below_step,
                    flat_from_step=flat_from)
    if worst < DEGENERATE_FRAC:
        return v.inconclusive(f"{worst:.0%} of groups had zero reward variance after the reward fell from "
                              f"{fall.peak:.3g} (step {fall.peak_step:.0f}) to {fall.last:.3g}; under half of the "
                              "groups, so they are not what stopped it", evidence,
                              f"find what moved before step {fall.peak_step:.0f} (the other verdicts)", refs("zero_std"))
    return v.fail(f"{worst:.0%} of groups had zero reward variance after the reward fell from {fall.peak:.3g} (step "
                  f"{fall.peak_step:.0f}) to {fall.last:.3g}: the groups went flat with the collapse, on prompts the policy "
                  "solved before", evidence,
                  f"find what moved before step {fall.peak_step:.0f} (completions reaching the length limit, entropy, "
                  "KL; the other verdicts) and resume from a checkpoint before it with that fixed",
                  refs("zero_std", "rldoctor"))


@hypothesis("advantage.numerics", "non-finite advantages, near-zero std turned into advantages, group sums, grouping")
def numerics(h, v):
    needed = ("advantage/nonfinite_advantages", "advantage/group_sum_max_abs")
    if not all(h.has(n) for n in needed):
        return v.skipped("needs flatline's advantage probe (advantage/nonfinite_advantages, advantage/group_sum_max_abs)")
    nonfinite = h.series("advantage/nonfinite_advantages").max()
    near_zero = h.series("advantage/near_zero_std_nonzero_adv").max()
    sums = h.series("advantage/group_sum_max_abs")
    scale = max(1.0, h.series("advantage/abs_max").max() if h.has("advantage/abs_max") else 1.0)
    worst_sum = sums.max()
    size_ok = h.series("advantage/group_size_ok")
    bad_grouping = len(size_ok) and size_ok.frac(lambda x: x < 1) > 0
    evidence = {"nonfinite_advantages_max": nonfinite, "near_zero_std_nonzero_adv_max": near_zero,
                "group_sum_max_abs": worst_sum, "group_sum_tolerance": GROUP_SUM_TOL * scale}
    if h.has("advantage/group_size"):
        evidence["group_size"] = h.series("advantage/group_size").last()
    findings = []
    if nonfinite > 0:
        findings.append(("non-finite advantages (NaN/inf reached the loss)",
                         "check the advantage_fn for a division by a zero std (add eps) and rewards that are NaN"))
    if near_zero > 0:
        findings.append(("groups with float-noise std (identical rewards) got non-zero advantages",
                         "compute group std in float64 or treat std < 1e-6 as 0 (advantage_fn)"))
    if bad_grouping:
        findings.append(("the batch does not split into groups of num_generations",
                         "make per_device_train_batch_size a multiple of num_generations and keep completions of "
                         "one prompt adjacent"))
    if math.isfinite(worst_sum) and worst_sum > GROUP_SUM_TOL * scale:
        findings.append((f"a group's advantages summed to {worst_sum:.3g}, not ~0: the baseline is not the group mean "
                         "(normalised over the whole batch, or groups mixed up)",
                         "subtract the per-group mean (scale_rewards='group'), as flatline.trainer.algorithm.group_advantages"))
    if not findings:
        return v.passed("advantages finite, zero for flat groups, summing to ~0 in every group", evidence)
    return v.fail("; ".join(f for f, _ in findings), evidence, "; ".join(p for _, p in findings),
                  refs("grouping", "fp32_trap"))


@hypothesis("advantage.grouping", "does each group hold the completions of one prompt?")
def grouping(h, v):
    mixed = h.series("advantage/mixed_prompt_groups_frac").finite()
    if not len(mixed):
        return v.skipped("needs flatline's advantage probe with the batch's prompt tokens "
                         "(advantage/mixed_prompt_groups_frac)")
    evidence = {"mixed_prompt_groups_frac_max": mixed.max(), "steps_with_mixed_groups": mixed.frac(lambda x: x > 0)}
    if mixed.max() > 0:
        return v.fail(f"up to {mixed.max():.0%} of the groups held completions of different prompts: their baselines "
                      "compare answers to different questions", evidence,
                      "keep the num_generations completions of a prompt adjacent (no shuffle between generation and "
                      "advantage), and make the batch a multiple of num_generations", refs("grouping"))
    return v.passed("every group holds one prompt's completions", evidence)
