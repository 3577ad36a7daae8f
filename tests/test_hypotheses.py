"""The hypothesis judges as a whole: the registry matches DESIGN.md, a healthy run gives no fail, a log with
only a reward is skipped (not failed), fails are ordered likeliest cause first, logs load from every format,
a judge that raises is skipped, and (Hypothesis) random finite logs never break a judge.

Per-family known-good / known-bad cases live in tests/test_hypotheses_<family>.py and import the history
builders below. Pure metric histories, no model:

    .venv/bin/python -m pytest -q tests/test_hypotheses*.py
"""
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flatline.common.errors import FlatlineError
from flatline.diagnostics.history import MIN_TREND_POINTS, History, Series, load_history
from flatline.diagnostics.judge import hypothesis_ids, judge, judge_one
from flatline.diagnostics.verdict import REGISTRY, STATUSES, Hypothesis

N = 24  # steps of a typical short diagnostic run
DESIGN = Path(__file__).resolve().parents[1] / "docs" / "DESIGN.md"


# ---------------------------------------------------------------- history builders (imported by the family files)

def ramp(start: float, end: float, n: int = N, noise: float = 0.0, seed: int = 0, lo: float | None = None) -> list:
    """A straight line from start to end over n steps, plus seeded Gaussian noise (clipped below at lo)."""
    values = np.linspace(start, end, n) + np.random.default_rng(seed).normal(0.0, noise, n)
    if lo is not None:
        values = np.maximum(values, lo)
    return [float(f"{x:.6g}") for x in values]  # 6 significant digits, as a log would print them


def flat(level: float, n: int = N, noise: float = 0.0, seed: int = 0, lo: float | None = None) -> list:
    return ramp(level, level, n, noise, seed, lo)


def history(n: int = N, series: dict | None = None, config: dict | None = None, control: History | None = None,
            **more) -> History:
    """History(run="t") of n rows, step 1..n. Each series is a list (None = not logged that step), a function of
    the step, or a constant; slash names go in `series`, plain ones may be keywords (reward=[...])."""
    series = {**(series or {}), **more}
    rows = []
    for i in range(n):
        row = {"step": i + 1}
        for name, spec in series.items():
            value = spec(i + 1) if callable(spec) else spec[i] if isinstance(spec, (list, tuple)) else spec
            if value is not None:
                row[name] = value
        rows.append(row)
    return History(run="t", rows=rows, config=dict(config or {}), control=control)


def every(k: int, values: list, n: int = N) -> list:
    """values placed at steps 1, 1+k, 1+2k, ... (None elsewhere): an eval series."""
    out = [None] * n
    for j, value in enumerate(values):
        out[min(j * k, n - 1)] = value
    return out


HEALTHY_CONFIG = {"task": "gsm8k", "learning_rate": 1e-5, "lora_r": 16, "lora_alpha": 32, "max_grad_norm": 1.0,
                  "beta": 0.04, "temperature": 1.0, "num_iterations": 1, "num_generations": 8,
                  "per_device_train_batch_size": 32, "max_completion_length": 256, "dtype": "bfloat16"}


def healthy_series(n: int = N) -> dict:
    """Every probe metric at a healthy LoRA GRPO run's values, reward rising 0.2 -> 0.6 with noise."""
    return {
        "reward": ramp(0.2, 0.6, n, noise=0.04, seed=1), "reward_std": flat(0.3, n, 0.02, seed=2),
        "eval/reward": every(n // 3, [0.2, 0.35, 0.45, 0.55], n),
        "frac_reward_zero_std": 0.25, "advantage/zero_std_frac": 0.25, "advantage/zero_std_all_max_frac": 0.1,
        "advantage/zero_std_all_min_frac": 0.15, "advantage/zero_frac": 0.25, "advantage/reward_ceiling": 1.0,
        "advantage/nonfinite_advantages": 0, "advantage/near_zero_std_nonzero_adv": 0,
        "advantage/group_sum_max_abs": 2e-7, "advantage/abs_max": 1.6, "advantage/group_size_ok": 1,
        "advantage/group_size": 8, "advantage/num_groups": 4,
        "reward/correct/variance_share": 0.7, "reward/correct/frac_at_min": 0.5, "reward/correct/frac_at_max": 0.3,
        "reward/correct/min": 0.0, "reward/correct/max": 1.0,
        "reward/format/variance_share": 0.3, "reward/format/frac_at_min": 0.1, "reward/format/frac_at_max": 0.8,
        "reward/format/min": 0.0, "reward/format/max": 1.0,
        "reward/errors": 0, "reward/self_check_ok": 1, "reward/self_check_total": 1.0,
        "masks/prompt_frac": 0.0, "masks/pad_frac": 0.0, "masks/eos_in_loss_frac": 1.0, "masks/env_frac": 0.0,
        "masks/completion_excluded_frac": 0.0, "advantage/mixed_prompt_groups_frac": 0.0,
        "policy/dropout_modules_active": 0,
        "masks/alignment_max_diff": 2e-6, "masks/finished_frac": 0.95,
        "loss": flat(0.0, n, 0.01, seed=3), "grad_norm": flat(0.2, n, 0.03, seed=4, lo=0.05),
        "gradients/params_without_grad": 0, "gradients/nonfinite": 0, "gradients/clip_coef": 1.0,
        "update/rel_update": flat(6e-3, n, 5e-4, seed=5), "update/changed_frac": 1.0, "update/precision_kept": 1.0,
        "update/swallowed_frac": 0.0, "update/trainable_params": 4_399_104, "update/optimizer_params": 4_399_104,
        "update/trainable_not_in_optimizer": 0, "update/base_drift_tensors": 0, "update/base_drift_max_rel": 0.0,
        "clip_ratio/region_mean": 0.0,
        "sync/probs_diff_mean": 0.0, "sync/logprob_diff_mean": 0.0, "sync/ess": 0.98, "sync/is_weight_mean": 1.0,
        "sync/tracking": 1.0, "sync/tracking_se": 0.01, "sync/policy_drift": [1e-5] + [0.05] * (n - 1),
        "completions/clipped_ratio": flat(0.05, n, 0.01, seed=6, lo=0.0), "length/truncated_reward_mean": 0.3,
        "length/terminated_reward_mean": 0.45, "length/context_overflow_frac": 0.0, "length/prompt_limit_frac": 0.6,
        "completions/mean_length": flat(120, n, 5, seed=7),
        "kl": ramp(0.002, 0.05, n, 0.002, seed=8, lo=0.0), "policy/kl_grad_share": 0.05, "policy/kl_loss_share": 0.95,
        "entropy": ramp(1.9, 1.5, n, 0.05, seed=9), "policy/identical_frac": 0.0,
        # a healthy multi-turn run: episodes finish, calls mostly succeed, the outcome carries the reward
        "episodes/early_end_frac": 0.02, "episodes/outcome/env_budget_exhausted": 0.0, "episodes/outcome/context_full": 0.02,
        "episodes/infra_scored_frac": 0.0, "episodes/infra_frac": 0.01, "episodes/tool_calls_per_episode": 1.2,
        "episodes/tool_call_fail_rate": ramp(0.4, 0.1, n, 0.03, seed=10, lo=0.0), "episodes/parse_error_rate": 0.05,
        "episodes/per_call_variance_share": 0.25, "episodes/per_call_share": 0.2,
        "episodes/outcome_mean": ramp(0.2, 0.6, n, 0.04, seed=11), "episodes/template_break_frac": 0.0,
    }


def healthy(n: int = N, config: dict | None = None, **overrides) -> History:
    """The healthy run with some series replaced (slash names via **{"update/rel_update": ...}; None drops one)."""
    series = {**healthy_series(n), **overrides}
    return history(n, {k: s for k, s in series.items() if s is not None}, {**HEALTHY_CONFIG, **(config or {})})


def verdict(hypothesis_id: str, h: History):
    return judge_one(hypothesis_id, h)


def statuses(h: History) -> dict:
    return {v.id: v.status for v in judge(h).verdicts}


# ---------------------------------------------------------------- registry, healthy run, bare log

def design_ids() -> set:
    return set(re.findall(r"^\|[^|]+\|\s*`([a-z]+\.[a-z_]+)`\s*\|", DESIGN.read_text(), flags=re.M))


def test_every_design_id_is_registered_and_nothing_else():
    ids = design_ids()
    assert len(ids) == 43
    assert set(hypothesis_ids()) == ids
    assert len(hypothesis_ids()) == len(ids)  # no duplicates in the cause order


def test_healthy_run_passes_every_hypothesis():
    diagnosis = judge(healthy())
    assert diagnosis.failed == []
    not_passed = {v.id: (v.status, v.reason) for v in diagnosis.verdicts if v.status != "pass"}
    assert not_passed == {}
    assert diagnosis.status == "pass"
    assert diagnosis.headline().startswith("No hypothesis confirmed")


# What each hypothesis names when a log holds only step and reward.
NEEDS = {
    "advantage.degenerate_groups": "advantage/zero_std_frac", "advantage.numerics": "advantage/nonfinite_advantages",
    "reward.no_signal": "frac_reward_zero_std", "reward.component_dominance": "variance_share",
    "reward.parse_failures": "reward/errors", "reward.hacking": "eval/reward",
    "masking.prompt_in_loss": "masks/prompt_frac", "masking.padding_in_loss": "masks/pad_frac",
    "masking.eos_excluded": "masks/eos_in_loss_frac", "masking.env_tokens_in_loss": "masks/env_frac",
    "gradients.no_flow": "grad_norm", "gradients.non_finite": "grad_norm", "gradients.clipping_dominates": "grad_norm",
    "gradients.spikes": "grad_norm", "update.weights_unchanged": "update/changed_frac",
    "update.optimizer_coverage": "update/trainable_params", "update.precision_swallowed": "update/precision_kept",
    "update.too_small": "update/rel_update", "update.base_drift": "update/base_drift_tensors",
    "update.clip_saturation": "clip_ratio/region_mean", "sync.sampler_mismatch": "sync/probs_diff_mean",
    "sync.importance_weights": "sync/ess", "length.truncation": "completions/clipped_ratio",
    "length.context_overflow": "length/context_overflow_frac", "length.growth": "completions/mean_length",
    "kl.penalty_dominates": "policy/kl_grad_share", "kl.drift": "kl", "entropy.collapse": "entropy",
    "control.learns": "control run", "entropy.explosion": "entropy", "length.collapse": "completions/mean_length",
    "sync.sampling_semantics": "sync/is_weight_mean", "gradients.zero_loss": "loss",
    "masking.completion_excluded": "masks/completion_excluded_frac",
    "advantage.grouping": "advantage/mixed_prompt_groups_frac",
    "update.nondeterministic_forward": "policy/dropout_modules_active", "sync.stale_weights": "sync/tracking",
    "episodes.early_termination": "episodes/early_end_frac", "episodes.infra_scored_as_reward": "episodes/infra_scored_frac",
    "episodes.tool_call_failures": "episodes/tool_calls_per_episode",
    "episodes.bonus_dominates": "episodes/per_call_variance_share",
    "episodes.template_not_prefix_preserving": "episodes/template_break_frac",
}


def test_reward_only_log_is_skipped_naming_the_missing_metric():
    h = history(reward=ramp(0.2, 0.6, noise=0.04, seed=1))
    verdicts = {v.id: v for v in judge(h).verdicts}
    assert set(NEEDS) | {"progress.plateau"} == set(verdicts)
    for hid, metric in NEEDS.items():
        assert verdicts[hid].status == "skipped", verdicts[hid].message()
        assert metric in verdicts[hid].reason, (hid, verdicts[hid].reason)
        assert "could not be judged" not in verdicts[hid].reason  # skipped on purpose, not by a crash
    assert verdicts["progress.plateau"].status == "pass"  # the one question a reward alone answers


def test_flat_reward_only_log_fails_nothing_but_the_plateau():
    diagnosis = judge(history(reward=flat(0.3, noise=0.03, seed=11)))
    assert [v.id for v in diagnosis.failed] == ["progress.plateau"]


def test_loss_near_zero_at_the_start_is_never_flagged():
    h = healthy(loss=[1e-9] + flat(0.0, N - 1, 1e-3, seed=12))
    assert verdict("gradients.no_flow", h).status == "pass"
    assert verdict("gradients.no_flow", h).evidence["loss_first"] == 1e-9
    assert judge(h).failed == []


# ---------------------------------------------------------------- ordering, robustness

def test_fails_are_ordered_likeliest_cause_first():
    h = history(20, {"update/trainable_params": 0, "update/optimizer_params": 0,
                     "update/trainable_not_in_optimizer": 0, "update/changed_frac": 0.0},
                reward=flat(0.3, 20, 0.03, seed=13))
    diagnosis = judge(h)
    assert [v.id for v in diagnosis.failed] == ["update.optimizer_coverage", "update.weights_unchanged",
                                                "progress.plateau"]
    assert diagnosis.headline().startswith("Not learning because: update.optimizer_coverage (")
    assert diagnosis.status == "fail"
    assert [v.status for v in diagnosis.verdicts] == sorted((v.status for v in diagnosis.verdicts),
                                                            key=["fail", "inconclusive", "pass", "skipped"].index)


def test_a_run_without_any_signal_is_blamed_on_the_signal_not_the_gradient_path():
    # every group all-wrong: zero advantages, so a zero gradient and an all-KL pull are the right answers
    silent = dict(reward=0.0, reward_std=0.0, grad_norm=0.0, frac_reward_zero_std=1.0,
                  **{"advantage/zero_std_frac": 1.0, "advantage/zero_std_all_min_frac": 1.0,
                     "advantage/zero_std_all_max_frac": 0.0, "advantage/zero_frac": 1.0, "policy/kl_grad_share": 1.0,
                     "eval/reward": None})
    # at the floor of the reward's range with nothing moving, a silence waits out a sparse reward's start (50 steps)
    early = judge_one("reward.no_signal", healthy(**silent))
    assert early.status == "inconclusive" and early.evidence["sparse_start_steps_left"] == 50 - N, early.message()
    h = healthy(60, **silent)
    failed = [v.id for v in judge(h).failed]
    assert failed[0] == "reward.no_signal", failed
    assert "gradients.no_flow" not in failed and "kl.penalty_dominates" not in failed
    assert judge_one("gradients.no_flow", h).status == "skipped"
    assert judge_one("kl.penalty_dominates", h).status == "skipped"


def test_a_judge_that_raises_is_skipped_with_the_error_named(monkeypatch):
    def boom(history):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setitem(REGISTRY, "kl.drift", Hypothesis("kl.drift", REGISTRY["kl.drift"].title, boom))
    v = judge_one("kl.drift", healthy())
    assert v.status == "skipped" and v.id == "kl.drift"
    assert "ZeroDivisionError" in v.reason and "float division by zero" in v.reason
    diagnosis = judge(healthy())
    drift = next(v for v in diagnosis.verdicts if v.id == "kl.drift")
    assert drift.status == "skipped" and "ZeroDivisionError" in drift.reason
    assert diagnosis.failed == []


def test_verdict_json_has_the_contract_keys_and_is_serialisable():
    h = healthy(**{"update/rel_update": ["inf"] + flat(6e-3, N - 1)})
    out = judge(h).to_json()
    json.dumps(out)
    assert set(out["verdicts"][0]) >= {"id", "title", "status", "evidence", "prescription", "references"}


# ---------------------------------------------------------------- load_history

def test_load_run_dir_with_inf_strings_and_a_torn_last_line(tmp_path):
    lines = [{"step": 1, "reward": 0.2, "update/rel_update": "inf", "grad_norm": 0.3},
             {"step": 2, "reward": 0.3, "update/rel_update": 6e-3, "grad_norm": "nan"},
             {"step": 3, "reward": 0.4, "update/rel_update": 5e-3, "grad_norm": 0.2}]
    text = "\n".join(json.dumps(row) for row in lines) + '\n{"step": 4, "reward": 0.'
    (tmp_path / "metrics.jsonl").write_text(text)
    (tmp_path / "config.toml").write_text('task = "gsm8k"\nlearning_rate = 1e-5\nmax_grad_norm = 1.0\n')
    (tmp_path / "summary.json").write_text(json.dumps({"run": "exp0.3-gsm8k-0101", "total_seconds": 12.5}))
    h = load_history(tmp_path)
    assert h.run == "exp0.3-gsm8k-0101" and h.steps == 3 and h.run_dir == tmp_path
    assert h.setting("learning_rate") == 1e-5 and h.setting("task") == "gsm8k"
    assert h.summary["total_seconds"] == 12.5
    rel = h.series("update/rel_update")
    assert math.isinf(rel.values[0]) and rel.finite().values.tolist() == [6e-3, 5e-3]
    assert math.isnan(h.series("grad_norm").values[1])
    assert judge_one("gradients.non_finite", h).status == "fail"


def test_load_bare_metrics_jsonl(tmp_path):
    log = tmp_path / "my_run.jsonl"
    log.write_text("\n".join(json.dumps({"step": i, "reward": 0.1 * i}) for i in range(1, 4)) + "\n\n")
    h = load_history(log)
    assert h.run == "my_run" and h.steps == 3 and h.config == {} and h.run_dir is None
    assert h.series("reward").values.tolist() == pytest.approx([0.1, 0.2, 0.3])


def test_load_trl_trainer_state_folds_eval_keys(tmp_path):
    state = {"log_history": [
        {"step": 1, "loss": 0.0, "reward": 0.2, "grad_norm": 0.4, "frac_reward_zero_std": 0.5},
        {"step": 2, "eval_reward": 0.31, "eval_loss": 1.2},
        {"step": 2, "loss": 0.01, "reward": 0.3, "grad_norm": 0.3, "frac_reward_zero_std": 0.4},
        {"step": 2, "train_runtime": 10.0, "train_loss": 0.005}]}
    (tmp_path / "trainer_state.json").write_text(json.dumps(state))
    for path in (tmp_path / "trainer_state.json", tmp_path):
        h = load_history(path)
        assert h.steps == 2  # the eval row is no training step
        assert h.series("eval/reward").values.tolist() == [0.31]
        assert h.has("eval/loss") and not h.has("eval_reward") and not h.has("train_runtime")
        assert h.series("reward").values.tolist() == [0.2, 0.3]


def test_load_missing_path_names_it(tmp_path):
    missing = tmp_path / "runs" / "nope"
    with pytest.raises(FlatlineError, match=re.escape(str(missing))):
        load_history(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FlatlineError, match="metrics.jsonl"):
        load_history(tmp_path / "empty")


# ---------------------------------------------------------------- properties (Hypothesis)

@settings(deadline=None, max_examples=100)
@given(n=st.integers(MIN_TREND_POINTS, 40), step=st.floats(1e-3, 10.0), start=st.floats(-100, 100),
       data=st.data())
def test_trend_of_a_strictly_increasing_noisy_sequence_is_rising(n, step, start, data):
    noise = data.draw(st.lists(st.floats(0.0, 0.9), min_size=n, max_size=n))  # below one step: still increasing
    values = np.array([start + step * (i + u) for i, u in enumerate(noise)])
    assert np.all(np.diff(values) > 0)
    trend = Series("reward", np.arange(1.0, n + 1), values).trend()
    assert trend.rising and not trend.falling and trend.tau == pytest.approx(1.0) and trend.slope > 0


# Every metric some judge reads, and config keys that change their decisions.
METRICS = sorted(set(healthy_series()) | {
    "gradients/global_norm", "length/truncated_frac", "length/mean", "policy/entropy_mean", "rewards/errors",
    "rewards/unscored", "sampling/sampling_logp_difference/mean", "sampling/importance_sampling_ratio/mean"})
CONFIGS = st.fixed_dictionaries({}, optional={
    "task": st.sampled_from(["gsm8k", "musique", "bandit"]), "beta": st.sampled_from([0.0, 0.04, 0.5]),
    "max_grad_norm": st.sampled_from([0.0, 0.01, 1.0]), "num_iterations": st.sampled_from([1, 2]),
    "temperature": st.sampled_from([0.0, 1.0]), "lora_r": st.sampled_from([0, 16]),
    "learning_rate": st.sampled_from([1e-6, 1e-5]), "max_completion_length": st.sampled_from([32, 256]),
    "optim": st.sampled_from(["adamw_torch", "sgd"]), "per_device_train_batch_size": st.sampled_from([8, 32])})


# Counts a probe emits as integers: a non-finite count is not a log any tool writes, so they stay finite.
COUNTS = {"advantage/nonfinite_advantages", "advantage/near_zero_std_nonzero_adv", "advantage/group_size",
          "advantage/num_groups", "gradients/nonfinite", "gradients/params_without_grad", "update/trainable_params",
          "update/optimizer_params", "update/trainable_not_in_optimizer", "update/base_drift_tensors",
          "reward/errors", "rewards/errors", "rewards/unscored"}
FINITE = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@st.composite
def random_histories(draw, values=FINITE):
    n = draw(st.integers(1, 16))
    names = draw(st.lists(st.sampled_from(METRICS), max_size=12, unique=True))
    rows = []
    for i in range(n):
        row = {"step": i + 1}
        for name in names:
            if draw(st.booleans()) or name == "reward":
                row[name] = draw(FINITE if name in COUNTS else values)
        rows.append(row)
    return History(run="random", rows=rows, config=draw(CONFIGS))


@settings(deadline=None, max_examples=60)
@given(random_histories())
def test_random_finite_logs_never_break_a_judge(h):
    diagnosis = judge(h)
    assert len(diagnosis.verdicts) == len(hypothesis_ids())
    for v in diagnosis.verdicts:
        assert v.status in STATUSES
        assert "could not be judged" not in v.reason, v.message()  # judge_one caught an exception
    json.dumps(diagnosis.to_json())


@settings(deadline=None, max_examples=30)
@given(random_histories(values=st.one_of(FINITE, st.sampled_from(["nan", "inf", "-inf"]))))
def test_random_logs_with_non_finite_measurements_never_break_a_judge(h):
    for v in judge(h).verdicts:
        assert "could not be judged" not in v.reason, v.message()


def test_a_mask_leaving_completion_tokens_out_and_groups_mixing_prompts_fail():
    late = history(10, {"reward": ramp(0.2, 0.6, 10), "masks/completion_excluded_frac": [0.08] * 10})
    assert verdict("masking.completion_excluded", late).status == "fail"
    once = history(10, {"reward": ramp(0.2, 0.6, 10), "masks/completion_excluded_frac": [0.0] * 9 + [0.05]})
    assert verdict("masking.completion_excluded", once).status == "pass"  # the median: one odd step is no mask bug
    mixed = history(10, {"reward": ramp(0.2, 0.6, 10), "advantage/mixed_prompt_groups_frac": [0.0] * 9 + [0.5]})
    v = verdict("advantage.grouping", mixed)
    assert v.status == "fail" and v.evidence["mixed_prompt_groups_frac_max"] == 0.5


def test_dropout_left_on_warns_and_a_large_forward_gap_fails():
    on = history(10, {"reward": ramp(0.2, 0.6, 10), "policy/dropout_modules_active": [24] * 10})
    assert verdict("update.nondeterministic_forward", on).status == "warn"
    gap = history(10, {"reward": ramp(0.2, 0.6, 10), "policy/dropout_modules_active": [0] * 10,
                       "policy/repeat_forward_logprob_gap": [0.4] * 10})
    assert verdict("update.nondeterministic_forward", gap).status == "fail"
    off = history(10, {"reward": ramp(0.2, 0.6, 10), "policy/dropout_modules_active": [0] * 10,
                       "policy/repeat_forward_logprob_gap": [0.0] * 10})
    assert verdict("update.nondeterministic_forward", off).status == "pass"


def test_a_reward_function_that_never_scores_is_a_parse_failure():
    h = history(10, {"reward": ramp(0.2, 0.6, 10), "reward/errors": [0] * 10, "advantage/num_groups": [2] * 10,
                     "advantage/group_size": [4] * 10, "reward/format/none": [8] * 10, "reward/correct/none": [0] * 10})
    v = verdict("reward.parse_failures", h)
    assert v.status == "fail" and "format returned None for 100%" in v.reason


@pytest.mark.parametrize("calls, at_max_turns, status", [
    (ramp(0.7, 4.0), ramp(0.0, 1.0), "fail"),  # farmed: a lookup in every turn, episodes no longer answer
    (1.2, 0.9, "fail"),                         # a policy that already calls until max_turns
    (1.2, 0.05, "pass"),                        # the outcome is just not earned: the calls are not farmed
    (ramp(0.5, 1.0), 0.0, "pass"),              # learning to call once, the prerequisite of the task
])
def test_bonus_dominates_asks_whether_the_calls_are_farmed(calls, at_max_turns, status):
    h = healthy(**{"episodes/per_call_variance_share": 0.95, "episodes/per_call_share": 0.9,
                   "episodes/outcome_mean": ramp(0.02, 0.0, noise=0.01, seed=3, lo=0.0),
                   "episodes/tool_calls_per_episode": calls, "episodes/outcome/max_turns": at_max_turns})
    verdict = judge_one("episodes.bonus_dominates", h)
    assert verdict.status == status, verdict.message()
    if status == "pass":
        assert "not farmed" in verdict.message()
