"""Judges that read a log as an expert would: pathologies flagged while the reward still rises (warn), the recent part
of a long run judged on its own, logs without flatline's probes (TRL's names only), and the new hypotheses
(entropy.explosion, length.collapse, sync.sampling_semantics, the gradients.zero_loss guard).

    .venv/bin/python -m pytest -q tests/test_hypotheses_while_learning.py
"""
import math

import numpy as np
from test_hypotheses import every, flat, healthy, history, judge, ramp, verdict

LONG = 300  # steps: long enough for the last third (100 points) to be judged on its own


def logistic(n: int, start: float, end: float, midpoint: float, rate: float, noise: float, seed: int) -> list:
    """A reward that rises from start to end around `midpoint` (a fraction of the run), plus noise."""
    t = np.arange(n) / (n - 1)
    values = start + (end - start) / (1 + np.exp(-rate * (t - midpoint)))
    return [float(x) for x in values + np.random.default_rng(seed).normal(0.0, noise, n)]


EARLY_RISE_THEN_FLAT = logistic(LONG, 0.2, 0.6, 0.12, 40, 0.02, 1)  # flat from about a third of the run
STILL_RISING = logistic(LONG, 0.2, 0.7, 0.6, 6, 0.02, 2)  # a healthy logistic still climbing at the end


def trl_log(reward: list, n: int = LONG, **series) -> object:
    """A TRL-style log: the names TRL's GRPOTrainer writes, no flatline probe, no config."""
    return history(n, {"reward": reward, **series})


# ---------------------------------------------------------------- progress.plateau on the recent part

def test_a_reward_flat_for_the_last_two_thirds_after_an_early_rise_is_a_stall_warning():
    v = verdict("progress.plateau", trl_log(EARLY_RISE_THEN_FLAT))
    assert v.status == "warn" and "flat since step" in v.reason
    assert v.evidence["recent_kendall_p"] > 0.05


def test_a_reward_still_rising_in_its_last_third_passes():
    assert verdict("progress.plateau", trl_log(STILL_RISING)).status == "pass"


def test_a_stalled_reward_with_a_held_out_score_still_rising_is_no_stall():
    held_out = every(25, list(np.linspace(0.2, 0.7, LONG // 25 + 1)), LONG)
    assert verdict("progress.plateau", trl_log(EARLY_RISE_THEN_FLAT, **{"eval/reward": held_out})).status == "pass"


def test_a_short_run_is_judged_on_its_ends_not_on_a_recent_part_too_short_to_test():
    v = verdict("progress.plateau", trl_log(ramp(0.2, 0.6, 24, noise=0.03), n=24))
    assert v.status == "pass" and "recent_kendall_tau" not in v.evidence


def test_a_slow_gain_under_heavy_batch_noise_is_no_stall():
    # a linear gain of 0.3 over the run under noise 0.15: the last third's trend test finds no rise, but its gain's
    # upper bound does not rule out the earlier rate, so flatness is not shown
    noisy = [x + e for x, e in zip(np.linspace(0.3, 0.6, LONG), np.random.default_rng(8).normal(0, 0.15, LONG))]
    v = verdict("progress.plateau", trl_log(noisy))
    assert v.status == "pass"


def test_a_flat_end_with_most_groups_all_equal_is_explained_by_the_groups_not_a_stall():
    zero_std = [0.2] * (LONG // 3) + [0.7] * (LONG - LONG // 3)
    v = verdict("progress.plateau", trl_log(EARLY_RISE_THEN_FLAT, frac_reward_zero_std=zero_std))
    assert v.status == "pass" and "advantage.degenerate_groups" in v.reason


def test_no_clear_gain_under_batch_noise_is_inconclusive_not_flat():
    noisy = [0.4 + e for e in np.random.default_rng(9).normal(0, 0.2, 25)]
    v = verdict("progress.plateau", trl_log(noisy, n=25))
    assert v.status == "inconclusive" and "cannot rule out" in v.reason
    quiet = verdict("progress.plateau", trl_log(flat(0.4, 25, 0.02, seed=9), n=25))
    assert quiet.status == "fail"


# ---------------------------------------------------------------- warn while learning

def test_entropy_collapsing_while_the_reward_still_rises_is_a_warning_and_a_fail_once_it_stalls():
    entropy = [0.6 * math.exp(-6.5 * i / (LONG - 1)) + 0.006 for i in range(LONG)]
    rising = verdict("entropy.collapse", trl_log(STILL_RISING, entropy=entropy))
    assert rising.status == "warn" and "still rises" in rising.reason
    stalled = verdict("entropy.collapse", trl_log(EARLY_RISE_THEN_FLAT, entropy=entropy))
    assert stalled.status == "fail" and "no longer rising" in stalled.reason


def test_entropy_halving_while_the_reward_rises_is_learning():
    entropy = [0.62 * math.exp(-1.1 * i / (LONG - 1)) + 0.22 for i in range(LONG)]  # 0.84 -> 0.43
    assert verdict("entropy.collapse", trl_log(STILL_RISING, entropy=entropy)).status == "pass"


def test_kl_growing_without_bound_while_the_reward_rises_is_a_warning():
    kl = [0.02 + 4.5 * (i / (LONG - 1)) ** 2.4 for i in range(LONG)]
    v = verdict("kl.drift", trl_log(STILL_RISING, kl=kl))
    assert v.status == "warn" and v.evidence["kl_last"] > 3


def test_truncation_growing_while_the_reward_rises_is_a_warning_and_falling_truncation_passes():
    growing = [0.005 + 0.42 * (i / (LONG - 1)) ** 2 for i in range(LONG)]
    v = verdict("length.truncation", trl_log(STILL_RISING, **{"completions/clipped_ratio": growing}))
    assert v.status == "warn" and "keeps growing" in v.reason
    # flatline's own arithmetic run: 56% cut at the start, 9% at the end, as the policy learns to answer briefly
    falling = verdict("length.truncation", trl_log(STILL_RISING, **{"completions/clipped_ratio": ramp(0.56, 0.09, LONG)}))
    assert falling.status == "pass"


def test_most_groups_all_correct_with_the_reward_barely_moving_is_a_warning():
    reward = logistic(LONG, 0.4, 0.97, 0.25, 12, 0.02, 3)
    zero_std = [min(1.0, x ** 8 + (1 - x) ** 8) for x in reward]
    v = verdict("advantage.degenerate_groups", trl_log(reward, frac_reward_zero_std=zero_std))
    assert v.status == "warn" and "all-correct" in v.reason


def test_groups_going_flat_after_a_rise_while_the_reward_stops_is_a_warning():
    # the data moves out of reach: the reward rose early, then most groups turn all-wrong and the reward sags
    reward = [x - (0.3 * min(1.0, (i - 200) / 40) if i >= 200 else 0.0) for i, x in enumerate(STILL_RISING)]
    zero_std = [0.1] * 200 + [min(0.9, 0.1 + 0.8 * (i / 40)) for i in range(LONG - 200)]
    v = verdict("advantage.degenerate_groups", trl_log(reward, frac_reward_zero_std=zero_std))
    assert v.status == "warn" and "stopped rising" in v.reason


# ---------------------------------------------------------------- reward.hacking

def test_held_out_score_rising_then_falling_while_training_reward_climbs_is_hacking():
    held_out = [0.2, 0.3, 0.42, 0.38, 0.33, 0.3, 0.27, 0.26]
    v = verdict("reward.hacking", trl_log(logistic(LONG, 0.28, 1.0, 0.4, 9, 0.02, 4),
                                          **{"eval/reward": every(40, held_out, LONG)}))
    assert v.status == "fail" and "then fell back" in v.reason and v.evidence["eval_peak"] == 0.42


def test_held_out_score_that_stops_following_a_still_rising_reward_is_a_recent_warning():
    # the held-out score rose with the reward for 200 steps, then stayed put while the reward kept climbing
    reward = list(np.linspace(0.2, 1.2, LONG) + np.random.default_rng(10).normal(0, 0.02, LONG))
    held_out = [0.2 + 0.5 * min(i * 20, 200) / 200 for i in range(LONG // 20 + 1)]
    v = verdict("reward.hacking", trl_log(reward, **{"eval/reward": every(20, held_out, LONG)}))
    assert v.status == "warn" and "not carrying over" in v.reason
    following = [0.2 + 0.8 * i * 20 / LONG for i in range(LONG // 20 + 1)]
    assert verdict("reward.hacking", trl_log(reward, **{"eval/reward": every(20, following, LONG)})).status == "pass"


def test_a_held_out_score_too_noisy_to_tell_is_inconclusive():
    held_out = [0.35 + (0.2 if i % 2 else -0.2) for i in range(LONG // 30 + 1)]  # 8 prompts: +-0.2 from one to the next
    v = verdict("reward.hacking", trl_log(ramp(0.25, 1.0, LONG, noise=0.02), **{"eval/reward": every(30, held_out, LONG)}))
    assert v.status == "inconclusive" and "noise" in v.reason


def test_held_out_score_at_its_ceiling_from_the_start_is_no_evidence_of_hacking():
    # a healthy bandit run: the held-out prompt was already solved at the first evaluation
    v = verdict("reward.hacking", trl_log(ramp(0.25, 1.0, LONG, noise=0.02), **{"eval/reward": every(30, [1.0] * 11, LONG)}))
    assert v.status == "pass" and "ceiling" in v.reason


def test_held_out_score_on_one_prompt_is_no_evidence():
    h = history(LONG, {"reward": ramp(0.25, 1.0, LONG, noise=0.02), "eval/reward": every(30, [0.0, 1.0, 0.0] * 4, LONG)},
                config={"eval_size": 1})
    assert verdict("reward.hacking", h).status == "skipped"


def test_a_small_training_gain_is_no_gain_to_game():
    # rldoctor's too_hard: the training reward creeps up 0.06 (the format term) while the held-out score stays ~0
    v = verdict("reward.hacking", trl_log(ramp(0.08, 0.14, LONG, noise=0.01), **{"eval/reward": every(25, [0.01] * 13, LONG)}))
    assert v.status == "pass" and "did not rise materially" in v.reason


# ---------------------------------------------------------------- reward.component_dominance from TRL names

def test_a_component_that_always_pays_and_owns_the_variation_is_flagged_from_logged_means():
    rng = np.random.default_rng(5)
    correctness = [0.05 * x + rng.normal(0, 0.01) for x in STILL_RISING]  # the task reward, 20x smaller
    fmt = [min(1.0, 0.995 + rng.normal(0, 0.06)) for _ in range(LONG)]  # pays ~always, noisy
    reward = [c + 0.1 * f + rng.normal(0, 0.02) for c, f in zip(correctness, fmt)]
    v = verdict("reward.component_dominance", trl_log(reward, **{"rewards/correctness/mean": correctness,
                                                                   "rewards/format/mean": fmt}))
    assert v.status in ("warn", "fail") and v.reason.startswith("format pays almost always")


def test_a_task_component_owning_the_variation_while_format_saturates_is_healthy():
    rng = np.random.default_rng(6)
    correctness = [x + rng.normal(0, 0.01) for x in STILL_RISING]
    fmt = [min(1.0, 0.98 + rng.normal(0, 0.01)) for _ in range(LONG)]
    reward = [c + 0.1 * f for c, f in zip(correctness, fmt)]  # TRL: reward = sum of weight x component mean
    v = verdict("reward.component_dominance", trl_log(reward, **{"rewards/correctness/mean": correctness,
                                                                   "rewards/format/mean": fmt}))
    assert v.status == "pass" and v.evidence["weights"].startswith("from the config or a fit")


def test_a_reward_that_rises_only_through_the_format_term_is_flagged():
    rng = np.random.default_rng(12)
    fmt = [0.1 if i < 150 else min(1.0, 0.1 + 0.9 * (i - 150) / 20) for i in range(LONG)]
    fmt = [min(1.0, max(0.0, f + rng.normal(0, 0.02))) for f in fmt]
    correctness = [0.3 + rng.normal(0, 0.03) for _ in range(LONG)]
    reward = [c + f for c, f in zip(correctness, fmt)]
    v = verdict("reward.component_dominance", trl_log(reward, **{"rewards/correctness/mean": correctness,
                                                                   "rewards/format/mean": fmt}))
    assert v.status == "warn" and "only through format" in v.reason
    learning = [0.3 + 0.4 * i / LONG + rng.normal(0, 0.03) for i in range(LONG)]
    healthy_reward = [c + f for c, f in zip(learning, fmt)]
    assert verdict("reward.component_dominance", trl_log(healthy_reward, **{
        "rewards/correctness/mean": learning, "rewards/format/mean": fmt})).status == "pass"


# ---------------------------------------------------------------- the new hypotheses

def test_entropy_rising_without_bound_fails_without_a_reward_gain_and_warns_with_one():
    entropy = ramp(0.5, 2.5, LONG, noise=0.02)
    assert verdict("entropy.explosion", trl_log(flat(0.3, LONG, 0.02), entropy=entropy)).status == "fail"
    assert verdict("entropy.explosion", trl_log(STILL_RISING, entropy=entropy)).status == "warn"
    assert verdict("entropy.explosion", trl_log(STILL_RISING, entropy=ramp(0.8, 0.5, LONG, noise=0.02))).status == "pass"


def test_length_collapsing_without_a_reward_gain_fails_and_shortening_while_learning_passes():
    collapse = verdict("length.collapse", history(LONG, {"reward": flat(0.3, LONG, 0.02), "completions/mean_length":
                                                          ramp(300, 40, LONG, noise=5)}, config={"loss_type": "grpo"}))
    assert collapse.status == "fail" and "dapo" in collapse.prescription
    learning = verdict("length.collapse", trl_log(STILL_RISING, **{"completions/mean_length": ramp(24, 11, LONG)}))
    assert learning.status == "pass" and "answer more briefly" in learning.reason


def test_length_growing_a_third_with_a_flat_reward_is_not_several_fold():
    # rldoctor's too_hard keeps the healthy length curve (380 -> 510 tokens) while nothing is learned
    v = verdict("length.growth", trl_log(flat(0.1, LONG, 0.01), **{"completions/mean_length": ramp(380, 510, LONG, noise=12)}))
    assert v.status == "pass"


def test_mean_importance_ratio_below_one_with_every_ratio_at_most_one_is_truncated_sampling():
    truncated = {"sampling/importance_sampling_ratio/mean": flat(0.93, LONG, 0.005),
                 "sampling/importance_sampling_ratio/max": flat(1.0, LONG, 0.01)}
    v = verdict("sync.sampling_semantics", trl_log(STILL_RISING, **truncated))
    assert v.status == "fail" and "top-p" in v.reason and "top_p = 1" in v.prescription
    stale = {"sampling/importance_sampling_ratio/mean": flat(0.8, LONG, 0.05),
             "sampling/importance_sampling_ratio/max": flat(6.0, LONG, 1.0)}
    assert verdict("sync.sampling_semantics", trl_log(STILL_RISING, **stale)).status == "pass"
    unknown = {"sampling/importance_sampling_ratio/mean": flat(0.93, LONG, 0.005)}
    assert verdict("sync.sampling_semantics", trl_log(STILL_RISING, **unknown)).status == "inconclusive"
    assert verdict("sync.sampling_semantics", healthy(**{"sync/is_weight_mean": 1.0})).status == "pass"


def test_a_loss_of_exactly_zero_never_fails():
    zero_loss = history(24, {"reward": flat(0.3, 24, 0.02), "loss": 0.0, "grad_norm": 0.4})
    v = verdict("gradients.zero_loss", zero_loss)
    assert v.status == "pass" and "expected on-policy" in v.reason
    no_gradient = history(24, {"reward": flat(0.3, 24, 0.02), "loss": 0.0, "grad_norm": 0.0})
    assert verdict("gradients.zero_loss", no_gradient).status == "pass"
    assert "gradients.zero_loss" not in [x.id for x in judge(zero_loss).failed]
