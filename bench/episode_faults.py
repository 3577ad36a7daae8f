"""The multi-turn tool-episode rows of the planted-fault matrix on SmolLM2 (configs/tools.toml): five planted faults,
the healthy run and a healthy-but-odd one (a large per-call bonus), each judged on every hypothesis.

    PYTHONPATH=. .venv/bin/python bench/episode_faults.py [--only NAME ...] [--save-runs DIR] [--healthy-run RUN_DIR]

Prints each run's wall time and flagged ids, the fault x hypothesis matrix, then for every case the flagged verdicts
(and the must-fail ones) with their evidence. Exits 1 on a miss or a false alarm. `flatline selftest --episodes` runs
the same rows without the evidence. With --healthy-run, the healthy row is judged from the run directory that
`flatline train configs/tools.toml` wrote (the same config and seed) instead of training it again.
Output committed under reports/examples/episode_faults.txt.
"""
from __future__ import annotations

import argparse
import itertools
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flatline.diagnostics.history import History, load_history  # noqa: E402
from flatline.diagnostics.judge import judge  # noqa: E402
from flatline.diagnostics.verdict import FLAGGED  # noqa: E402
from flatline.harness.selftest.faults import EPISODE_FAULTS, EPISODE_HEALTHY  # noqa: E402
from flatline.harness.selftest.matrix import CaseResult, case_config, first_flags, render, run_matrix  # noqa: E402
from flatline.trainer.config import load_config  # noqa: E402


def judged_run(fault, run_dir: Path) -> tuple[CaseResult, list]:
    """A case judged from a run directory (one `flatline train` or an earlier --save-runs wrote), and its verdicts."""
    history = load_history(run_dir)
    verdicts = judge(history).verdicts
    failed = {v.id for v in verdicts if v.status in FLAGGED}
    times = list(itertools.accumulate(float(x) for x in history.series("step_time").values))
    result = CaseResult(fault, 0, failed=failed, steps=len(history.rows), seconds=float(times[-1]),
                        final_reward=history.series("reward").tail(5).mean(),
                        first_loss=float(history.rows[0].get("loss", float("nan"))),
                        first_flag=first_flags(history.rows, times, history.config, sorted(fault.must_fail & failed)))
    return result, verdicts


def evidence_lines(result, run_dir: Path, verdicts=None) -> list[str]:
    """The flagged and must-fail verdicts of a saved case, judged again from its metrics.jsonl."""
    if verdicts is None:
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        config = dataclasses.asdict(case_config(result.fault, result.seed))
        verdicts = judge(History(run=result.fault.name, rows=rows, config=config)).verdicts
    shown = [v for v in verdicts if v.status in FLAGGED or v.id in result.fault.must_fail]
    lines = [f"{result.fault.name} ({result.fault.description}): {result.steps} steps, {result.seconds:.0f} s"]
    for v in shown:
        numbers = ", ".join(f"{k}={x:.3g}" if isinstance(x, float) else f"{k}={x}" for k, x in v.evidence.items())
        lines.append(f"  {v.status:5s} {v.id}: {numbers}")
    for v in shown:
        if not v.evidence:
            lines.append(f"  {v.status:5s} {v.id}: {v.reason}")
    if not shown:
        lines.append("  nothing flagged")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these cases")
    parser.add_argument("--save-runs", type=Path, default=Path("/tmp/flatline-episode-faults"),
                        help="where each case is written as a run directory (default /tmp/flatline-episode-faults)")
    parser.add_argument("--judge-saved", action="store_true", help="train nothing: judge the runs an earlier call "
                        "saved under --save-runs (each case's NAME-seed0) with the judges as they are now")
    parser.add_argument("--healthy-run", type=Path, help="judge this `flatline train configs/tools.toml` run directory "
                        "as the healthy row instead of training it")
    args = parser.parse_args()
    cases = [c for c in EPISODE_FAULTS + EPISODE_HEALTHY if not args.only or c.name in args.only]
    if args.healthy_run:
        cases = [c for c in cases if c.name != EPISODE_HEALTHY[0].name]
    started = time.perf_counter()
    progress = lambda r: print(  # noqa: E731
        f"  {r.fault.name}: {r.steps} steps, {r.seconds:.0f} s, failed {sorted(r.failed) or 'nothing'}", flush=True)
    if args.judge_saved:
        results = [judged_run(c, args.save_runs / f"{c.name}-seed0")[0] for c in cases]
        for result in results:
            progress(result)
    else:
        results = run_matrix(cases, 1, args.save_runs, progress=progress)
    healthy_verdicts = None
    if args.healthy_run:
        healthy, healthy_verdicts = judged_run(EPISODE_HEALTHY[0], args.healthy_run)
        results.append(healthy)
        print(f"  {healthy.fault.name} (judged from {args.healthy_run}): {healthy.steps} steps, {healthy.seconds:.0f} s "
              f"of steps, failed {sorted(healthy.failed) or 'nothing'}")
    base = load_config(Path(__file__).resolve().parent.parent / "configs" / "tools.toml")
    print(f"\nflatline selftest, multi-turn tool episodes: SmolLM2-135M-Instruct on configs/tools.toml "
          f"({base.max_steps} steps healthy; faults as listed), {platform.processor() or platform.machine()}, "
          + ("judged from the saved runs (seconds: the steps' own time)\n" if args.judge_saved else
             f"{time.perf_counter() - started:.0f} s in all\n"))
    print(render(results))
    print("\nEvidence (flagged and must-fail verdicts):")
    for result in results:
        if healthy_verdicts is not None and not result.fault.must_fail:
            print("\n".join(evidence_lines(result, args.healthy_run, healthy_verdicts)))
            continue
        run_dir = args.save_runs / f"{result.fault.name}-seed{result.seed}"
        if (run_dir / "metrics.jsonl").exists():
            print("\n".join(evidence_lines(result, run_dir)))
    return 1 if any(r.missed or r.false_alarms for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
