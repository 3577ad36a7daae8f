"""bench/detection_vs_rldoctor.py: its matching and printout on hand-made outcomes (no rldoctor, no runs)."""
import importlib.util
import sys
from pathlib import Path

from flatline.harness.selftest.faults import FAULTS, HEALTHY

_PATH = Path(__file__).resolve().parents[1] / "bench" / "detection_vs_rldoctor.py"
_SPEC = importlib.util.spec_from_file_location("detection_vs_rldoctor", _PATH)
bench = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = bench  # dataclasses look their module up
_SPEC.loader.exec_module(bench)

CASES = {c.name: c for c in FAULTS + HEALTHY}
DETECTORS = ["advantage_collapse", "entropy_collapse", "kl_drift", "length_pathology", "plateau"]


def outcome(name, failed=(), fired=None, seed=0):
    return bench.Outcome(CASES[name], seed, failed=set(failed), fired=dict(fired or {}),
                         said={d: ("OK", "fine") for d in DETECTORS})


def test_case_names_split_into_fault_and_seed():
    assert bench.split_case("lr_1e-7-seed0") == ("lr_1e-7", 0)
    assert bench.split_case("kl_beta_0.04-seed4") == ("kl_beta_0.04", 4)
    assert bench.split_case("notes") is None


def test_a_catch_needs_the_mapped_detector_or_any_warning_where_nothing_is_mapped():
    beta = outcome("beta_swamps", ["kl.penalty_dominates"], {"length_pathology": "CRITICAL"})
    assert bench.flatline_caught(beta) and not bench.rldoctor_caught(beta)
    beta.fired["kl_drift"] = "WARNING"
    assert bench.rldoctor_caught(beta)
    shifted = outcome("shifted_groups", [], {"plateau": "WARNING"})
    assert bench.targets(shifted.fault) == bench.ANY and bench.rldoctor_caught(shifted)
    assert not bench.flatline_caught(shifted)
    assert not bench.rldoctor_caught(shifted, ignore={"plateau"})
    assert set(bench.RLDOCTOR_DETECTORS) <= {f.name for f in FAULTS}


def test_the_printout_has_both_matrices_totals_and_the_one_tool_catches():
    outcomes = [outcome("beta_swamps", ["kl.penalty_dominates", "progress.plateau"], {"length_pathology": "CRITICAL"}),
                outcome("constant_reward", ["reward.no_signal"],
                        {"advantage_collapse": "CRITICAL", "length_pathology": "CRITICAL"}),
                outcome("shifted_groups", ["control.learns"], {"length_pathology": "CRITICAL"}),
                outcome("healthy", [], {"length_pathology": "WARNING"}),
                outcome("healthy", ["entropy.collapse"], {"length_pathology": "WARNING"}, seed=1)]
    outcomes[0].trl_only_fired = {"length_pathology"}
    text = bench.render(outcomes, DETECTORS, "0.2.0", refused=[CASES["lora_targets_nothing"]])
    assert "flatline vs rldoctor 0.2.0" in text
    assert "flatline 2/3" in text and "rldoctor 2/3" in text
    assert "flatline 1/2" in text and "rldoctor 2/2" in text  # healthy runs with an alarm
    assert "FALSE ALARM" in text and "MISSED" in text and "missing:advantage.numerics" in text
    assert "caught by flatline only" in text and "beta_swamps-seed0" in text
    assert "caught by rldoctor only" in text and "shifted_groups-seed0" in text
    assert "lora_targets_nothing" in text and "refused at start" in text
    assert "length_pathology fired on every bandit run" in text and "catches 1/3" in text
    assert "beta_swamps-seed0 kl_drift OK: fine" in text
    assert "fires the same detectors on every run" in text


def test_length_pathology_is_set_aside_on_bandit_runs_only():
    # on the bandit every completion is cut at its one-token limit; on SmolLM2 a truncation warning means something
    outcomes = [outcome("lr_1e-7", ["update.too_small"], {"length_pathology": "WARNING"}),
                outcome("completion_too_short", ["length.truncation"], {"length_pathology": "CRITICAL"}),
                outcome("healthy", [], {"length_pathology": "WARNING"})]
    text = " ".join(bench.render(outcomes, DETECTORS, "0.2.0").split())
    assert "rldoctor 1/2" in text  # completion_too_short, by its mapped detector
    assert "With it set aside on the bandit runs: rldoctor catches 1/2 faults" in text
    assert "alarms on 0/1 healthy runs" in text
