"""progress.plateau judged by its mechanism (issue 25): a reward flat at the floor of its range is how GRPO with a
sparse outcome reward starts, so `flatline watch` must not fail the first dozens of steps of a healthy run; a fail
needs SPARSE_START_STEPS optimizer steps flat with nothing that precedes the reward moving, and a stall after a rise
is a warning only once it has lasted as long as the rise. Real prefixes come from data/real_runs (provenance in each
folder's source.toml), judged as `flatline watch` judges a growing log.

    .venv/bin/python -m pytest -q tests/test_hypotheses_plateau.py
"""
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_hypotheses import history, verdict

from flatline.diagnostics.history import load_history
from flatline.diagnostics.hypotheses.common import SPARSE_START_STEPS, optimizer_steps

CORPUS = Path(__file__).resolve().parent.parent / "data" / "real_runs"


def real_prefix(run_id: str, up_to_step: float | None = None):
    """A real run's log as read by `flatline diagnose`, cut after `up_to_step` (None: the whole log)."""
    source = tomllib.loads((CORPUS / run_id / "source.toml").read_text())
    h = load_history(CORPUS / run_id / source["log"])
    if up_to_step is None:
        return h
    return replace(h, rows=[r for r in h.rows if r["step"] <= up_to_step],
                   eval_rows=[r for r in h.eval_rows if r["step"] <= up_to_step])


# (run, last step of the prefix or None for the whole log, status, words in the reason)
REAL = [
    # Unsloth GSM8K notebooks ("You might have to wait 150 to 200 steps for any action"): healthy, flat at the start
    ("unsloth-qwen2.5-3b-gsm8k", 14, "inconclusive", "more optimizer steps"),
    ("xun3-qwen2.5-3b-gsm8k-a", 31, "inconclusive", "no reward gain yet"),
    ("h1073146274-qwen2.5-3b-gsm8k", 31, "inconclusive", "no reward gain yet"),
    ("xenonaesir-qwen2.5-3b-gsm8k", 10, "inconclusive", "no reward gain yet"),
    ("holazzer-qwen2.5-3b-gsm8k-flat", 40, "inconclusive", "110 more optimizer steps"),
    # healthy, at the floor: 0.06 -> -0.06 is a significant trend over 26 steps, but a fall there is the floor's noise
    ("holazzer-qwen2.5-3b-gsm8k-b", 26, "inconclusive", "at the floor of its range"),
    # verl GSM8K PPO: flat for its first 20 steps, then 0.16 -> 0.69
    ("verl_qwen05b_gsm8k_ppo_538", 19, "inconclusive", "at the floor of its range"),
    # reported broken and flat for the whole log: 250 steps at 0 with no reward component moving
    ("holazzer-qwen2.5-3b-gsm8k-flat", None, "fail", "reward is flat"),
    ("text2sql_coder3b_1000st", None, "fail", "reward is flat"),
    ("grpodyn-qwen2.5-7b-gsm8k-rho1.50-s43", None, "fail", "reward is falling"),
]


@pytest.mark.parametrize("run_id, up_to, status, words", REAL)
def test_real_prefixes_and_whole_logs(run_id, up_to, status, words):
    v = verdict("progress.plateau", real_prefix(run_id, up_to))
    assert v.status == status and words in v.reason, v.message()


def test_the_flat_start_is_measured_in_optimizer_steps_not_rows():
    # text2sql logs every 5th optimizer step: its 200 rows are 1,000 steps
    h = real_prefix("text2sql_coder3b_1000st")
    assert h.logging_steps == 5 and len(h.rows) == 200 and optimizer_steps(h) == 1000


def sparse(n: int, **series):
    """A GSM8K-like log at the floor: correctness never paid, reward ~0.01 of a [0, 1] score."""
    rng = np.random.default_rng(3)
    return history(n, reward=list(np.clip(0.01 + rng.normal(0, 0.01, n), 0, 1)), **series)


def test_a_flat_floor_fails_only_after_the_sparse_start():
    early = verdict("progress.plateau", sparse(SPARSE_START_STEPS - 20))
    assert early.status == "inconclusive" and "20 more optimizer steps" in early.reason
    late = verdict("progress.plateau", sparse(SPARSE_START_STEPS + 50))
    assert late.status == "fail" and "reward is flat" in late.reason


def test_a_flat_floor_with_a_format_reward_rising_is_not_a_plateau():
    n = SPARSE_START_STEPS + 50
    v = verdict("progress.plateau", sparse(n, **{"rewards/format_reward/mean": list(np.linspace(0.0, 0.3, n))}))
    assert v.status == "inconclusive" and "format_reward 0" in v.reason


def test_a_flat_floor_with_completion_length_changing_is_not_a_plateau():
    n = SPARSE_START_STEPS + 50
    v = verdict("progress.plateau", sparse(n, **{"completions/mean_length": list(np.linspace(400, 150, n))}))
    assert v.status == "inconclusive" and "completion length" in v.reason


def test_a_short_pause_after_a_long_rise_is_no_stall():
    # rises 0.2 -> 0.6 over 200 steps, flat for the last 100: shorter than the rise took
    rng = np.random.default_rng(4)
    reward = list(np.concatenate([np.linspace(0.2, 0.6, 200), np.full(100, 0.6)]) + rng.normal(0, 0.02, 300))
    v = verdict("progress.plateau", history(300, reward=reward))
    assert v.status == "inconclusive" and "as long as the rise" in v.reason
    assert v.evidence["stall_steps"] < v.evidence["rise_steps"]
