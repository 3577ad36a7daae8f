"""The full planted-fault matrix: every fault, and every healthy run over five seeds.

    python bench/selftest_full.py [--seeds 5] [--save-runs DIR]

Prints the fault x hypothesis matrix (the step and wall time at which each fault was first flagged), recall and
false alarms, and exits 1 on any miss or false alarm. `flatline selftest` runs the fast subset of the same matrix
(in CI); this script is the whole of it. With --save-runs each case is also written as a run directory
(config.toml, metrics.jsonl) for `flatline diagnose` or bench/detection_vs_rldoctor.py.
Output committed under reports/examples/selftest_full.txt.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diagnostics.selftest.faults import FAULTS, HEALTHY  # noqa: E402
from diagnostics.selftest.matrix import render, run_case  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per healthy run (default 5)")
    parser.add_argument("--save-runs", type=Path, help="also write every case as a run directory under this folder")
    args = parser.parse_args()
    started = time.perf_counter()
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the faults make the trainer and probes warn by design
        for case in FAULTS + HEALTHY:
            for seed in range(1 if case.must_fail else args.seeds):
                save = args.save_runs / f"{case.name}-seed{seed}" if args.save_runs else None
                results.append(run_case(case, seed, save=save))
    print(f"flatline selftest, full matrix: {len(FAULTS)} planted faults, {len(HEALTHY)} healthy runs x {args.seeds} "
          f"seeds, on the bandit probe (tiny random Llama, 40 steps); {platform.processor() or platform.machine()}, "
          f"{time.perf_counter() - started:.0f} s in all\n")
    print(render(results))
    return 1 if any(r.missed or r.false_alarms for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
