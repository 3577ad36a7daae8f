"""Several processes: `flatline train` under torchrun with 2 CPU processes (gloo) writes the numbers one process
writes on the same global batch, only rank 0 writes, and a rank that fails leaves the run marked failed.

The launches run tests/distributed_worker.py (flatline's CLI with a scripted sampler, so that both launches
sample the same completions); about 40 s on two cores.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flatline.common.errors import ConfigError
from flatline.trainer.distributed import World, local_share, world_from_env
from flatline.trainer.merged import merge_rollouts
from flatline.trainer.rollout import Rollout
from flatline.trainer.samplers.base import SampleBatch

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = WORKER.parents[1]
# Relative tolerance between one process and two: the gradient sums run in another order.
RTOL = 1e-5
# Numbers that differ by construction: timings, and the world size itself.
NOT_COMPARED = ("time/", "step_time", "world_size")


def launch(out: Path, *args: str, processes: int = 1, log_book: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLATLINE_LOG": str(log_book), "OMP_NUM_THREADS": "1",
           "FLATLINE_DIST_TIMEOUT_S": "120"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return subprocess.run([*launcher, str(WORKER), str(out), *args], env=env, capture_output=True, text=True,
                          timeout=240)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or abs(a - b) <= RTOL * max(abs(a), abs(b)) + 1e-12
    return a == b


@pytest.fixture(scope="module")
def launches(tmp_path_factory):
    """(one process on the global batch, two processes on half of it each): their run directories and log books."""
    base = tmp_path_factory.mktemp("distributed")
    (base / "one").mkdir()
    (base / "two").mkdir()
    one = launch(base / "one" / "run", "--ga", "2", log_book=base / "one.md")
    assert one.returncode == 0, one.stderr[-3000:]
    two = launch(base / "two" / "run", "--ga", "1", processes=2, log_book=base / "two.md")
    assert two.returncode == 0, two.stderr[-3000:]
    return base


def test_two_processes_write_the_numbers_of_one_process_on_the_same_global_batch(launches):
    one, two = rows(launches / "one" / "run"), rows(launches / "two" / "run")
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        keys = [k for k in set(a) | set(b) if not k.startswith(NOT_COMPARED)]
        differ = {k: (a.get(k), b.get(k)) for k in keys if not close(a.get(k), b.get(k))}
        assert not differ, differ
        assert b["world_size"] == 2
    first = one[0]
    for name in ("gradients/global_norm", "gradients/norm/q_proj.lora_A", "gradients/norm/v_proj.lora_B",
                 "update/rel_update", "update/lora_effective_rel_update", "update/precision_kept",
                 "update/trainable_params", "update/optimizer_params", "update/trainable_not_in_optimizer",
                 "reward", "reward_std", "reward/reward/mean", "advantage/num_groups", "advantage/abs_mean",
                 "advantage/zero_std_frac", "grad_norm", "loss", "entropy", "num_tokens"):
        assert name in first and first[name] == first[name], name  # present and not NaN
    assert first["advantage/num_groups"] == 4  # 2 prompts per rank x 2 ranks, whole groups
    assert first["update/trainable_not_in_optimizer"] == 0
    samples_one = (launches / "one" / "run" / "samples.jsonl").read_text()
    assert samples_one == (launches / "two" / "run" / "samples.jsonl").read_text()


def test_only_rank_0_writes_the_run_directory_the_report_and_the_log_book_entry(launches):
    assert sorted(p.name for p in (launches / "two").iterdir() if p.is_dir()) == ["run"]  # no run-2 from rank 1
    written = {p.name for p in (launches / "two" / "run").iterdir()}
    assert {"config.toml", "diagnosis.json", "diagnosis.md", "metrics.jsonl", "samples.jsonl", "summary.json"} <= written
    assert written == {p.name for p in (launches / "one" / "run").iterdir()}  # what one process writes, no more
    assert json.loads((launches / "two" / "run" / "summary.json").read_text())["status"] == "completed"
    book = (launches / "two.md").read_text()
    assert book.count("<!-- flatline-entry ") == 1 and "status=completed" in book


def test_a_rank_that_fails_leaves_the_run_directory_marked_failed_with_its_error(tmp_path):
    (tmp_path / "two").mkdir()
    done = launch(tmp_path / "two" / "run", "--steps", "3", "--fail-rank", "1", processes=2,
                  log_book=tmp_path / "book.md")
    assert done.returncode != 0
    run = tmp_path / "two" / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"] == "rank 1: ValueError: planted failure on rank 1"
    assert summary["steps_completed"] == 1 == len(rows(run))
    book = (tmp_path / "book.md").read_text()
    assert book.count("<!-- flatline-entry ") == 1 and "status=failed" in book


# --- the pure parts, without processes ---

def test_world_from_env_reads_the_launchers_variables_and_refuses_bad_ones():
    assert world_from_env({}) == World(0, 1, 0)
    assert world_from_env({"WORLD_SIZE": "3", "RANK": "2", "LOCAL_RANK": "0"}) == World(2, 3, 0)
    with pytest.raises(ConfigError, match="WORLD_SIZE='two' is not an integer"):
        world_from_env({"WORLD_SIZE": "two"})
    with pytest.raises(ConfigError, match="0 <= RANK < WORLD_SIZE"):
        world_from_env({"WORLD_SIZE": "2", "RANK": "2"})


def test_local_share_gives_each_rank_a_contiguous_block_of_whole_prompts():
    prompts = list("abcdef")
    assert [local_share(prompts, World(r, 3)) for r in range(3)] == [["a", "b"], ["c", "d"], ["e", "f"]]
    with pytest.raises(ConfigError, match="not a multiple of the 4 processes"):
        local_share(prompts, World(0, 4))


def ragged_rollout(prompt_width: int, completion_width: int, value: float) -> Rollout:
    n = 2
    samples = SampleBatch(prompt_ids=torch.full((n, prompt_width), 5), prompt_mask=torch.ones(n, prompt_width),
                          completion_ids=torch.full((n, completion_width), 7),
                          sampler_logprobs=torch.full((n, completion_width), value),
                          completion_lengths=torch.full((n,), completion_width), truncated=torch.zeros(n, dtype=torch.bool))
    return Rollout(examples=["e"], samples=samples, completion_mask=torch.ones(n, completion_width),
                   completion_lengths=samples.completion_lengths, completions=["x", "y"],
                   rewards=torch.tensor([value, 0.0]), reward_components={"r": [value, None]},
                   reward_weights={"r": 1.0}, reward_errors=1, advantages=torch.tensor([1.0, -1.0]),
                   ref_logprobs=torch.full((n, completion_width), value))


def test_merge_rollouts_pads_prompts_left_and_completions_right_to_the_widest_rank():
    whole = merge_rollouts([ragged_rollout(3, 2, 0.5), ragged_rollout(2, 4, 0.25)], pad_token_id=0)
    assert whole.samples.prompt_ids.tolist()[2] == [0, 5, 5]
    assert whole.samples.prompt_mask.tolist()[2] == [0, 1, 1]
    assert whole.samples.completion_ids.tolist()[0] == [7, 7, 0, 0]
    assert whole.completion_mask.tolist()[0] == [1, 1, 0, 0]
    assert whole.ref_logprobs.tolist()[0] == [0.5, 0.5, 0.0, 0.0]
    assert whole.reward_components == {"r": [0.5, None, 0.25, None]}
    assert whole.reward_errors == 2 and whole.examples == ["e", "e"] and whole.advantages.numel() == 4


# --- DeepSpeed ZeRO-3 (CPU path), when deepspeed is installed ---

DEEPSPEED_WORKER = Path(__file__).with_name("deepspeed_worker.py")


def zero3_available() -> bool:
    try:
        import deepspeed  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.deepspeed
@pytest.mark.skipif(not zero3_available(), reason="needs deepspeed (the [deepspeed] extra; `make test-deepspeed`)")
def test_zero3_sharded_lora_probes_equal_one_process_on_the_same_batch(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, str(DEEPSPEED_WORKER), str(tmp_path / "one.json")], env=env,
                         capture_output=True, text=True, timeout=240)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(DEEPSPEED_WORKER), str(tmp_path / "two.json")], env=env, capture_output=True, text=True,
                         timeout=400)
    assert two.returncode == 0, two.stderr[-3000:]
    single, sharded = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert len(single) == len(sharded) > 0
    for a, b in zip(single, sharded):
        assert b["sharded"] == 1  # the parameters really were ZeRO-3 shards
        shared = [k for k in b if k != "sharded"]
        assert {"gradients/global_norm", "gradients/norm/fc1.lora_A", "update/rel_update/fc2.lora_B",
                "update/changed_frac", "update/trainable_params"} <= set(shared)
        for k in shared:  # DeepSpeed reduces in float32 in another order: 1e-6 of each number
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-12), k
