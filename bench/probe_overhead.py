"""Step time with probes none, cheap and full, on the same run (same seed, so the same rollouts and updates).

    python bench/probe_overhead.py [--tiny-steps 12] [--smollm-steps 5] [--skip-smollm]

Times whole `trainer.step()` calls (probes included) with the tiny random Llama and with SmolLM2 on CPU,
the first step of each dropped as warm-up. Prints medians (with the min-max spread), the ratios to the bare step,
the time spent inside the probes themselves (the overhead without the run-to-run noise of a shared 2-core box), and
which probes ran in the timed steps (probes on a schedule run on step 1 and every `every` steps; the line says in
how many of the timed steps each ran and its mean seconds there).
Targets (issue 28): cheap at most 1.03x, full at most 1.1x of the bare step, on both models.
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

TARGETS = {"cheap": 1.03, "full": 1.1}
SETUPS = {
    "tiny-random": ["model=tiny-random", "task=arithmetic", "lora_r=8", "learning_rate=1e-3", "num_generations=8",
                    "per_device_train_batch_size=32", "max_completion_length=16"],
    "smollm2-135m": ["model=smollm2-135m", "task=arithmetic", "max_completion_length=32"],
}


def timed(method, spent: list[float], ran: dict | None = None, label: str = ""):
    """`method`, adding its seconds to spent[-1] (and, with `ran`, to ran[label][step index])."""
    def wrapper(*args):
        started = time.perf_counter()
        try:
            return method(*args)
        finally:
            seconds = time.perf_counter() - started
            spent[-1] += seconds
            if ran is not None:
                per_step = ran.setdefault(label, {})
                per_step[len(spent) - 1] = per_step.get(len(spent) - 1, 0.0) + seconds
    return wrapper


def step_times(overrides: list[str], level: str, steps: int) -> tuple[list[float], list[float], dict]:
    """Wall time of each step, the part of it spent inside the probes, and {probe: {step index: seconds}} of the
    probes that ran; the first step dropped (indices count from the first timed step)."""
    cfg = load_config("configs/default.toml", overrides + [f"probes={level}", "report_to=none", f"max_steps={steps}"])
    trainer = build_trainer(cfg, prepared=prepare(cfg))
    spent: list[float] = []
    ran: dict = {}
    for probe_set in for_trainer(trainer):
        for probe in probe_set.probes:  # the probe set calls each probe's hooks through the instance, when due
            for hook in ("on_gradients", "on_step"):
                setattr(probe, hook, timed(getattr(probe, hook), spent, ran, type(probe).__name__))
        trainer.listeners.append(probe_set)
    times = []
    for _ in range(steps):
        spent.append(0.0)
        started = time.perf_counter()
        trainer.step()
        times.append(time.perf_counter() - started)
    timed_ran = {name: {i - 1: s for i, s in per_step.items() if i >= 1} for name, per_step in ran.items()}
    return times[1:], spent[1:], {name: per_step for name, per_step in timed_ran.items() if per_step}


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
        for level, (times, spent, ran) in results.items():
            median = statistics.median(times)
            inside = 1 + statistics.median(spent) / bare
            target = f" (target <= {TARGETS[level]}: {'met' if inside <= TARGETS[level] else 'missed'})" \
                if level in TARGETS else ""
            print(f"  {level:5s} median {median:7.3f} s ({min(times):.3f}-{max(times):.3f})  ratio {median / bare:.3f}; "
                  f"inside probes median {statistics.median(spent):.3f} s/step = {inside:.3f}x the bare median{target}")
            if ran:
                print("        ran in the timed steps: " + ", ".join(
                    f"{probe} {len(per_step)}/{len(times)} ({statistics.mean(per_step.values()):.3f} s)"
                    for probe, per_step in sorted(ran.items(), key=lambda item: -sum(item[1].values()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
