"""How long `flatline diagnose` takes to read and judge a long log: a 100k-step metrics JSONL with 31 metrics per
row (flatline's and TRL's names, a held-out score every 100 steps), written to a temporary directory.

    python bench/log_reading.py [--steps 100000]

Prints the file size, the load and the judge time. Figures only: nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from flatline.diagnostics.history import load_history
from flatline.diagnostics.judge import judge


def write_log(path: Path, steps: int) -> None:
    rng = random.Random(0)
    with path.open("w") as handle:
        for s in range(1, steps + 1):
            row = {"step": s, "learning_rate": 1e-5, "grad_norm": 0.3 + 0.1 * rng.random(), "loss": rng.gauss(0, 0.01),
                   "clip_ratio/region_mean": 0.0, "reward": 0.3 + 0.4 * s / steps + rng.gauss(0, 0.05),
                   "reward_std": 0.3, "frac_reward_zero_std": 0.2, "completions/mean_length": 100 + rng.random(),
                   "completions/clipped_ratio": 0.05, "rewards/correct/mean": 0.3, "rewards/correct/std": 0.4,
                   "entropy": 1.0 - 0.5 * s / steps, "kl": 1e-6 * s, "num_tokens": 1000 * s, "step_time": 1.0,
                   "advantage/zero_std_frac": 0.2, "advantage/zero_std_all_max_frac": 0.1,
                   "advantage/zero_std_all_min_frac": 0.1, "advantage/group_sum_max_abs": 1e-7,
                   "advantage/nonfinite_advantages": 0, "advantage/abs_max": 1.5, "update/rel_update": 1e-3,
                   "update/changed_frac": 1.0, "gradients/global_norm": 0.35, "gradients/clip_coef": 1.0,
                   "sync/probs_diff_mean": 0.001, "policy/entropy_mean": 1.0, "length/truncated_frac": 0.05,
                   "masks/prompt_frac": 0.0}
            if s % 100 == 0:
                row["eval/reward"] = 0.3 + 0.3 * s / steps
            handle.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "metrics.jsonl"
        write_log(log, args.steps)
        start = time.perf_counter()
        history = load_history(log)
        loaded = time.perf_counter()
        diagnosis = judge(history)
        judged = time.perf_counter()
        print(f"{args.steps} steps, {log.stat().st_size / 1e6:.0f} MB: load {loaded - start:.1f} s, "
              f"judge {judged - loaded:.1f} s ({diagnosis.counts()})")


if __name__ == "__main__":
    main()
