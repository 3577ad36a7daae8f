"""Dynamics hypotheses (length.*, kl.*, entropy.collapse) against known-good and known-bad metric histories,
including the expert-judgement cases: a bandit cut at its one-token limit that learns is fine, a KL loss share
near 1 is normal on-policy, entropy falling while the reward reaches its ceiling is convergence.

    .venv/bin/python -m pytest -q tests/test_hypotheses_dynamics.py
"""
import pytest
from test_hypotheses import N, every, flat, healthy, history, judge, ramp, verdict

# Token entropy decaying geometrically from 2.0 to 0.01 nats over the run (how a collapse looks in a log).
ENTROPY_TO_ZERO = [2.0 * (0.01 / 2.0) ** (i / (N - 1)) for i in range(N)]


# ---------------------------------------------------------------- length.truncation

def test_every_completion_cut_with_nothing_finished_to_compare_is_inconclusive():
    # greedy sampling of a wrong one-token answer looks the same as an answer cut short: no finished completion
    # says whether the cut costs reward, so this is for another hypothesis to settle
    h = history(config={"max_completion_length": 32}, reward=flat(0.0),
                **{"completions/clipped_ratio": 1.0, "length/truncated_reward_mean": 0.0})
    v = verdict("length.truncation", h)
    assert v.status == "inconclusive"
    assert v.evidence["clipped_ratio_mean"] == 1.0 and v.evidence["truncated_reward_mean"] == 0.0
    assert v.evidence["max_completion_length"] == 32
    assert "max_completion_length = 64" in v.prescription


def test_truncated_completions_scoring_below_finished_ones_fail():
    h = history(config={"max_completion_length": 256}, reward=flat(0.2, noise=0.02),
                **{"completions/clipped_ratio": 0.4, "length/truncated_reward_mean": 0.05,
                   "length/terminated_reward_mean": 0.45})
    v = verdict("length.truncation", h)
    assert v.status == "fail" and "score 0.05 against 0.45" in v.reason
    assert "max_completion_length = 512" in v.prescription


CUT_SHORT = {"completions/clipped_ratio": 0.96, "length/truncated_reward_mean": 0.05,
             "length/terminated_reward_mean": 0.0, "advantage/zero_std_all_min_frac": 0.88}


def test_answers_cut_short_that_leave_most_groups_at_the_minimum_fail():
    # SmolLM2 at max_completion_length = 4 ("The answer is " cut): the few finished completions are wrong too,
    # so the reward gap says nothing; the all-min groups and the cut share do
    h = history(config={"max_completion_length": 4}, reward=flat(0.05, noise=0.02), **CUT_SHORT)
    v = verdict("length.truncation", h)
    assert v.status == "fail", v.message()
    assert "96% of recent completions were cut at max_completion_length = 4 and 88% of groups" in v.reason
    assert "max_completion_length = 8" in v.prescription


@pytest.mark.parametrize("change, why", [
    ({"length/terminated_reward_mean": float("nan")}, "nothing finished: the bandit's one-token limit"),
    ({"advantage/zero_std_all_min_frac": 0.2}, "groups keep their signal"),
    ({"reward": "rising"}, "learning despite the cut"),
])
def test_heavy_truncation_is_not_blamed_without_the_starved_groups(change, why):
    values = {**CUT_SHORT, "reward": flat(0.05, noise=0.02), **change}
    if values["reward"] == "rising":
        values["reward"] = ramp(0.05, 0.5, noise=0.02)
    v = verdict("length.truncation", history(config={"max_completion_length": 4}, **values))
    assert v.status != "fail", why


def test_bandit_cut_at_its_limit_that_learns_passes():
    h = history(config={"task": "bandit", "max_completion_length": 1}, reward=ramp(0.25, 1.0, noise=0.03),
                **{"completions/clipped_ratio": 1.0, "length/truncated_reward_mean": ramp(0.25, 1.0)})
    v = verdict("length.truncation", h)
    assert v.status == "pass", v.message()
    assert "terminated_reward_mean" not in v.evidence


def test_truncation_falling_while_reward_rises_passes():
    h = history(reward=ramp(0.2, 0.6, noise=0.03), **{"completions/clipped_ratio": ramp(0.5, 0.2, noise=0.01)})
    v = verdict("length.truncation", h)
    assert v.status == "pass" and "falling" in v.reason


def test_little_truncation_passes():
    v = verdict("length.truncation", healthy())
    assert v.status == "pass" and v.evidence["clipped_ratio_mean"] == pytest.approx(0.05, abs=0.01)


# ---------------------------------------------------------------- length.context_overflow

def test_rows_over_the_context_fail():
    v = verdict("length.context_overflow", healthy(**{"length/context_overflow_frac": 0.5}))
    assert v.status == "fail" and v.evidence["context_overflow_frac_max"] == 0.5 and "50%" in v.reason


def test_prompts_over_max_prompt_length_fail():
    v = verdict("length.context_overflow", healthy(**{"length/prompt_limit_frac": 1.5}))
    assert v.status == "fail" and v.evidence["prompt_max_over_limit"] == 1.5
    assert "max_prompt_length" in v.prescription


def test_prompt_exactly_at_the_limit_is_inconclusive_and_fitting_passes():
    assert verdict("length.context_overflow", healthy(**{"length/prompt_limit_frac": 1.0})).status == "inconclusive"
    assert verdict("length.context_overflow", healthy()).status == "pass"


# ---------------------------------------------------------------- length.growth

def test_length_growing_while_held_out_is_flat_fails():
    h = healthy(**{"completions/mean_length": ramp(20, 60, noise=1.0), "eval/reward": every(6, [0.3, 0.31, 0.3, 0.3])})
    v = verdict("length.growth", h)
    assert v.status == "fail"
    assert v.evidence["length_first"] < 25 and v.evidence["length_last"] > 55
    assert v.evidence["length_growth_rel"] > 1.0
    assert "dr_grpo" in v.prescription


def test_length_growing_with_a_held_out_gain_passes():
    v = verdict("length.growth", healthy(**{"completions/mean_length": ramp(20, 60, noise=1.0)}))
    assert v.status == "pass" and "held-out gain" in v.reason


def test_length_growing_without_any_gain_fails_and_steady_length_passes():
    h = history(reward=flat(0.2, noise=0.02), **{"completions/mean_length": ramp(20, 60, noise=1.0)})
    assert verdict("length.growth", h).status == "fail"
    assert verdict("length.growth", healthy()).status == "pass"


# ---------------------------------------------------------------- kl.penalty_dominates

def test_no_kl_term_with_beta_zero_passes():
    v = verdict("kl.penalty_dominates", healthy(config={"beta": 0.0}, **{"policy/kl_grad_share": 0.9}))
    assert v.status == "pass" and "beta = 0" in v.reason


def test_kl_pulling_harder_than_the_policy_gradient_fails():
    v = verdict("kl.penalty_dominates", healthy(config={"beta": 0.5}, **{"policy/kl_grad_share": 0.9}))
    assert v.status == "fail" and v.evidence["kl_grad_share_median"] == 0.9 and v.evidence["beta"] == 0.5
    assert "90%" in v.reason and "lower beta (now 0.5)" in v.prescription


def test_kl_loss_share_near_one_is_normal_on_policy():
    h = healthy(config={"beta": 0.5}, **{"policy/kl_loss_share": 0.999, "policy/kl_grad_share": 0.1})
    v = verdict("kl.penalty_dominates", h)
    assert v.status == "pass" and v.evidence["kl_grad_share_median"] == 0.1


def test_kl_share_only_counts_steps_with_signal():
    share = [1.0] * 8 + [0.1] * (N - 8)  # the KL term is all there is on steps without advantages
    silent = [1.0] * 8 + [0.25] * (N - 8)
    h = healthy(config={"beta": 0.5}, **{"policy/kl_grad_share": share, "advantage/zero_frac": silent})
    assert verdict("kl.penalty_dominates", h).status == "pass"


# ---------------------------------------------------------------- kl.drift

KL_TO_FIVE = ramp(0.01, 5.0, noise=0.05, lo=0.0)


def test_kl_rising_to_five_nats_without_a_reward_gain_fails():
    v = verdict("kl.drift", healthy(kl=KL_TO_FIVE, reward=flat(0.3, noise=0.02), **{"eval/reward": None}))
    assert v.status == "fail" and v.evidence["kl_last"] == pytest.approx(sorted(KL_TO_FIVE[-5:])[2])  # last window
    assert v.evidence["kl_kendall_p"] < 0.05 and "learning_rate" in v.prescription


def test_kl_rising_without_bound_while_the_reward_rises_is_a_warning():
    # the reward still climbs, but a policy 5 nats/token from its reference and still moving away is not held by
    # the KL term any more: learning now, but this will stop it
    v = verdict("kl.drift", healthy(kl=KL_TO_FIVE))  # healthy() rises in reward, 0.2 -> 0.6 of a ceiling of 1
    assert v.status == "warn" and "still rising" in v.reason and "beta" in v.prescription


def test_kl_rising_as_the_run_reaches_its_maximum_is_the_policy_finding_the_answer():
    reward = ramp(0.25, 1.0, 12, noise=0.01) + flat(1.0, 12, noise=0.005, seed=3)  # solved by the middle
    v = verdict("kl.drift", healthy(kl=KL_TO_FIVE, reward=reward, **{"advantage/zero_std_frac": 0.97}))
    assert v.status == "pass" and "task's maximum" in v.reason


def test_kl_that_levelled_off_is_bounded():
    n = 120  # a run long enough that its last third can be judged on its own
    levelled = [min(x, 2.0) for x in ramp(0.01, 6.0, n, noise=0.02, lo=0.0)]
    v = verdict("kl.drift", healthy(n, kl=levelled, reward=flat(0.3, n, noise=0.02)))
    assert v.status == "pass" and "levelled off" in v.reason
    rising = verdict("kl.drift", healthy(n, kl=ramp(0.01, 6.0, n, noise=0.02, lo=0.0), reward=flat(0.3, n, noise=0.02)))
    assert rising.status == "fail"


def test_flat_kl_passes_and_a_rise_toward_one_is_inconclusive():
    v = verdict("kl.drift", healthy(kl=0.02))
    assert v.status == "pass" and v.evidence["kl_last"] == 0.02
    assert verdict("kl.drift", healthy(kl=ramp(0.01, 0.8, noise=0.01, lo=0.0))).status == "inconclusive"
    # rldoctor's healthy run ends near 0.35 nats/token: rising, but nothing to report
    assert verdict("kl.drift", healthy(kl=ramp(0.02, 0.35, noise=0.004, lo=0.0))).status == "pass"


# ---------------------------------------------------------------- entropy.collapse

def test_entropy_falling_as_reward_reaches_the_ceiling_is_convergence():
    reward = ramp(0.25, 1.0, 16, noise=0.02) + flat(1.0, N - 16, noise=0.005, seed=4)  # solved, then stays there
    h = healthy(entropy=ENTROPY_TO_ZERO, reward=reward, **{"policy/identical_frac": ramp(0.0, 1.0)})
    v = verdict("entropy.collapse", h)
    assert v.status == "pass" and "converged" in v.reason
    assert v.evidence["entropy_last"] < 0.05


def test_entropy_collapsing_while_the_reward_still_rises_short_of_its_maximum_is_a_warning():
    # the reward climbs 0.2 -> 0.6 of a ceiling of 1 while entropy falls to half a percent of its start: the
    # exploration that learning needs is gone before the task is learned (Cui et al. 2025)
    v = verdict("entropy.collapse", healthy(entropy=ENTROPY_TO_ZERO))
    assert v.status == "warn" and "still rises" in v.reason and "epsilon_high" in v.prescription


def test_entropy_gone_only_from_the_groups_already_at_the_maximum_is_convergence_not_collapse():
    # half the groups solved (all at the maximum, no variance), the rest still varied: the entropy left the solved
    # prompts; the same flat share below the maximum is the collapse the warning is for
    solved_half = {"advantage/zero_std_frac": ramp(0.0, 0.5), "advantage/zero_std_all_max_frac": ramp(0.0, 0.5)}
    v = verdict("entropy.collapse", healthy(entropy=ENTROPY_TO_ZERO, **solved_half))
    assert v.status == "pass" and "solves" in v.reason and v.evidence["flat_groups_at_max_recent"] > 0
    stuck_half = {"advantage/zero_std_frac": ramp(0.0, 0.5), "advantage/zero_std_all_max_frac": 0.0}
    assert verdict("entropy.collapse", healthy(entropy=ENTROPY_TO_ZERO, **stuck_half)).status == "warn"


def test_greedy_sampling_with_identical_groups_fails_and_says_temperature():
    h = healthy(config={"temperature": 0.0}, reward=flat(0.3, noise=0.02), entropy=None,
                **{"policy/identical_frac": 1.0, "eval/reward": None})
    v = verdict("entropy.collapse", h)
    assert v.status == "fail" and v.evidence["identical_groups_recent"] == 1.0 and v.evidence["temperature"] == 0.0
    assert "100% of groups hold identical completions" in v.reason
    assert "temperature = 1.0" in v.prescription


def test_entropy_collapsing_without_a_reward_gain_fails():
    h = healthy(entropy=ENTROPY_TO_ZERO, reward=flat(0.3, noise=0.02), **{"eval/reward": None})
    v = verdict("entropy.collapse", h)
    assert v.status == "fail" and "token entropy fell from" in v.reason and "1% of its start" in v.reason
    assert "temperature" in v.prescription
    assert v.evidence["entropy_first"] > 1.0 and v.evidence["entropy_last"] < 0.05


def test_entropy_fallen_to_a_fifth_and_still_falling_is_inconclusive():
    h = healthy(entropy=ramp(2.0, 0.3), reward=flat(0.3, noise=0.02), **{"eval/reward": None})
    v = verdict("entropy.collapse", h)
    assert v.status == "inconclusive" and "without a reward gain" in v.reason


def test_entropy_fallen_to_a_twentieth_without_a_reward_gain_fails():
    h = healthy(entropy=ramp(2.0, 0.01) [:-5] + [0.1] * 5, reward=flat(0.3, noise=0.02), **{"eval/reward": None})
    assert verdict("entropy.collapse", h).status == "fail"


def test_diverse_sampling_passes():
    assert verdict("entropy.collapse", healthy()).status == "pass"


def test_healthy_run_with_each_dynamics_judge_passing():
    passed = {v.id for v in judge(healthy()).verdicts if v.status == "pass"}
    assert {"length.truncation", "length.context_overflow", "length.growth", "kl.penalty_dominates", "kl.drift",
            "entropy.collapse"} <= passed
