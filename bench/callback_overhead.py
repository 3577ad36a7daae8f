"""FlatlineCallback's overhead on a real TRL GRPOTrainer run: the same run without it, with probes="cheap" and
probes="full", side by side in one invocation.

    pip install -e ".[trl]"
    python bench/callback_overhead.py                  # SmolLM2 + LoRA r8, CPU, 3 rounds x 6 steps per variant
    python bench/callback_overhead.py --model tiny --rounds 2 --steps 4

The variants run interleaved (none, cheap, full, none, cheap, full, ...) so that a noisy shared machine slows them
alike. A step's time is TRL's own `step_time` (generation, scoring and the optimizer step) plus the callback's work
after the step (on_step_end: the batch probes, samples.jsonl, the live judgement every JUDGE_EVERY steps), measured
as the wall time between consecutive on_step_end calls; the first step of each run (warm-up) is left out. Reported:
median seconds per step and the ratio to the bare run. Output committed under reports/examples/callback_overhead.txt.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from trl_runs import trl_trainer  # noqa: E402

from flatline.integrations.trl import FlatlineCallback  # noqa: E402

JUDGE_EVERY = 5
VARIANTS = ("none", "cheap", "full")


class StepClock:
    """Wall time between consecutive step ends (put last in `callbacks`: it sees the callback's own work)."""

    def __init__(self):
        self.ends: list[float] = []

    def __getattr__(self, event):
        if event.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(event)

    def on_train_begin(self, *a, **k):
        self.ends = [time.perf_counter()]

    def on_step_end(self, *a, **k):
        self.ends.append(time.perf_counter())

    def steps(self) -> list[float]:
        return [b - a for a, b in zip(self.ends, self.ends[1:])][1:]  # the first step warms up


def run(variant: str, model: str, steps: int, root: Path) -> list[float]:
    clock = StepClock()
    callbacks = [] if variant == "none" else [FlatlineCallback(
        run_dir=root / variant, probes=variant, judge_every=JUDGE_EVERY, log_book=str(root / "LOG.md"),
        log=lambda *a: None)]
    trl_trainer(root / f"trl-{variant}", model=model, callbacks=[*callbacks, clock], max_steps=steps).train()
    return clock.steps()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    import torch
    import trl
    times = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for variant in VARIANTS:
                times[variant] += run(variant, args.model, args.steps, Path(tmp) / f"r{round_}")
    tokens = 12 if args.model == "tiny" else 32
    print(f"FlatlineCallback overhead on TRL {trl.__version__} GRPOTrainer, {args.model}"
          f"{' + LoRA r8' if args.model == 'smollm2' else ''}, 2 prompts x 4 generations x up to {tokens} tokens per "
          f"step, CPU ({torch.get_num_threads()} threads); {args.rounds} interleaved rounds x {args.steps} steps per "
          "variant, "
          f"first step of each run left out, live judgement every {JUDGE_EVERY} steps\n")
    bare = statistics.median(times["none"])
    print(f"{'probes':8s} {'steps':>5s} {'median s/step':>14s} {'ratio':>6s}")
    for variant in VARIANTS:
        median = statistics.median(times[variant])
        print(f"{variant:8s} {len(times[variant]):5d} {median:14.3f} {median / bare:6.3f}")


if __name__ == "__main__":
    main()
