"""flatline vs rldoctor on rldoctor's own demo scenarios: which pathologies each flags, and alarms on healthy.

    pip install -e ".[bench]"                    # rldoctor==0.2.0 (not a flatline dependency)
    python bench/diagnose_peers.py               # 12 scenarios x seeds 0-4, eval as eval_reward and eval_accuracy
    python bench/diagnose_peers.py --seeds 0-9 --eval-keys reward --keep /tmp/peers

Each run is rldoctor 0.2.0's simulator, `rl_doctor.simulate.simulate(scenario, n_steps=400, seed, eval_every=25)`
(same draws, same values), written as a TRL user has it: one `trainer_state.json` (bench/trl_state.py) whose
log_history holds a training entry per step with TRL's metric names (`step` = global_step 1..400, `epoch`), a
separate `{"eval_<key>": score}` entry at each evaluation step, and Trainer's closing entry. The simulator's names are
TRL's already except `perf/throughput` (verl's; TRL logs none: dropped) and `eval/accuracy` (its held-out score).

Which eval key: TRL's GRPOTrainer logs evaluation with the `eval_` prefix on its own metric names, so its held-out
reward is `eval_reward`: the default. A user whose own metric is called "accuracy" (a compute_metrics or callback
returning {"accuracy": ...}) gets `eval_accuracy`; both are judged by default, because rldoctor 0.2.0 drops
`eval_accuracy` (its alias table reads it as an eval copy of a training metric) and flatline reads only `eval_reward`
as the held-out score: the second key shows what each tool loses on it.

No config is written beside the log: a TRL user has none in JSON (GRPOConfig is pickled into training_args.bin),
so neither tool knows beta, the group size or num_iterations; rldoctor takes trainer_state.json's scalar keys
(max_steps, train_batch_size, ...) as its config, as its own loader does.

Judged with the public APIs: flatline `judge(load_history(trainer_state.json))`, rldoctor
`diagnose(load_run(trainer_state.json))`. A tool flags a scenario's pathology when one of the ids (flatline: fail or
warn) or detectors (rldoctor: WARNING or CRITICAL; INFO is shown but not counted) in TARGETS fired. On the healthy
scenario any flatline fail or warn, and any rldoctor WARNING+, is an alarm (rldoctor's INFO is counted apart).
Exit 1 when flatline misses a pathology rldoctor flags on the same log, or raises an alarm on healthy, for any eval
key. Output committed under reports/examples/diagnose_peers.txt.

Leaves out: rldoctor's own in-memory path (simulate_run: identical verdicts to trainer_state.json on seeds 0-4),
other log formats (bench/healthy_logs.py and the readers' tests cover them), and dynamics rldoctor does not
simulate (bench/healthy_logs.py plants them in diverse healthy runs).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.trl_state import closing_entry, write_trainer_state  # noqa: E402
from flatline.diagnostics.verdict import FLAGGED  # noqa: E402

STEPS = 400  # rldoctor's demo length (rl-doctor demo --steps 400, its selftest)
EVAL_EVERY = 25  # rldoctor's demo default
EVAL_KEYS = ("reward", "accuracy")
SIMULATOR_EVAL_KEY = "eval/accuracy"  # where rl_doctor.simulate puts the held-out score (eval rows only)
DROPPED = ("perf/throughput",)  # verl's throughput name; TRL logs no throughput
FIRING = ("WARNING", "CRITICAL")
TAG = {"CRITICAL": "C", "WARNING": "W", "INFO": "i"}
WIDTH = 116


@dataclass(frozen=True)
class Target:
    flatline: frozenset
    rldoctor: frozenset
    why: str


def _target(flatline: tuple, rldoctor: tuple, why: str) -> Target:
    return Target(frozenset(flatline), frozenset(rldoctor), why)


# What counts as flagging each scenario's pathology (the simulator's overrides: rl_doctor/simulate.py, NOTES s1).
TARGETS: dict[str, Target] = {
    "healthy": _target((), (), "no pathology: any flatline fail/warn or rldoctor WARNING+ is an alarm"),
    "entropy_collapse": _target(("entropy.collapse",), ("entropy_collapse",),
                                "entropy 0.63 -> 0.008 while the pass rate stalls at 0.45"),
    "saturated_groups": _target(("advantage.degenerate_groups",), ("advantage_collapse",),
                                "pass rate -> 0.965: ~77% of groups all-correct, zero advantage"),
    "too_hard": _target(("advantage.degenerate_groups", "reward.no_signal"), ("advantage_collapse",),
                        "pass rate 0.035: ~75% of groups all-wrong, almost no signal"),
    "reward_hacking": _target(("reward.hacking",), ("reward_hacking",),
                              "train reward 0.28 -> 1.02 while the held-out score rises then falls back"),
    "length_hacking": _target(("length.growth", "reward.hacking"), ("length_pathology", "reward_hacking"),
                              "length 380 -> 1368 tokens with the reward, held-out score flat"),
    "truncation": _target(("length.truncation",), ("length_pathology",),
                          "length -> 1880 tokens, 42% of completions cut at the limit"),
    "kl_blowup": _target(("kl.drift",), ("kl_drift",), "KL to the reference 0.02 -> 4.5, accelerating"),
    "clip_saturation": _target(("update.clip_saturation",), ("clip_saturation",),
                               "ratio clip region 0.15 -> 0.57 of tokens"),
    "grad_spikes": _target(("gradients.spikes",), ("gradient_pathology",), "7 gradient-norm spikes of 40-160x"),
    "plateau": _target(("progress.plateau",), ("plateau",), "pass rate flat from ~step 100 at 0.55"),
    "format_domination": _target(("reward.component_dominance",), ("reward_composition",),
                                 "correctness scaled 0.05: the format term carries the reward's variance"),
}


@dataclass
class Outcome:
    scenario: str
    seed: int
    eval_key: str
    flatline: dict = field(default_factory=dict)  # id -> (status, reason)
    rldoctor: dict = field(default_factory=dict)  # detector -> (severity, summary)

    @property
    def name(self) -> str:
        return f"{self.scenario}-seed{self.seed}"

    @property
    def healthy(self) -> bool:
        return not TARGETS[self.scenario].flatline


# -- pure: the log, matching, rendering ------------------------------------------------------------------------------


def trl_log_history(records: list[dict], eval_key: str) -> list[dict]:
    """rl_doctor.simulate records as TRL log_history: a training entry per step (global_step from 1), the held-out
    score as its own `eval_<eval_key>` entry after that step's, and Trainer's closing entry."""
    history = []
    for record in records:
        step = int(record["step"]) + 1
        epoch = round(step / len(records), 4)
        train = {"step": step, "epoch": epoch}
        train.update({k: v for k, v in record.items() if k not in ("step", SIMULATOR_EVAL_KEY, *DROPPED)})
        history.append(train)
        if SIMULATOR_EVAL_KEY in record:
            history.append({f"eval_{eval_key}": record[SIMULATOR_EVAL_KEY], "step": step, "epoch": epoch})
    history.append(closing_entry(history[-1]["step"], sum(r.get("step_time", 0.0) for r in records)))
    return history


def flatline_flags(outcome: Outcome) -> set:
    return {i for i, (status, _) in outcome.flatline.items() if status in FLAGGED}


def rldoctor_fired(outcome: Outcome, levels=FIRING) -> set:
    return {d for d, (severity, _) in outcome.rldoctor.items() if severity in levels}


def flatline_caught(outcome: Outcome) -> bool:
    return bool(flatline_flags(outcome) & TARGETS[outcome.scenario].flatline)


def rldoctor_caught(outcome: Outcome) -> bool:
    return bool(rldoctor_fired(outcome) & TARGETS[outcome.scenario].rldoctor)


def parse_seeds(values: list[str]) -> list[int]:
    """['0-4', '7'] -> [0, 1, 2, 3, 4, 7]"""
    seeds = []
    for value in values:
        lo, _, hi = value.partition("-")
        seeds += range(int(lo), int(hi or lo) + 1)
    return seeds


def _cell(o: Outcome) -> str:
    if o.healthy:
        flags = ("a" if flatline_flags(o) else ".") + ("a" if rldoctor_fired(o) else ".")
        return flags + ("i" if rldoctor_fired(o, ("INFO",)) else "")
    return ("F" if flatline_caught(o) else "-") + ("R" if rldoctor_caught(o) else "-")


def _flatline_said(o: Outcome) -> str:
    fired = sorted(flatline_flags(o))
    text = ", ".join(f"{i}({o.flatline[i][0]})" for i in fired) or "-"
    if not o.healthy and not flatline_caught(o):
        said = [f"{i} {o.flatline[i][0]}: {o.flatline[i][1]}" for i in sorted(TARGETS[o.scenario].flatline)
                if i in o.flatline]
        text += " | " + " | ".join(said)
    return text


def _rldoctor_said(o: Outcome) -> str:
    fired = sorted(rldoctor_fired(o, FIRING + ("INFO",)))
    return ", ".join(f"{d}({TAG[o.rldoctor[d][0]]})" for d in fired) or "-"


def _wrap(text: str, indent: str = "  ", hang: str = "      ") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=hang, break_on_hyphens=False)


def summary_line(outcomes: list[Outcome]) -> str:
    sick = [o for o in outcomes if not o.healthy]
    healthy = [o for o in outcomes if o.healthy]
    rd = [o for o in sick if rldoctor_caught(o)]
    both = [o for o in rd if flatline_caught(o)]
    fl_alarms = sum(bool(flatline_flags(o)) for o in healthy)
    rd_alarms = sum(bool(rldoctor_fired(o)) for o in healthy)
    rd_info = sum(bool(rldoctor_fired(o, FIRING + ("INFO",))) for o in healthy)
    return (f"flatline caught {len(both)}/{len(rd)} of the pathologies rldoctor caught; healthy alarms flatline "
            f"{fl_alarms}/{len(healthy)}, rldoctor {rd_alarms}/{len(healthy)} (WARNING+), {rd_info}/{len(healthy)} "
            f"(INFO+)")


def gate_failures(outcomes: list[Outcome]) -> list[str]:
    """What fails the gate, per eval key and scenario: pathologies rldoctor flags and flatline does not, and flatline
    alarms on healthy, e.g. 'eval_reward: missed kl_blowup (seeds 0, 1)'."""
    failing: dict[tuple, list[int]] = {}
    for o in outcomes:
        if (not o.healthy and rldoctor_caught(o) and not flatline_caught(o)) or (o.healthy and flatline_flags(o)):
            failing.setdefault((o.eval_key, "alarm on" if o.healthy else "missed", o.scenario), []).append(o.seed)
    return [f"eval_{key}: {what} {scenario} (seeds {', '.join(map(str, sorted(seeds)))})"
            for (key, what, scenario), seeds in failing.items()]


def render_targets() -> list[str]:
    lines = ["Counts as flagging the pathology (flatline: fail or warn of an id; rldoctor: WARNING or CRITICAL of a "
             "detector; INFO shown, not counted):"]
    for scenario, t in TARGETS.items():
        lines.append(f"  {scenario:<18} flatline {', '.join(sorted(t.flatline)) or '-'} | rldoctor "
                     f"{', '.join(sorted(t.rldoctor)) or '-'}")
        lines.append(f"  {'':<18} ({t.why})")
    return lines


def render_key(outcomes: list[Outcome], eval_key: str, detail: bool, base_key: str = "") -> list[str]:
    chosen = [o for o in outcomes if o.eval_key == eval_key]
    seeds = sorted({o.seed for o in chosen})
    lines = [f"== held-out score logged as eval_{eval_key} ==", ""]
    header = "scenario".ljust(18) + "".join(f"s{s}".ljust(5) for s in seeds) + "flatline  rldoctor"
    lines += [header, "-" * len(header)]
    for scenario, target in TARGETS.items():
        runs = sorted((o for o in chosen if o.scenario == scenario), key=lambda o: o.seed)
        if not runs:
            continue
        if target.flatline:
            totals = (f"{sum(map(flatline_caught, runs))}/{len(runs)}".ljust(10)
                      + f"{sum(map(rldoctor_caught, runs))}/{len(runs)}")
        else:
            totals = (f"{sum(bool(flatline_flags(o)) for o in runs)}/{len(runs)} alarm".ljust(10)
                      + f"{sum(bool(rldoctor_fired(o)) for o in runs)}/{len(runs)} alarm")
        lines.append(scenario.ljust(18) + "".join(_cell(o).ljust(5) for o in runs) + totals)
    lines += ["cells: F flatline flagged the pathology, R rldoctor did, - not; healthy: a = alarm (flatline, "
              "rldoctor W/C), . = none, i = rldoctor INFO", ""]
    if not detail and base_key:
        lines += render_changes(outcomes, base_key, eval_key) + [""]
    if detail:
        lines.append("Per run: flatline ids at fail/warn (for a miss, its verdict on the scenario's ids) || rldoctor "
                     "detectors at C/W/i")
        for o in sorted(chosen, key=lambda o: (list(TARGETS).index(o.scenario), o.seed)):
            lines += _wrap(f"{o.name}: {_flatline_said(o)} || {_rldoctor_said(o)}")
        lines.append("")
    lines += render_off_target(chosen)
    lines += render_healthy(chosen)
    lines += ["", "Summary (eval_" + eval_key + "): " + summary_line(chosen), ""]
    return lines


def render_changes(outcomes: list[Outcome], base_key: str, eval_key: str) -> list[str]:
    """Runs whose flags (flatline fail/warn, rldoctor W/C) differ between two eval keys, with the verdicts that
    changed: what a tool loses or gains when the held-out score is logged under another name."""
    base = {(o.scenario, o.seed): o for o in outcomes if o.eval_key == base_key}
    lines = [f"Flags that change from eval_{base_key} to eval_{eval_key}:"]
    for o in outcomes:
        before = base.get((o.scenario, o.seed))
        if o.eval_key != eval_key or before is None:
            continue
        for tool, flags, said in (("flatline", flatline_flags, "flatline"), ("rldoctor", rldoctor_fired, "rldoctor")):
            lost, gained = flags(before) - flags(o), flags(o) - flags(before)
            for name in sorted(lost | gained):
                verdict = getattr(o, said).get(name, ("?", ""))
                lines += _wrap(f"{o.name} {tool} {name}: {'lost' if name in lost else 'gained'}, now {verdict[0]}: "
                               f"{verdict[1]}")
    return lines if len(lines) > 1 else lines + ["  none"]


def render_off_target(outcomes: list[Outcome]) -> list[str]:
    """Flags on pathology runs that are not the scenario's own (a symptom, or a second finding)."""
    lines = ["Off-target flags (flagged on a pathology run, not the scenario's own id/detector; runs out of seeds):"]
    for scenario, target in TARGETS.items():
        runs = [o for o in outcomes if o.scenario == scenario]
        if not target.flatline or not runs:
            continue
        fl = _counts(flatline_flags(o) - target.flatline for o in runs)
        rd = _counts(rldoctor_fired(o) - target.rldoctor for o in runs)
        if fl or rd:
            lines += _wrap(f"{scenario}: flatline {fl or '-'}; rldoctor {rd or '-'} (of {len(runs)})")
    return lines


def render_healthy(outcomes: list[Outcome]) -> list[str]:
    healthy = [o for o in outcomes if o.healthy]
    lines = ["", f"Healthy scenario ({len(healthy)} runs):"]
    for o in healthy:
        for i in sorted(flatline_flags(o)):
            lines += _wrap(f"flatline ALARM {o.name} {i} ({o.flatline[i][0]}): {o.flatline[i][1]}")
        for d in sorted(rldoctor_fired(o, FIRING + ("INFO",))):
            severity, summary = o.rldoctor[d]
            lines += _wrap(f"rldoctor {'ALARM' if severity in FIRING else 'info'} {o.name} {d} ({severity}): {summary}")
    return lines


def _counts(sets) -> str:
    counts: dict[str, int] = {}
    for s in sets:
        for item in s:
            counts[item] = counts.get(item, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


# -- the two tools ---------------------------------------------------------------------------------------------------


def judge_flatline(path: Path) -> dict:
    from flatline.diagnostics.history import load_history
    from flatline.diagnostics.judge import judge

    return {v.id: (v.status, " ".join(v.reason.split())) for v in judge(load_history(path)).verdicts}


def judge_rldoctor(path: Path) -> dict:
    from rl_doctor import diagnose, load_run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy on constant series
        diagnosis = diagnose(load_run(str(path)))
    return {f.detector: (f.severity.name, " ".join(f.summary.split())) for f in diagnosis.findings}


def run_all(scenarios: list[str], seeds: list[int], eval_keys: list[str], out: Path) -> tuple[list[Outcome], dict]:
    from rl_doctor.simulate import simulate

    outcomes, seconds = [], {"simulate+write": 0.0, "flatline": 0.0, "rldoctor": 0.0}
    for scenario in scenarios:
        for seed in seeds:
            for eval_key in eval_keys:
                started = time.process_time()
                records, _ = simulate(scenario, n_steps=STEPS, seed=seed, eval_every=EVAL_EVERY)
                path = write_trainer_state(out / f"eval_{eval_key}" / f"{scenario}-seed{seed}",
                                           trl_log_history(records, eval_key), STEPS, EVAL_EVERY)
                checked = time.process_time()
                outcome = Outcome(scenario, seed, eval_key, flatline=judge_flatline(path))
                judged = time.process_time()
                outcome.rldoctor = judge_rldoctor(path)
                seconds["simulate+write"] += checked - started
                seconds["flatline"] += judged - checked
                seconds["rldoctor"] += time.process_time() - judged
                outcomes.append(outcome)
    return outcomes, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", default=["0-4"], help="seeds or ranges (default 0-4)")
    parser.add_argument("--eval-keys", nargs="+", default=list(EVAL_KEYS), choices=EVAL_KEYS,
                        help="eval_<key> for the held-out score (default: both)")
    parser.add_argument("--scenarios", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--keep", type=Path, help="write the trainer_state.json files here (default: a temp dir)")
    parser.add_argument("--brief", action="store_true", help="leave out the per-run lines")
    args = parser.parse_args()
    try:
        from importlib.metadata import version

        rd_version = version("rldoctor")
    except Exception:
        print("rldoctor is not installed: pip install -e '.[bench]' (rldoctor==0.2.0)", file=sys.stderr)
        return 2
    seeds = parse_seeds(args.seeds)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        outcomes, seconds = run_all(args.scenarios, seeds, args.eval_keys, args.keep or Path(tmp))
    lines = [f"flatline vs rldoctor {rd_version} on rldoctor's demo scenarios (rl_doctor.simulate, {STEPS} steps, eval "
             f"every {EVAL_EVERY}; seeds {', '.join(map(str, seeds))}), each written as TRL's trainer_state.json", ""]
    lines += render_targets() + [""]
    for n, key in enumerate(args.eval_keys):  # per-run lines for the first key only: the others differ in few
        lines += render_key(outcomes, key, detail=not args.brief and n == 0, base_key=args.eval_keys[0] if n else "")
    failures = gate_failures(outcomes)
    runs = len(outcomes)
    lines += [f"Time: {time.perf_counter() - started:.0f} s wall for {runs} logs; CPU seconds: simulate+write "
              f"{seconds['simulate+write']:.0f}, flatline {seconds['flatline']:.0f} "
              f"({seconds['flatline'] / max(runs, 1):.2f} per log), rldoctor {seconds['rldoctor']:.0f}"]
    lines.append("Gate (exit 1 when flatline misses what rldoctor flags, or alarms on healthy): " +
                 ("FAIL" if failures else "pass"))
    lines += [f"  {f}" for f in failures]
    print("\n".join(lines))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
