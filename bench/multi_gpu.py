"""Several processes against one: do the probes' numbers of a W-process `flatline train` equal those of one process
on the same global batch, what does each rank see, and what do the probes cost per step?

    python bench/multi_gpu.py --device cuda --arch 7b --processes 2     # 2 GPUs: random-init Qwen2.5-7B shape, LoRA
    python bench/multi_gpu.py --device cpu --arch tiny --processes 2    # 2 gloo processes, the tiny Llama (CI-sized)

Three launches of tests/distributed_worker.py (flatline's CLI; a scripted sampler, so every launch trains on the
same completions and the timings are the trainer's and the probes', not generation's):
  1. one process, gradient_accumulation_steps = W (the global batch), probes full;
  2. W processes (torch.distributed.run), one micro-batch each, probes full, each rank logging its gradient norm
     before and after the all-reduce;
  3. W processes, probes none (the step time without probes).
It prints the largest relative difference between launches 1 and 2 over every number in metrics.jsonl, the
per-rank and reduced gradient norms against the one process's gradients/global_norm, and the median step time
(steps after the first) with and without probes.

--arch 7b writes a random-initialised model with Qwen2.5-7B's shape (28 layers, hidden 3584, GQA 28/4, vocabulary
152064; bf16, about 15 GB) and the embedded tokenizer to --model-dir once, and trains LoRA r16 on q,k,v,o. What it
leaves out: DeepSpeed ZeRO-3 (flatline's trainer replicates the weights; tests/deepspeed_worker.py checks the
sharded-parameter probes), and vLLM.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed_worker.py"
# Qwen2.5-7B's config.json (the shape only; the weights are random).
QWEN25_7B = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=3584, intermediate_size=18944,
                 num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                 max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
                 hidden_act="silu", torch_dtype="bfloat16")
NOT_COMPARED = ("time/", "step_time", "world_size")


def random_7b(directory: Path) -> Path:
    """A random-initialised Qwen2.5-7B-shaped model with the embedded tokenizer, written once."""
    if (directory / "config.json").exists():
        return directory
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from flatline.trainer.models import convert_embedded

    tokenizer = AutoTokenizer.from_pretrained(str(convert_embedded()))
    config = AutoConfig.for_model(**{k: v for k, v in QWEN25_7B.items() if k not in ("architectures",)},
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def launch(out: Path, processes: int, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(ROOT)
    env["FLATLINE_LOG"] = str(out.parent / "LOG.md")
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    done = subprocess.run([*launcher, str(WORKER), str(out), *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench/multi_gpu.py: the launch of {processes} process(es) failed:\n{done.stderr[-3000:]}")


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def relative_difference(a, b) -> float:
    if not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
        return 0.0 if a == b else math.inf
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    return abs(a - b) / max(abs(a), abs(b))


def largest_differences(one: list[dict], many: list[dict], top: int = 3) -> tuple[int, list[tuple[float, str]]]:
    """How many numbers were compared, and the `top` largest relative differences with their names."""
    found = []
    for a, b in zip(one, many):
        for key in set(a) | set(b):
            if not key.startswith(NOT_COMPARED):
                found.append((relative_difference(a.get(key), b.get(key)), f"step {a['step']} {key}"))
    return len(found), sorted(found, reverse=True)[:top]


def median_step_time(run: list[dict]) -> float:
    times = [r["step_time"] for r in run[1:]] or [r["step_time"] for r in run]
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--arch", choices=("tiny", "7b"), default="tiny")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--model-dir", default=str(Path(tempfile.gettempdir()) / "flatline-qwen25-7b-random"))
    parser.add_argument("--out", help="folder for the runs (default: a temporary one)")
    args = parser.parse_args()
    W = args.processes
    settings = [f"device={args.device}"]
    if args.arch == "7b":
        settings += [f"model={random_7b(Path(args.model_dir))}", "dtype=bfloat16", "lora_r=16", "lora_alpha=32",
                     "learning_rate=1e-5", "max_prompt_length=64"]
    common = ["--steps", str(args.steps)] + [x for s in settings for x in ("--set", s)]
    base = Path(args.out or tempfile.mkdtemp(prefix="flatline-multi-"))
    for name in ("one", "many", "many-noprobes", "ranks"):
        (base / name).mkdir(parents=True, exist_ok=True)
    launch(base / "one" / "run", 1, "--ga", str(W), "--probes", "full", *common)
    launch(base / "many" / "run", W, "--ga", "1", "--probes", "full", "--per-rank", str(base / "ranks"), *common)
    launch(base / "many-noprobes" / "run", W, "--ga", "1", "--probes", "none", *common)

    one, many, bare = (rows(base / n / "run") for n in ("one", "many", "many-noprobes"))
    compared, worst = largest_differences(one, many)
    print(f"device {args.device}, arch {args.arch}, {W} processes, {args.steps} steps; runs under {base}")
    print(f"numbers compared (1 process vs {W}, same global batch): {compared}; largest relative differences:")
    for difference, where in worst:
        print(f"  {difference:.2e}  {where}")
    print("gradient norm per step: each rank's own (before the all-reduce) | reduced on each rank | 1 process's "
          "gradients/global_norm")
    per_rank = [[json.loads(line) for line in (base / "ranks" / f"rank{r}.jsonl").read_text().splitlines()]
                for r in range(W)]
    for step, single in enumerate(one):
        local = " ".join(f"{per_rank[r][step]['local_grad_norm']:.6g}" for r in range(W))
        reduced = " ".join(f"{per_rank[r][step]['reduced_grad_norm']:.8g}" for r in range(W))
        print(f"  step {step + 1}: {local} | {reduced} | {single['gradients/global_norm']:.8g}")
    with_probes, without = median_step_time(many), median_step_time(bare)
    print(f"median step time, {W} processes: probes full {with_probes:.3f} s, probes none {without:.3f} s "
          f"({(with_probes / without - 1) * 100:+.0f}%); 1 process (global batch, probes full) "
          f"{median_step_time(one):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
