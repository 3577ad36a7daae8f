"""bench/diagnose_peers.py and bench/healthy_logs.py: their pure pieces, the simulator's healthy-by-construction
ranges and the interval math. Fast: short simulated runs, no rldoctor needed (its checks skip when not installed)."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import diagnose_peers as peers  # noqa: E402
from bench import grpo_runs, healthy_logs  # noqa: E402
from bench.grpo_log import batch_metrics, dapo_loss, log_history  # noqa: E402
from bench.grpo_planted import PLANTS, planted_base, planted_run  # noqa: E402
from bench.intervals import binomial_interval, poisson_interval, rate_per_1000  # noqa: E402
from flatline.diagnostics.history import History  # noqa: E402
from flatline.diagnostics.judge import hypothesis_ids  # noqa: E402

RLDOCTOR = importlib.util.find_spec("rl_doctor") is not None
# rldoctor 0.2.0's rl_doctor.simulate.SCENARIOS, copied so the table is checked without rldoctor installed
RLDOCTOR_SCENARIOS = ("healthy", "entropy_collapse", "saturated_groups", "too_hard", "reward_hacking", "length_hacking",
                      "truncation", "kl_blowup", "clip_saturation", "grad_spikes", "plateau", "format_domination")
SHORT = 240  # steps of the simulated runs in these tests


def _training(history):
    return [e for e in history if "reward" in e]


# -- interval math ----------------------------------------------------------------------------------------------------


def test_garwood_interval_matches_the_published_table():
    # Garwood (1936) / the standard exact Poisson table: 0 -> (0, 3.689), 1 -> (0.0253, 5.572), 3 -> (0.619, 8.767)
    assert poisson_interval(0) == (0.0, pytest.approx(3.6889, abs=1e-4))
    assert poisson_interval(1) == (pytest.approx(0.02532, abs=1e-5), pytest.approx(5.5716, abs=1e-4))
    assert poisson_interval(3) == (pytest.approx(0.6187, abs=1e-4), pytest.approx(8.7673, abs=1e-4))
    rate, low, high = rate_per_1000(3, 12_000)
    assert (rate, low, high) == (0.25, pytest.approx(0.6187 / 12, abs=1e-5), pytest.approx(8.7673 / 12, abs=1e-5))


def test_clopper_pearson_interval_has_its_closed_forms_at_the_ends():
    # 0 of n: upper = 1 - (alpha/2)^(1/n); n of n: lower = (alpha/2)^(1/n)
    assert binomial_interval(0, 20) == (0.0, pytest.approx(1 - 0.025 ** (1 / 20)))
    assert binomial_interval(20, 20) == (pytest.approx(0.025 ** (1 / 20)), 1.0)
    low, high = binomial_interval(2, 20)
    assert low < 0.1 < high


# -- diagnose_peers: the scenario table and the TRL log --------------------------------------------------------------


def test_the_scenario_table_covers_every_rldoctor_scenario_with_known_ids():
    assert tuple(peers.TARGETS) == RLDOCTOR_SCENARIOS
    known = set(hypothesis_ids())
    for scenario, target in peers.TARGETS.items():
        assert target.flatline <= known, scenario
        assert bool(target.flatline) == bool(target.rldoctor) == (scenario != "healthy")
        assert target.why


@pytest.mark.skipif(not RLDOCTOR, reason="rldoctor not installed (pip install -e '.[bench]')")
def test_the_scenario_table_matches_rldoctor_itself():
    from rl_doctor.detectors import available
    from rl_doctor.simulate import EXPECTED_DETECTIONS, SCENARIOS

    assert tuple(SCENARIOS) == RLDOCTOR_SCENARIOS
    detectors = set(available())
    for scenario, target in peers.TARGETS.items():
        assert target.rldoctor <= detectors
        assert set(EXPECTED_DETECTIONS[scenario]) <= target.rldoctor  # rldoctor's own expectation counts


def test_simulator_records_become_trl_log_history():
    records = [{"step": i, "reward": 0.1 * i, "perf/throughput": 9.0, "step_time": 2.0,
                **({"eval/accuracy": 0.5} if i % 2 == 0 else {})} for i in range(3)]
    history = peers.trl_log_history(records, "reward")
    assert [e["step"] for e in history] == [1, 1, 2, 3, 3, 3]
    assert history[1] == {"eval_reward": 0.5, "step": 1, "epoch": round(1 / 3, 4)}
    assert all("perf/throughput" not in e and "eval/accuracy" not in e for e in history)
    assert "train_runtime" in history[-1] and history[-1]["train_runtime"] == 6.0
    assert "eval_accuracy" in peers.trl_log_history(records, "accuracy")[1]


def _outcome(scenario, flatline=(), rldoctor=(), seed=0, key="reward", info=()):
    said = {i: ("fail", "why") for i in flatline}
    found = {d: ("WARNING", "summary") for d in rldoctor} | {d: ("INFO", "note") for d in info}
    return peers.Outcome(scenario, seed, key, flatline=said, rldoctor=found)


def test_the_summary_and_the_gate_count_what_rldoctor_caught_and_healthy_alarms():
    outcomes = [_outcome("kl_blowup", ["kl.drift"], ["kl_drift"]),
                _outcome("plateau", [], ["plateau"]),  # flatline misses what rldoctor caught
                _outcome("too_hard", ["reward.no_signal"], []),  # flatline alone: not in the denominator
                _outcome("healthy", [], [], info=["reward_composition"]),
                _outcome("healthy", ["progress.plateau"], ["plateau"], seed=1)]
    line = peers.summary_line(outcomes)
    assert line == ("flatline caught 1/2 of the pathologies rldoctor caught; healthy alarms flatline 1/2, rldoctor 1/2 "
                    "(WARNING+), 2/2 (INFO+)")
    assert peers.gate_failures(outcomes) == ["eval_reward: missed plateau (seeds 0)",
                                             "eval_reward: alarm on healthy (seeds 1)"]
    assert peers.gate_failures(outcomes[:1]) == []
    text = "\n".join(peers.render_key(outcomes, "reward", detail=True))
    assert "-R" in text and "flatline ALARM healthy-seed1 progress.plateau" in text


def test_seed_ranges_parse():
    assert peers.parse_seeds(["0-2", "7"]) == [0, 1, 2, 7]


# -- the simulator: healthy by construction ----------------------------------------------------------------------------


@pytest.mark.parametrize("dynamic", sorted(grpo_runs.DYNAMICS))
def test_healthy_runs_learn_and_stay_in_their_stated_ranges(dynamic):
    for seed in (0, 1):
        spec, latent = grpo_runs.healthy_run(seed, dynamic, steps=SHORT)
        # the policy improves, on held-out prompts as on training ones, and keeps improving to the end
        assert latent.skill[-1] > latent.skill[0] and latent.eval_skill[-1] - latent.eval_skill[0] == pytest.approx(
            latent.skill[-1] - latent.skill[0])
        assert latent.skill[-1] > latent.skill[2 * SHORT // 3] or dynamic == "solved"
        # entropy keeps at least a quarter of its start (no collapse), never blows up
        assert latent.entropy.min() >= grpo_runs.ENTROPY_KEEPS[0] * latent.entropy[0] * 0.999
        assert latent.entropy.max() <= 1.15 * latent.entropy[0] + 1e-9
        # KL levels off below KL_LEVEL's top; 0 without a reference model
        assert np.all(np.diff(latent.kl) >= 0) and latent.kl.max() <= grpo_runs.KL_LEVEL[1]
        # at most two isolated gradient spikes, SPIKE_GAP apart
        spikes = np.flatnonzero(latent.spikes > 1)
        assert len(spikes) <= 2 and (len(spikes) < 2 or spikes[1] - spikes[0] >= grpo_runs.SPIKE_GAP)
        # completions grow only where the held-out skill gains at least a logit (length paid for by learning)
        if latent.length[-1] > 1.15 * latent.length[0]:
            assert latent.eval_skill[-1] - latent.eval_skill[0] >= 1.0
        assert spec.prompts * spec.generations <= grpo_runs.MAX_COMPLETIONS
        assert latent.identical.max() <= grpo_runs.IDENTICAL_GROUPS


def test_a_healthy_log_has_trls_names_and_ranges():
    spec, latent = grpo_runs.healthy_run(3, "concise", steps=SHORT)
    history = log_history(spec, latent)
    train = _training(history)
    evals = [e for e in history if "eval_reward" in e]
    assert len(train) == SHORT and [e["step"] for e in train] == list(range(1, SHORT + 1))
    assert len(evals) == SHORT // spec.eval_every and "train_runtime" in history[-1]
    top = sum(w for _, w in spec.rewards)
    names = {"reward", "reward_std", "frac_reward_zero_std", "entropy", "grad_norm", "loss", "learning_rate",
             "completions/mean_length", "completions/clipped_ratio", "completions/mean_terminated_length",
             "clip_ratio/region_mean", "num_tokens", "step_time"}
    names |= {f"rewards/{name}/{stat}" for name, _ in spec.rewards for stat in ("mean", "std")}
    for entry in train:
        assert names <= set(entry) and ("kl" in entry) == (spec.beta > 0)
        assert 0 <= entry["reward"] <= top and 0 <= entry["frac_reward_zero_std"] <= 1
        assert 0 <= entry["completions/clipped_ratio"] <= 1 and entry["grad_norm"] >= 0
        assert entry["completions/mean_length"] <= spec.max_completion_length
        if spec.num_iterations == 1:
            assert entry["clip_ratio/region_mean"] == 0.0
    # the arithmetic run: answers shorten and the truncated share falls as the reward rises
    first, last = train[:20], train[-20:]
    mean = lambda rows, k: float(np.mean([r[k] for r in rows]))  # noqa: E731
    assert mean(last, "completions/mean_length") < mean(first, "completions/mean_length")
    assert mean(last, "completions/clipped_ratio") < mean(first, "completions/clipped_ratio")
    assert mean(last, "reward") > mean(first, "reward")


def test_batch_metrics_follow_trls_definitions():
    total = np.array([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])  # [B=2, G=4]: one mixed group, one flat
    lengths = np.array([[10.0, 30.0, 10.0, 30.0], [5.0, 5.0, 5.0, 5.0]])
    batch = {"rewards": {"accuracy_reward": total}, "total": total, "lengths": lengths,
             "cut": np.zeros_like(total, dtype=bool)}
    metrics = batch_metrics(batch)
    assert metrics["reward"] == 0.75 and metrics["frac_reward_zero_std"] == 0.5
    assert metrics["reward_std"] == pytest.approx(np.std(total, ddof=1))
    # the correct completions are the short ones, so the token-weighted advantages sum below 0 and the on-policy
    # loss -sum(A * tokens) / sum(tokens) is positive; with equal lengths it is exactly 0
    assert dapo_loss(total, lengths) > 0
    assert dapo_loss(total, np.full_like(lengths, 7.0)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("pathology", sorted(PLANTS))
def test_a_plant_leaves_the_healthy_part_alone(pathology):
    spec, latent = planted_run(0, pathology)
    base_spec, base, onset, _ = planted_base(0, pathology)
    lo, hi = grpo_runs.ONSET
    assert spec.onset == onset and lo * spec.steps - 1 <= onset <= hi * spec.steps
    assert spec.pathology == pathology and pathology in healthy_logs.TARGETS
    changed = [name for name in vars(latent) if not np.allclose(getattr(latent, name)[:onset + 1],
                                                                getattr(base, name)[:onset + 1])]
    assert changed == ([] if pathology != "component_saturates" else ["format_skill"])
    assert any(not np.allclose(getattr(latent, name)[onset + 1:], getattr(base, name)[onset + 1:])
               for name in vars(latent))


PATHOLOGICAL = {  # what each plant must have done by the end of the run (grpo_planted.py's docstrings)
    "entropy_collapse": lambda s, x, o: x.entropy[-1] <= 0.05 * x.entropy[o] and x.identical[-1] >= 0.8,
    "kl_blowup": lambda s, x, o: x.kl[-1] >= 3.0 and s.beta > 0,
    "plateau": lambda s, x, o: np.all(x.skill[o:] == x.skill[o]),
    "length_growth": lambda s, x, o: x.length[-1] >= 3 * x.length[o] and np.all(x.eval_skill[o:] == x.eval_skill[o])
    and x.length.max() * 2 < s.max_completion_length,
    "eval_falls": lambda s, x, o: x.eval_skill[-1] <= x.eval_skill[o] - 1 and x.skill[-1] > x.skill[o],
    "component_saturates": lambda s, x, o: x.format_skill[o - 1] <= -1 and x.format_skill[-1] >= 4.9,
    "truncation_rising": lambda s, x, o: x.length[-1] >= s.max_completion_length,
    "grad_spikes": lambda s, x, o: np.sum(x.spikes[o:] >= 15) >= 3,
    "zero_variance_takeover": lambda s, x, o: x.difficulty_shift[-1] >= 5
    and all(name != "partial_credit_reward" for name, _ in s.rewards),
    "entropy_blowup": lambda s, x, o: x.entropy[-1] >= 6 * x.entropy[o] and x.skill[-1] < x.skill[o],
}


@pytest.mark.parametrize("pathology", sorted(PLANTS))
def test_a_plant_is_pathological_by_the_end(pathology):
    for seed in range(3):
        spec, latent = planted_run(seed, pathology)
        assert PATHOLOGICAL[pathology](spec, latent, spec.onset), (pathology, seed)


# -- healthy_logs: targets, prefixes, alarm events ------------------------------------------------------------------


def test_planted_targets_name_known_ids_and_families():
    known = hypothesis_ids()
    for pathology, target in healthy_logs.TARGETS.items():
        assert healthy_logs.matching_ids(target.flatline, known), pathology
    assert healthy_logs.matching_ids(["entropy.*"], ["entropy.collapse", "entropy.rise", "kl.drift"]) == [
        "entropy.collapse", "entropy.rise"]
    assert set(healthy_logs.TARGETS) == set(PLANTS)


def test_judged_steps_end_at_the_last_step():
    assert healthy_logs.judged_steps(25, 100, 25) == [25, 50, 75, 100]
    assert healthy_logs.judged_steps(25, 110, 25) == [25, 50, 75, 100, 110]
    assert healthy_logs.judged_steps(300, 300, 10) == [300]


def test_a_prefix_keeps_the_rows_logged_so_far():
    rows = [{"step": 1, "reward": 0.1}, {"step": 2, "reward": 0.2}, {"step": 2, "eval/reward": 0.3},
            {"step": 3, "reward": 0.4}]
    cut = healthy_logs.prefix(History("run", rows, config={"beta": 0.0}), 2)
    assert cut.rows == rows[:3] and cut.config == {"beta": 0.0} and len(cut.series("reward")) == 2


def test_an_alarm_event_is_an_id_entering_fail_or_warn():
    timeline = [(25, {}), (50, {"progress.plateau": ("fail", "flat")}), (75, {"progress.plateau": ("fail", "flat")}),
                (100, {}), (125, {"progress.plateau": ("warn", "flat"), "kl.drift": ("warn", "up")})]
    events = healthy_logs.entering(timeline, "run")
    assert [(e.step, e.id, e.status) for e in events] == [(50, "progress.plateau", "fail"), (125, "kl.drift", "warn"),
                                                          (125, "progress.plateau", "warn")]
    assert healthy_logs.summarise_ttf([30, 10, 50]) == "30 (10-50)" and healthy_logs.summarise_ttf([]) == "-"


def test_time_to_flag_counts_from_the_onset_and_not_before_it():
    result = healthy_logs.PlantResult("x", "plateau", onset=300, steps=700,
                                      flags={"flatline": healthy_logs.Flag(at=340, by="progress.plateau"),
                                             "rldoctor": healthy_logs.Flag(at=300, before_onset=True)})
    assert result.time_to_flag("flatline") == 40 and result.time_to_flag("rldoctor") is None
