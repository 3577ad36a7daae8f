"""Signal hypotheses (advantage.*, reward.*, control.learns, progress.plateau) against known-good and known-bad
metric histories, including the expert-judgement cases: all-max groups after the reward rose are convergence,
not a fault; a control that learns puts the fault in the task's signal.

    .venv/bin/python -m pytest -q tests/test_hypotheses_signal.py
"""
import pytest
from test_hypotheses import N, every, flat, healthy, history, ramp, verdict

from flatline.diagnostics.hypotheses.advantage import TOO_EASY, TOO_HARD
from flatline.diagnostics.hypotheses.common import SILENT_START_STEPS

# ---------------------------------------------------------------- advantage.degenerate_groups

def flat_groups(all_max: float, all_min: float, reward: list, ceiling: float | None = 1.0, n: int = N):
    series = {"advantage/zero_std_frac": all_max + all_min, "advantage/zero_std_all_max_frac": all_max,
              "advantage/zero_std_all_min_frac": all_min, "advantage/zero_frac": all_max + all_min}
    if ceiling is not None:
        series["advantage/reward_ceiling"] = ceiling
    return history(n, series, reward=reward)


def test_all_min_groups_are_too_hard():
    # past the sparse start's wait (SILENT_START_STEPS with nothing that precedes the reward moving)
    n = int(SILENT_START_STEPS) + 10
    v = verdict("advantage.degenerate_groups", flat_groups(0.05, 0.7, flat(0.1, n, noise=0.02, seed=21), n=n))
    assert v.status == "fail"
    assert v.evidence["zero_std_frac_mean"] == pytest.approx(0.75)
    assert v.evidence["all_min_frac_mean"] == pytest.approx(0.7)
    assert v.evidence["steps_mostly_flat_frac"] == 1.0
    assert "too hard" in v.reason and v.prescription == TOO_HARD
    assert "easier prompts" in v.prescription and "num_generations" in v.prescription


def test_all_min_groups_on_a_short_run_at_the_floor_wait_for_the_sparse_start():
    # a 24-step run whose groups all fail so far: how a sparse reward starts (Unsloth: "wait 150 to 200 steps")
    v = verdict("advantage.degenerate_groups", flat_groups(0.05, 0.7, flat(0.1, noise=0.02, seed=21)))
    assert v.status == "inconclusive" and "how a sparse reward starts" in v.reason, v.message()
    assert v.evidence["optimizer_steps"] == N and v.prescription == TOO_HARD


@pytest.mark.parametrize("ceiling", [1.0, None], ids=["ceiling-logged", "no-ceiling"])
def test_all_max_groups_at_the_maximum_from_the_start_are_too_easy(ceiling):
    # a run that starts (and stays) at the top has nothing to learn on these prompts: "too easy", said with its
    # prescription, never a fail (issue 25: all-correct groups at the ceiling are a solved task, not a dead signal)
    v = verdict("advantage.degenerate_groups", flat_groups(0.7, 0.05, flat(0.97, noise=0.01, seed=22), ceiling))
    assert v.status == "inconclusive", v.message()
    assert "too easy" in v.reason and v.prescription == TOO_EASY
    assert v.evidence["all_max_frac_mean"] == pytest.approx(0.7)


def test_all_max_groups_while_the_reward_climbs_to_the_ceiling_are_convergence():
    h = flat_groups(0.7, 0.05, ramp(0.25, 1.0, noise=0.03, seed=23))
    v = verdict("advantage.degenerate_groups", h)
    assert v.status == "pass" and "converging" in v.reason
    assert v.evidence["reward_last"] > 0.9


def test_all_max_groups_on_a_long_run_stuck_short_of_its_maximum_are_a_warning():
    # rldoctor's saturated_groups: pass rate up to ~0.96 early, then 75% of groups all-correct for the rest of a
    # long run with the reward barely moving: the batch is running out of signal
    reward = ramp(0.3, 0.85, 100, noise=0.02, seed=27) + flat(0.87, 200, noise=0.02, seed=28)
    v = verdict("advantage.degenerate_groups", flat_groups(0.75, 0.0, reward, ceiling=None, n=300))
    assert v.status == "warn" and "all-correct" in v.reason and v.prescription == TOO_EASY


def test_too_hard_and_too_easy_prescribe_different_things():
    hard = verdict("advantage.degenerate_groups", flat_groups(0.05, 0.7, flat(0.1, noise=0.02, seed=21)))
    easy = verdict("advantage.degenerate_groups", flat_groups(0.7, 0.05, flat(0.97, noise=0.01, seed=22), None))
    assert hard.prescription != easy.prescription
    assert "too easy" in easy.prescription and "too hard" in hard.prescription


def test_a_third_to_a_half_flat_on_a_flat_run_is_inconclusive_not_fail():
    v = verdict("advantage.degenerate_groups", flat_groups(0.0, 0.45, flat(0.1, noise=0.02, seed=24)))
    assert v.status == "inconclusive" and "under half" in v.reason and v.prescription == TOO_HARD
    rising = verdict("advantage.degenerate_groups", flat_groups(0.0, 0.45, ramp(0.1, 0.6, noise=0.02, seed=25)))
    assert rising.status == "inconclusive"  # learning, but a third of the batch is still wasted: worth a look
    assert verdict("advantage.degenerate_groups", flat_groups(0.0, 0.3, flat(0.1, noise=0.02, seed=26))).status == "pass"


def test_few_flat_groups_pass():
    v = verdict("advantage.degenerate_groups", healthy())
    assert v.status == "pass" and v.evidence["zero_std_frac_mean"] == pytest.approx(0.25)


def test_flat_groups_without_the_split_fall_back_to_trl_names_and_say_so():
    v = verdict("advantage.degenerate_groups", history(frac_reward_zero_std=0.8, reward=flat(0.2, noise=0.02)))
    assert v.status == "fail" and "read from where the reward sits" in v.reason
    assert "too hard" in v.reason and v.prescription == TOO_HARD  # flat groups, reward never up: all-wrong


# ---------------------------------------------------------------- advantage.numerics

def test_group_sums_far_from_zero_fail():
    v = verdict("advantage.numerics", healthy(**{"advantage/group_sum_max_abs": 3.74}))
    assert v.status == "fail"
    assert v.evidence["group_sum_max_abs"] == 3.74
    assert v.evidence["group_sum_tolerance"] == pytest.approx(1.6e-3)  # 1e-3 x the advantage scale (abs_max 1.6)
    assert "3.74" in v.reason and "per-group mean" in v.prescription


def test_near_zero_std_with_nonzero_advantages_fails():
    v = verdict("advantage.numerics", healthy(**{"advantage/near_zero_std_nonzero_adv": [0] * (N - 1) + [1]}))
    assert v.status == "fail" and v.evidence["near_zero_std_nonzero_adv_max"] == 1
    assert "float64" in v.prescription


def test_non_finite_advantages_and_bad_grouping_fail():
    v = verdict("advantage.numerics", healthy(**{"advantage/nonfinite_advantages": 4, "advantage/group_size_ok": 0}))
    assert v.status == "fail" and v.evidence["nonfinite_advantages_max"] == 4
    assert "non-finite" in v.reason and "groups of num_generations" in v.reason


def test_clean_advantages_pass():
    v = verdict("advantage.numerics", healthy())
    assert v.status == "pass" and v.evidence["group_sum_max_abs"] == 2e-7


# ---------------------------------------------------------------- reward.no_signal

def test_no_group_ever_varies_fails():
    # past a sparse reward's start (50 silent optimizer steps at the floor of its range, nothing moving)
    h = history(60, series={"advantage/zero_std_frac": 1.0, "advantage/zero_std_all_max_frac": 0.0},
                reward=0.0, reward_std=0.0)
    v = verdict("reward.no_signal", h)
    assert v.status == "fail"
    assert v.evidence["steps_without_variance_frac"] == 1.0 and v.evidence["solved_steps"] == 0
    assert "known-good" in v.prescription


def test_converged_all_max_steps_are_not_silent():
    zero_std = [0.25] * 8 + [1.0] * (N - 8)
    h = history(series={"advantage/zero_std_frac": zero_std,
                        "advantage/zero_std_all_max_frac": [0.1] * 8 + [1.0] * (N - 8)},
                reward=[0.5] * 8 + [1.0] * (N - 8))
    v = verdict("reward.no_signal", h)
    assert v.status == "pass"
    assert v.evidence["solved_steps"] == N - 8 and v.evidence["steps_without_variance_frac"] == 0.0
    # at the "maximum" from the first step (a constant reward, whose max is the batch's own) is silence, not a solve
    constant = history(series={"advantage/zero_std_frac": 1.0, "advantage/zero_std_all_max_frac": 1.0},
                       reward=[1.0] * N)
    silent = verdict("reward.no_signal", constant)
    assert silent.status == "fail" and "constant reward" in silent.prescription


def test_half_silent_steps_are_inconclusive():
    v = verdict("reward.no_signal", history(frac_reward_zero_std=[1.0, 0.5] * (N // 2)))
    assert v.status == "inconclusive" and v.evidence["steps_without_variance_frac"] == 0.5


# ---------------------------------------------------------------- reward.component_dominance

def components(**spec) -> dict:
    """spec: name=(variance_share, frac_at_min, frac_at_max, min, max) -> reward/<name>/* series."""
    out = {}
    for name, (share, at_min, at_max, lo, hi) in spec.items():
        out.update({f"reward/{name}/variance_share": share, f"reward/{name}/frac_at_min": at_min,
                    f"reward/{name}/frac_at_max": at_max, f"reward/{name}/min": lo, f"reward/{name}/max": hi})
    return out


def test_musique_like_format_never_pays_and_f1_owns_the_variance():
    h = history(series=components(format=(0.0, 1.0, 0.0, 0.0, 0.0), em=(0.0, 1.0, 0.0, 0.0, 0.0),
                                  f1=(1.0, 0.3, 0.0, 0.0, 0.4)))
    v = verdict("reward.component_dominance", h)
    assert v.status == "fail"
    assert "format sits at its minimum on 100%" in v.reason and "em sits at its minimum on 100%" in v.reason
    assert "moves mostly through f1 (100% of the within-group variance)" in v.reason
    assert v.evidence["f1/variance_share"] == 1.0 and v.evidence["format/frac_at_min"] == 1.0
    assert "em and format (almost) never pay" in v.prescription and "the run learns f1, not the task" in v.prescription


def test_a_single_component_passes():
    v = verdict("reward.component_dominance", history(series=components(correct=(1.0, 0.6, 0.4, 0.0, 1.0))))
    assert v.status == "pass" and "single reward component (correct)" in v.reason


def test_balanced_components_pass():
    assert verdict("reward.component_dominance", healthy()).status == "pass"


# ---------------------------------------------------------------- reward.parse_failures

def test_reference_answer_not_given_full_marks_fails():
    v = verdict("reward.parse_failures", healthy(**{"reward/self_check_ok": 0, "reward/self_check_total": 0.0}))
    assert v.status == "fail" and v.evidence["self_check_ok"] == 0
    assert "reference answer" in v.reason and "(it scores 0)" in v.reason


def test_reward_errors_on_a_quarter_of_completions_fail():
    v = verdict("reward.parse_failures", healthy(**{"reward/errors": 8}))  # 8 of 4 groups x 8 per step
    assert v.status == "fail"
    assert v.evidence["reward_errors_total"] == 8 * N and v.evidence["reward_error_frac"] == pytest.approx(0.25)
    assert "25.0%" in v.reason and "return 0.0" in v.prescription


def test_clean_reward_passes():
    v = verdict("reward.parse_failures", healthy())
    assert v.status == "pass" and v.evidence["reward_errors_total"] == 0


# ---------------------------------------------------------------- reward.hacking

def test_reward_rising_while_held_out_is_flat_is_hacking():
    v = verdict("reward.hacking", history(reward=ramp(0.2, 0.8, noise=0.03, seed=31),
                                          **{"eval/reward": every(6, [0.3, 0.31, 0.29, 0.3])}))
    assert v.status == "fail"
    assert v.evidence["eval_first"] == 0.3 and v.evidence["eval_last"] == 0.3
    assert v.evidence["reward_last"] - v.evidence["reward_first"] > 0.4
    assert "gamed" in v.reason and "samples.jsonl" in v.prescription


def test_held_out_rising_with_the_reward_passes():
    v = verdict("reward.hacking", history(reward=ramp(0.2, 0.8, noise=0.03, seed=31),
                                          **{"eval/reward": every(6, [0.25, 0.4, 0.55, 0.7])}))
    assert v.status == "pass" and "0.25 -> 0.7" in v.reason


def test_hacking_without_a_held_out_score_is_skipped():
    v = verdict("reward.hacking", history(reward=ramp(0.2, 0.8)))
    assert v.status == "skipped" and "eval/reward" in v.reason


# ---------------------------------------------------------------- control.learns

def test_control_learns_while_the_subject_is_flat_blames_the_task_signal():
    control = history(16, reward=ramp(0.1, 0.7, 16, noise=0.03, seed=41))
    control.run = "control-gsm8k"
    subject = history(16, config={"task": "musique"}, control=control, reward=flat(0.05, 16, 0.02, seed=42))
    v = verdict("control.learns", subject)
    assert v.status == "pass"
    assert "task's signal" in v.reason and "not the infrastructure" in v.reason
    assert v.evidence["control_run"] == "control-gsm8k" and "subject_reward_last" in v.evidence


def test_flat_control_blames_the_infrastructure():
    control = history(16, reward=flat(0.1, 16, 0.02, seed=43))
    subject = history(16, config={"task": "musique"}, control=control, reward=flat(0.05, 16, 0.02, seed=42))
    v = verdict("control.learns", subject)
    assert v.status == "fail" and "infrastructure" in v.reason
    assert "configs/bandit.toml" in v.prescription


def test_no_control_for_a_subject_task_is_skipped():
    v = verdict("control.learns", history(config={"task": "musique"}, reward=flat(0.05)))
    assert v.status == "skipped" and "--control" in v.reason


def test_a_control_task_run_judges_itself():
    rising = verdict("control.learns", history(config={"task": "gsm8k"}, reward=ramp(0.1, 0.6, noise=0.03)))
    assert rising.status == "pass" and rising.evidence["control_run"] == "t"
    assert "subject_reward_last" not in rising.evidence
    flat_run = verdict("control.learns", history(16, config={"task": "gsm8k"}, reward=flat(0.1, 16, 0.02, seed=44)))
    assert flat_run.status == "fail"


def test_short_flat_control_is_inconclusive():
    v = verdict("control.learns", history(8, config={"task": "gsm8k"}, reward=flat(0.1, 8, 0.02, seed=45)))
    assert v.status == "inconclusive" and "at least 10 steps" in v.prescription


# ---------------------------------------------------------------- progress.plateau

def test_flat_noisy_reward_is_a_plateau():
    v = verdict("progress.plateau", history(20, reward=flat(0.3, 20, 0.05, seed=51)))
    assert v.status == "fail" and "reward is flat" in v.reason and "over 20 optimizer steps" in v.reason
    assert abs(v.evidence["reward_last"] - v.evidence["reward_first"]) < 0.1
    assert v.evidence["reward_kendall_p"] >= 0.05


def test_falling_reward_is_a_plateau_that_says_falling():
    v = verdict("progress.plateau", history(20, reward=ramp(0.5, 0.2, 20, 0.02, seed=52)))
    assert v.status == "fail" and v.reason.startswith("reward is falling")


def test_rising_reward_is_no_plateau():
    v = verdict("progress.plateau", history(20, reward=ramp(0.2, 0.6, 20, 0.04, seed=53)))
    assert v.status == "pass" and "Kendall tau" in v.reason and v.evidence["reward_kendall_p"] < 0.05


def test_reward_at_the_ceiling_is_solved_not_a_plateau():
    h = history(20, {"advantage/reward_ceiling": 1.0}, reward=flat(0.98, 20, 0.01, seed=54))
    v = verdict("progress.plateau", h)
    assert v.status == "pass" and "maximum" in v.reason


def test_six_flat_steps_are_too_few_to_call_a_plateau():
    v = verdict("progress.plateau", history(6, reward=flat(0.3, 6, 0.03, seed=55)))
    assert v.status == "inconclusive" and "too few" in v.reason
    assert verdict("progress.plateau", history(4, reward=flat(0.3, 4))).status == "skipped"


def test_too_hard_needs_first_and_last_windows_apart():
    # six rows above the floor: the "first" and "last" windows of 5 share four rows, so they cannot show that the
    # reward does not rise; ten rows can
    short = verdict("advantage.degenerate_groups", flat_groups(0.05, 0.7, flat(0.3, 6, noise=0.02, seed=23), n=6))
    assert short.status == "inconclusive" and "overlap" in short.reason, short.message()
    long = verdict("advantage.degenerate_groups", flat_groups(0.05, 0.7, flat(0.3, 10, noise=0.02, seed=23), n=10))
    assert long.status == "fail", long.message()


def test_a_silence_at_the_floor_waits_out_the_start_but_a_scorer_paying_all_alike_is_flagged_at_once():
    silent = {"advantage/zero_std_frac": 1.0, "advantage/zero_std_all_max_frac": 0.0, "advantage/reward_ceiling": 1.0}
    # a sparse reward's first steps: nothing scored yet; called after the toolkit's 20-step window and the start's
    # wait (50 optimizer steps when nothing moves, as "too hard" waits: a real Llama 3.1 8B GSM8K run that learned was
    # silent on 20 of its first 21 steps and scored from step 37)
    for steps, left in ((8, 42), (30, 20)):
        v = verdict("reward.no_signal", history(steps, series=silent, reward=0.0, reward_std=0.0))
        assert v.status == "inconclusive" and "called after 20 silent steps" in v.reason, v.message()
        assert v.evidence["sparse_start_steps_left"] == left, v.message()
    assert verdict("reward.no_signal", history(60, series=silent, reward=0.0, reward_std=0.0)).status == "fail"
    # the same 8 steps with every completion paid 0.5 (a scorer that ignores the completion): no sparse start
    v = verdict("reward.no_signal", history(8, series=silent, reward=0.5, reward_std=0.0))
    assert v.status == "fail" and v.evidence["steps_without_variance_frac"] == 1.0, v.message()
