"""Step time with probes none, cheap and full, on the same run (same seed, so the same rollouts and updates).

    python bench/probe_overhead.py [--tiny-steps 12] [--smollm-steps 5] [--skip-smollm]

Times whole `trainer.step()` calls (probes included) with the tiny random Llama and with SmolLM2 on CPU,
the first step of each dropped as warm-up. Prints medians, means and the ratios to the bare step, and the
time spent inside the probes themselves (the overhead without the run-to-run noise of a shared 2-core box).
Targets: cheap at most 1.05x, full at most 1.5x.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flatline.probes import for_trainer  # noqa: E402
from flatline.trainer.config import load_config  # noqa: E402
from flatline.trainer.loop import build_trainer, prepare  # noqa: E402

TARGETS = {"cheap": 1.05, "full": 1.5}
SETUPS = {
    "tiny-random": ["model=tiny-random", "task=arithmetic", "lora_r=8", "learning_rate=1e-3", "num_generations=8",
                    "per_device_train_batch_size=32", "max_completion_length=16"],
    "smollm2-135m": ["model=smollm2-135m", "task=arithmetic", "max_completion_length=32"],
}


def timed(method, spent: list[float]):
    def wrapper(*args):
        started = time.perf_counter()
        try:
            return method(*args)
        finally:
            spent[-1] += time.perf_counter() - started
    return wrapper


def step_times(overrides: list[str], level: str, steps: int) -> tuple[list[float], list[float]]:
    """Wall time of each step, and the part of it spent inside the probes; the first step dropped."""
    cfg = load_config("configs/default.toml", overrides + [f"probes={level}", "report_to=none", f"max_steps={steps}"])
    trainer = build_trainer(cfg, prepared=prepare(cfg))
    spent: list[float] = []
    for probe_set in for_trainer(trainer):
        probe_set.on_gradients = timed(probe_set.on_gradients, spent)
        probe_set.on_step = timed(probe_set.on_step, spent)  # the trainer looks hooks up on the instance
        trainer.listeners.append(probe_set)
    times = []
    for _ in range(steps):
        spent.append(0.0)
        started = time.perf_counter()
        trainer.step()
        times.append(time.perf_counter() - started)
    return times[1:], spent[1:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny-steps", type=int, default=12)
    parser.add_argument("--smollm-steps", type=int, default=5)
    parser.add_argument("--skip-smollm", action="store_true")
    args = parser.parse_args()
    for name, overrides in SETUPS.items():
        if name == "smollm2-135m" and args.skip_smollm:
            continue
        steps = args.tiny_steps if name == "tiny-random" else args.smollm_steps
        results = {level: step_times(overrides, level, steps) for level in ("none", "cheap", "full")}
        bare = statistics.median(results["none"][0])
        print(f"{name} ({steps - 1} timed steps each):")
        for level, (times, spent) in results.items():
            median, mean = statistics.median(times), statistics.mean(times)
            target = f" (target <= {TARGETS[level]})" if level in TARGETS else ""
            print(f"  {level:5s} median {median:7.3f} s  mean {mean:7.3f} s  ratio {median / bare:.3f}{target}; "
                  f"inside probes {statistics.mean(spent):.3f} s/step = {1 + statistics.mean(spent) / bare:.3f}x the bare median")
    return 0


if __name__ == "__main__":
    sys.exit(main())
