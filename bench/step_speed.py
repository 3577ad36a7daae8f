"""One GRPO step, flatline against TRL's GRPOTrainer, on the same model, prompts, group size, lengths and LoRA.

    python bench/step_speed.py [--steps 5] [--skip-trl] [--max-completion-length 48]

Both run on this machine's CPU one after the other (never at once), each for `steps` optimizer steps; the first
step of each is a warm-up and is dropped. Prints both medians and flatline / TRL (target: at most 0.67).
Needs the optional dependency trl (pip install -e ".[bench]").
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from flatline.trainer.config import load_config  # noqa: E402
from flatline.trainer.loop import build_trainer, prepare  # noqa: E402
from flatline.trainer.models import convert_embedded  # noqa: E402

TARGET_RATIO = 0.67


def shared_settings(args) -> list[str]:
    return [
        "model=smollm2-135m", "task=arithmetic", f"num_generations={args.num_generations}",
        f"per_device_train_batch_size={args.num_generations * args.prompts}",
        f"max_completion_length={args.max_completion_length}", "lora_r=16", "lora_alpha=32", "beta=0.0",
        "num_iterations=1", "gradient_accumulation_steps=1", "temperature=1.0", "learning_rate=1e-5",
        f"max_steps={args.steps}", "report_to=none", "eval_every=0", "loss_type=dapo", f"seed={args.seed}",
    ]


def flatline_step_times(args) -> tuple[list[float], list[float], list[list[dict]], object]:
    cfg = load_config(None, shared_settings(args))
    prepared = prepare(cfg)
    trainer = build_trainer(cfg, prepared=prepared)
    times, lengths = [], []
    for _ in range(args.steps):
        started = time.perf_counter()
        row = trainer.step()
        times.append(time.perf_counter() - started)
        lengths.append(row["completions/mean_length"])
        print(f"  flatline step {row['step']}: {times[-1]:.2f} s (generate {row['time/generate']:.2f} s, "
              f"train {row['time/train']:.2f} s, mean length {row['completions/mean_length']:.1f})", flush=True)
    prompts = [e.messages for e in prepared.task.examples("train")[: args.prompts]]
    return times, lengths, prompts, prepared.task


def median_after_warmup(times: list[float]) -> float:
    return statistics.median(times[1:] if len(times) > 1 else times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-completion-length", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-trl", action="store_true")
    args = parser.parse_args()

    model_dir = convert_embedded()
    print(f"SmolLM2-135M-Instruct fp32, LoRA r16 q/k/v/o, {args.prompts} prompts x {args.num_generations} "
          f"completions, <= {args.max_completion_length} new tokens, beta 0, {args.steps} steps each", flush=True)
    ours, lengths, prompts, task = flatline_step_times(args)
    ours_median = median_after_warmup(ours)
    print(f"flatline: median step {ours_median:.2f} s (mean completion length {statistics.mean(lengths):.1f})")
    if args.skip_trl:
        return 0

    from trl_step import trl_step_times

    examples = {e.messages[-1]["content"]: e for e in task.examples("train")}

    def reward_fn(prompts, completions, **kwargs):
        scores = []
        for prompt, completion in zip(prompts, completions):
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            example = examples[prompt[-1]["content"] if isinstance(prompt, list) else prompt]
            scores.append(task.total(task.score(text, example, [])))
        return scores

    theirs = trl_step_times(str(model_dir), prompts, reward_fn, num_generations=args.num_generations,
                            max_completion_length=args.max_completion_length, lora_r=16, lora_alpha=32,
                            learning_rate=1e-5, temperature=1.0, steps=args.steps - 1, seed=args.seed)
    theirs_median = median_after_warmup(theirs)
    ratio = ours_median / theirs_median
    print(f"TRL GRPOTrainer: median step {theirs_median:.2f} s ({', '.join(f'{t:.2f}' for t in theirs)})")
    print(f"flatline:        median step {ours_median:.2f} s ({', '.join(f'{t:.2f}' for t in ours)})")
    print(f"ratio flatline / TRL: {ratio:.2f} (target <= {TARGET_RATIO})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
