"""`flatline selftest`: the CI subset of the planted-fault matrix catches each of its faults and stays quiet on the
healthy runs; a miss or a false alarm makes it exit 1. (The full matrix is bench/selftest_full.py.)"""
import pytest

from flatline.harness.cli import main
from flatline.harness.selftest.faults import (
    EPISODE_FAULTS,
    EPISODE_HEALTHY,
    FAULTS,
    HEALTHY,
    NOT_LEARNING,
    REFUSED,
    Fault,
)
from flatline.harness.selftest.matrix import CaseResult, case_config, render, run_case, select_cases

EVERY = FAULTS + HEALTHY + EPISODE_FAULTS + EPISODE_HEALTHY


def test_the_fast_subset_catches_every_fault_and_no_healthy_run_fails(capsys):
    code = main(["selftest"])
    out = capsys.readouterr().out
    fast = [c for c in FAULTS + EPISODE_FAULTS if c.fast]
    assert f"recall: {len(fast)}/{len(fast)} planted faults" in out, out
    assert "false alarms: 0 (healthy runs with a fail: 0/" in out
    assert code == 0
    for case in fast:
        assert case.name in out


def test_the_matrix_has_at_least_twenty_faults_and_every_fault_names_what_must_fail():
    assert len(FAULTS) >= 20 and len({c.name for c in FAULTS + HEALTHY}) == len(FAULTS + HEALTHY)
    assert all(c.must_fail for c in FAULTS) and not any(c.must_fail for c in HEALTHY)
    assert {c.how for c in FAULTS} == {"config", "plug-in", "structural"}
    assert not any(c.must_fail & NOT_LEARNING for c in FAULTS if c.name != "sign_flipped_loss")


def test_every_case_builds_a_valid_config_on_its_base_run():
    for case in FAULTS + HEALTHY:
        if REFUSED not in case.must_fail:
            cfg = case_config(case, seed=0)
            assert cfg.task == {"bandit": "bandit", "default": "arithmetic"}[case.base], case.name
    assert {c.base for c in FAULTS} == {"bandit", "default"} and any(c.base == "default" for c in HEALTHY)
    for case in EPISODE_FAULTS + EPISODE_HEALTHY:
        cfg = case_config(case, seed=0)
        assert cfg.task == "tools" and cfg.model == "smollm2-135m", case.name


def test_the_episode_rows_plant_the_faults_of_issue_16_and_at_most_one_runs_in_the_suite():
    wanted = {"episodes.early_termination", "masking.env_tokens_in_loss", "episodes.infra_scored_as_reward",
              "episodes.bonus_dominates"}
    assert len(EPISODE_FAULTS) == 5 and set().union(*(c.must_fail for c in EPISODE_FAULTS)) == wanted
    assert not any(c.must_fail for c in EPISODE_HEALTHY) and len(EPISODE_HEALTHY) == 2
    assert [c.name for c in select_cases(EVERY, episodes=True)] == [c.name for c in EPISODE_FAULTS + EPISODE_HEALTHY]
    assert sum(c.base == "tools" for c in select_cases(EVERY)) <= 1
    assert {c.name for c in EPISODE_FAULTS + EPISODE_HEALTHY} <= {c.name for c in select_cases(EVERY, full=True)}
    assert [c.name for c in select_cases(EVERY, only=["episodes_tools"])] == ["episodes_tools"]


def test_a_loss_near_zero_at_step_one_is_not_blamed():
    # on-policy GRPO with beta 0: the loss is -mean(advantage), ~0 on every step; no verdict may read it as a fault
    result = run_case(next(c for c in HEALTHY if c.name == "healthy"), seed=1)
    assert abs(result.first_loss) < 1e-6 and not result.failed, (result.first_loss, result.failed)


def test_a_miss_and_a_false_alarm_are_reported_and_fail_the_run():
    wrong = Fault("expects_kl_drift", "config", "a healthy run that claims a KL drift", frozenset({"kl.drift"}))
    missed = run_case(wrong, seed=0, steps=6)
    assert missed.missed == {"kl.drift"}
    quiet = Fault("quiet", "config", "healthy", frozenset())
    alarm = CaseResult(quiet, 0, failed={"gradients.spikes"}, steps=6)
    text = render([missed, alarm])
    assert "MISS expects_kl_drift seed 0: kl.drift did not fail" in text
    assert "FALSE ALARM quiet seed 0: gradients.spikes" in text and "false alarms: 1" in text


def test_a_config_refused_at_start_counts_as_flagged_at_step_0():
    result = run_case(next(c for c in FAULTS if c.name == "lora_targets_nothing"))
    assert result.failed == {REFUSED} and result.first_flag[REFUSED][0] == 0 and not result.missed
    assert "lora_target_modules" in result.error


def test_an_unknown_fault_name_is_a_clear_error(capsys):
    assert main(["selftest", "--only", "no_such_fault"]) == 2
    assert "no fault named no_such_fault" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["constant_reward"])
def test_only_runs_the_named_case(name, capsys):
    assert main(["selftest", "--only", name]) == 0
    out = capsys.readouterr().out
    assert "recall: 1/1" in out and "healthy" not in out.split("case")[1].split("recall")[0]
