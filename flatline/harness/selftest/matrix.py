"""Run planted faults and healthy runs, judge them, and print the detection matrix.

    results = [run_case(fault, seed) for fault in FAULTS for seed in seeds]
    print(render(results)); exit_code = 1 if any(r.missed or r.false_alarms for r in results) else 0
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from flatline.common.errors import FlatlineError
from flatline.diagnostics.history import History
from flatline.diagnostics.judge import judge, judge_one
from flatline.diagnostics.verdict import FLAGGED
from flatline.harness.selftest.faults import REFUSED, Fault
from flatline.trainer.config import build_config, load_config

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
QUIET = {"probes": "full", "report_to": "none", "progress_bar": False}
# Each fault's base run: its config file and the changes every case makes to it.
BASES = {
    # the bandit with four groups of four per step (so per-group and whole-batch normalisation differ)
    "bandit": (CONFIGS / "bandit.toml", {"num_generations": 4, **QUIET}),
    # the embedded default: SmolLM2 on arithmetic, whose completions end with EOS
    "default": (CONFIGS / "default.toml", QUIET),
    # SmolLM2 in multi-turn episodes: look a key up with a tool call, then answer
    "tools": (CONFIGS / "tools.toml", QUIET),
    # the embedded default sampled by an in-process vLLM engine (the [vllm] extra)
    "vllm": (CONFIGS / "default.toml", {**QUIET, "sampler": "vllm"}),
}


@dataclass
class CaseResult:
    fault: Fault
    seed: int
    failed: set = field(default_factory=set)  # ids flagged: fail or warn
    first_flag: dict = field(default_factory=dict)  # id -> (step, seconds since the run started)
    steps: int = 0
    seconds: float = 0.0
    final_reward: float = float("nan")
    first_loss: float = float("nan")  # the loss at step 1: ~0 on-policy, which no verdict may read as a fault
    error: str = ""

    @property
    def missed(self) -> set:
        return set(self.fault.must_fail) - self.failed

    @property
    def false_alarms(self) -> set:
        return self.failed - set(self.fault.allowed)


def select_cases(cases, full: bool = False, only=None, episodes: bool = False) -> list:
    """The rows a selftest runs: the fast subset by default, every row with `full`, the multi-turn tool-episode rows
    (base "tools") with `episodes`, or the named ones with `only` (FlatlineError for a name no row has)."""
    if only:
        unknown = set(only) - {c.name for c in cases}
        if unknown:
            raise FlatlineError(f"--only: no fault named {', '.join(sorted(unknown))}; "
                                f"choose from {', '.join(c.name for c in cases)}")
        return [c for c in cases if c.name in only]
    if episodes:
        return [c for c in cases if c.base == "tools"]
    return [c for c in cases if full or c.fast]


def case_config(fault: Fault, seed: int, steps: int | None = None):
    path, changes = BASES[fault.base]
    values = {**dataclasses.asdict(load_config(path)), **changes, **fault.config, "seed": seed}
    if steps is not None:
        values["max_steps"] = steps
    return build_config(values)


def first_flags(rows: list[dict], times: list[float], config: dict, ids) -> dict:
    """For each id, the first step (and its wall time) at which judging the history up to it gives fail."""
    found = {}
    for hypothesis_id in ids:
        for k in range(1, len(rows) + 1):
            if judge_one(hypothesis_id, History(run="prefix", rows=rows[:k], config=config)).status in FLAGGED:
                found[hypothesis_id] = (rows[k - 1].get("step", k), times[k - 1])
                break
    return found


def save_run(directory: Path, cfg, rows: list[dict]) -> None:
    """The case as a run directory (config.toml, metrics.jsonl) that `flatline diagnose` or another tool can read."""
    from flatline.common.rundir import RunDir
    from flatline.trainer.config import to_toml

    run = RunDir.create(directory, to_toml(cfg))
    for row in rows:
        run.add_row(row)
    run.close()


def run_case(fault: Fault, seed: int = 0, steps: int | None = None, save: Path | None = None) -> CaseResult:
    """Train the faulty run with probes, judge it, and time when each must-fail id was first flagged; with `save`,
    also write it as a run directory there."""
    from flatline.probes import for_trainer
    from flatline.trainer.loop import build_trainer

    result = CaseResult(fault, seed)
    started = time.perf_counter()
    try:
        cfg = case_config(fault, seed, steps)
        trainer = build_trainer(cfg)
    except FlatlineError as exc:
        result.failed = {REFUSED}
        result.first_flag[REFUSED] = (0, time.perf_counter() - started)
        result.error = str(exc)
        return result
    trainer.listeners.extend(for_trainer(trainer))
    if fault.mutate is not None:
        fault.mutate(trainer)
    rows, times = [], []
    try:
        for _ in range(cfg.max_steps):
            rows.append(trainer.step())
            times.append(time.perf_counter() - started)
    except Exception as exc:  # a fault may crash the run (NaN weights): judge the steps it logged, as a user would
        result.error = f"training stopped after {len(rows)} steps: {type(exc).__name__}: {str(exc)[:120]}"
    if not rows:
        return result
    if save is not None:
        save_run(Path(save), cfg, rows)
    config = dataclasses.asdict(cfg)
    history = History(run=fault.name, rows=rows, config=config)
    result.failed = {v.id for v in judge(history).verdicts if v.status in FLAGGED}
    result.first_flag = first_flags(rows, times, config, sorted(fault.must_fail & result.failed))
    result.steps, result.seconds = len(rows), times[-1] if times else 0.0
    result.final_reward = history.series("reward").tail(5).mean()
    result.first_loss = float(rows[0].get("loss", float("nan")))
    return result


def run_matrix(cases, seeds: int = 1, save_runs: Path | None = None, progress=None) -> list[CaseResult]:
    """Every case (a healthy one over `seeds` seeds, a fault once), with the trainer's and probes' warnings hidden
    (the faults make them warn by design); `progress(result)` is called after each run."""
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for case in cases:
            for seed in range(1 if case.must_fail else seeds):
                save = save_runs / f"{case.name}-seed{seed}" if save_runs else None
                results.append(run_case(case, seed, save=save))
                if progress is not None:
                    progress(results[-1])
    return results


def _cell(result: CaseResult, hypothesis_id: str) -> str:
    if hypothesis_id in result.fault.must_fail:
        if hypothesis_id in result.first_flag:
            step, seconds = result.first_flag[hypothesis_id]
            return f"✓ s{step} {seconds:.0f}s"
        return "MISS"
    if hypothesis_id in result.failed:
        return "(fail)" if hypothesis_id in result.fault.allowed else "FALSE ALARM"
    return ""


def render(results: list[CaseResult]) -> str:
    """The fault x hypothesis matrix (only the columns anything lists or flags), then recall and false alarms."""
    columns = sorted({i for r in results for i in r.fault.must_fail | r.failed})
    header = ["case", "run", "seed", "how", "loss s1", "reward (last 5)"] + columns
    rows = [[r.fault.name, r.fault.base, str(r.seed), r.fault.how, f"{r.first_loss:.0e}", f"{r.final_reward:.2f}"]
            + [_cell(r, c) for c in columns] for r in results]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)) for line in [header, *rows]]
    faults = [r for r in results if r.fault.must_fail]
    caught = sum(not r.missed for r in faults)
    alarms = sum(len(r.false_alarms) for r in results)
    lines += ["", f"recall: {caught}/{len(faults)} planted faults flagged by every hypothesis they must fail",
              f"false alarms: {alarms} (healthy runs with a fail: "
              f"{sum(bool(r.failed) for r in results if not r.fault.must_fail)}/"
              f"{sum(not r.fault.must_fail for r in results)})"]
    for r in results:
        if r.error:
            lines.append(f"note: {r.fault.name} seed {r.seed}: {r.error}")
        if r.missed:
            lines.append(f"MISS {r.fault.name} seed {r.seed}: {', '.join(sorted(r.missed))} did not fail")
        if r.false_alarms:
            lines.append(f"FALSE ALARM {r.fault.name} seed {r.seed}: {', '.join(sorted(r.false_alarms))}")
    return "\n".join(lines)
