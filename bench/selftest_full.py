"""The full planted-fault matrix: every fault, and every healthy run over five seeds.

    python bench/selftest_full.py [--seeds 5] [--save-runs DIR] [--no-smollm2]

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flatline.harness.selftest.faults import FAULTS, HEALTHY  # noqa: E402
from flatline.harness.selftest.matrix import render, run_matrix  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per healthy run (default 5)")
    parser.add_argument("--save-runs", type=Path, help="also write every case as a run directory under this folder")
    parser.add_argument("--no-smollm2", dest="smollm2", action="store_false",
                        help="leave out the SmolLM2 cases (the default's healthy seeds take ~6 min each on 2 cores)")
    args = parser.parse_args()
    started = time.perf_counter()
    cases = [c for c in FAULTS + HEALTHY if args.smollm2 or c.base != "default"]
    results = run_matrix(cases, args.seeds, args.save_runs, progress=lambda r: print(
        f"  {r.fault.name} seed {r.seed}: {r.seconds:.0f} s, failed {sorted(r.failed) or 'nothing'}", flush=True))
    faults, healthy = [c for c in cases if c.must_fail], [c for c in cases if not c.must_fail]
    print(f"\nflatline selftest, full matrix: {len(faults)} planted faults, {len(healthy)} healthy runs x {args.seeds} "
          f"seeds; base runs: the bandit probe (tiny random Llama, 40 steps) and the embedded default (SmolLM2 on "
          f"arithmetic: 12 steps per fault, 24 per healthy run); {platform.processor() or platform.machine()}, "
          f"{time.perf_counter() - started:.0f} s in all\n")
    print(render(results))
    return 1 if any(r.missed or r.false_alarms for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
