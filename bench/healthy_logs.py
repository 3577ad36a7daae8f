"""False alarms per 1,000 healthy steps, and steps to flag a pathology, on long simulated GRPO logs.

    python bench/healthy_logs.py                 # 21 healthy runs (~20k steps), 10 pathologies x 5 seeds, 2 workers
    python bench/healthy_logs.py --runs 7 --planted-seeds 2 --every 50 --no-rldoctor --keep /tmp/logs

The logs come from bench/grpo_runs.py, grpo_planted.py and grpo_log.py (a batch-level GRPO simulator in TRL's
metric names), are written as TRL's trainer_state.json, read back with flatline's `load_history` and judged with
`judge` as a live monitor would: every EVERY steps on the log so far (its prefix), and on the whole log. rldoctor
0.2.0 (when installed) is judged on the same prefixes: `diagnose(run_from_records(entries so far, config))` with the
checkpoint's TrainerState scalars as config, which is what its own LiveMonitor and `load_run` do.

False alarms. The healthy runs cycle through seven healthy dynamics (grpo_runs.DYNAMICS: a logistic rise to a
ceiling below the maximum, a slow linear gain, staircase jumps, solved, a small gain under heavy batch noise, answers
getting shorter, reasoning getting longer), each with its other settings drawn per seed (batch shape, 1-3 reward
functions and weights, beta 0 or 0.04, num_iterations 1 or 2, lr schedule, length limit, eval cadence and size).
An alarm event is a hypothesis id (an rldoctor detector) entering fail or warn (WARNING or CRITICAL) at a judged
prefix: flagged there and not at the prefix before. The rate is events per 1,000 healthy steps monitored (the runs'
steps summed), with an exact Poisson (Garwood) 95% interval, as tplane counts false alarms per 100k healthy steps.
Events cluster within runs, so the share of runs with an alarm (Clopper-Pearson interval) is given too, at the end
(whole log) and at any prefix; and the rate after a 60-step warm-up (rldoctor's LiveMonitor judges nothing before).

Time to flag. Each pathology in grpo_planted.PLANTS is planted at an onset (35-50% of a 600-900-step run) into a
healthy base that rotates with the seed; the log is judged at the onset (a flag there came from the healthy part:
'before onset') and every TTF_EVERY steps after it. Time to flag = first judged step with a target at fail or warn
(WARNING+), minus the onset; a miss = never by the end. Targets in TARGETS ('family.*' = any id of the family).

Leaves out: real logs (this is a simulator, tuned to mechanisms rather than to one run), other formats than
trainer_state.json, and the control run (control.learns is skipped). Output committed under
reports/examples/healthy_logs.txt.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.grpo_log import log_history  # noqa: E402
from bench.grpo_planted import planted_run  # noqa: E402
from bench.grpo_runs import DYNAMICS, healthy_run  # noqa: E402
from bench.intervals import binomial_interval, rate_per_1000  # noqa: E402
from bench.trl_state import trainer_state, write_trainer_state  # noqa: E402
from flatline.diagnostics.verdict import FLAGGED  # noqa: E402

EVERY = 25  # a live monitor judging every 25 steps (rldoctor's LiveMonitor check_every default)
TTF_EVERY = 10  # finer after a planted onset, so time to flag is resolved to 10 steps
WARM_UP = 60  # rldoctor's LiveMonitor DEFAULT_MIN_STEPS: "below this many steps, trend tests have no power"
HEALTHY_RUNS = 21  # 3 per healthy dynamic: ~20,000 steps at 500-1500 steps a run
PLANTED_SEEDS = 5
RLDOCTOR_FIRING = ("WARNING", "CRITICAL")
TOOLS = ("flatline", "rldoctor")
WIDTH = 116


@dataclass(frozen=True)
class Target:
    flatline: tuple  # ids, or 'family.*'
    rldoctor: tuple  # detectors


# What counts as flagging each planted pathology: flatline fail or warn, rldoctor WARNING or CRITICAL.
TARGETS = {
    "entropy_collapse": Target(("entropy.collapse",), ("entropy_collapse",)),
    "kl_blowup": Target(("kl.drift",), ("kl_drift",)),
    "plateau": Target(("progress.plateau",), ("plateau",)),
    "length_growth": Target(("length.growth", "reward.hacking"), ("length_pathology", "reward_hacking")),
    "eval_falls": Target(("reward.hacking",), ("reward_hacking",)),
    "component_saturates": Target(("reward.component_dominance",), ("reward_composition",)),
    "truncation_rising": Target(("length.truncation",), ("length_pathology",)),
    "grad_spikes": Target(("gradients.spikes",), ("gradient_pathology",)),
    "zero_variance_takeover": Target(("advantage.degenerate_groups", "reward.no_signal"), ("advantage_collapse",)),
    # no flatline id asks "is entropy rising without bound" yet (any entropy verdict counts); rldoctor has none
    "entropy_blowup": Target(("entropy.*",), ()),
}


@dataclass
class Event:
    run: str
    step: int
    id: str
    status: str
    reason: str


@dataclass
class HealthyResult:
    name: str
    steps: int
    settings: str
    figures: str
    events: dict = field(default_factory=dict)  # tool -> [Event]
    at_end: dict = field(default_factory=dict)  # tool -> {id: (status, reason)} flagged on the whole log
    judged: int = 0
    seconds: dict = field(default_factory=dict)  # "simulate", tool -> seconds


@dataclass
class Flag:
    """One tool on one planted run: the first judged step with a target flagged (None: never)."""

    at: int | None = None
    by: str = ""
    before_onset: bool = False
    last: str = ""  # the targets' verdicts at the last judged step (for a miss)


@dataclass
class PlantResult:
    name: str
    pathology: str
    onset: int
    steps: int
    flags: dict = field(default_factory=dict)  # tool -> Flag
    judged: int = 0
    seconds: dict = field(default_factory=dict)

    def time_to_flag(self, tool: str) -> int | None:
        flag = self.flags.get(tool)
        return None if flag is None or flag.at is None or flag.before_onset else flag.at - self.onset


# -- pure pieces -----------------------------------------------------------------------------------------------------


def matching_ids(patterns, known: list[str]) -> list[str]:
    """Exact ids, and 'family.*' for every known id of that family."""
    return [i for i in known if any(i == p or (p.endswith(".*") and i.startswith(p[:-1])) for p in patterns)]


def judged_steps(first: int, last: int, every: int) -> list[int]:
    """first, first + every, ... and always last."""
    steps = list(range(first, last, every))
    return steps + [last] if not steps or steps[-1] != last else steps


def prefix(history, step: int):
    """The history as a monitor saw it at `step`: the rows logged up to that step (eval rows included)."""
    rows = [row for index, row in enumerate(history.rows) if float(row.get("step", index + 1)) <= step]
    return replace(history, rows=rows)


def entering(timeline: list[tuple[int, dict]], run: str) -> list[Event]:
    """Alarm events from [(step, {id: (status, reason)} flagged at that step)]: an id flagged where it was not
    flagged at the judged step before."""
    events, before = [], {}
    for step, flagged in timeline:
        events += [Event(run, step, i, status, reason) for i, (status, reason) in sorted(flagged.items())
                   if i not in before]
        before = flagged
    return events


def summarise_ttf(times: list[int]) -> str:
    return f"{statistics.median(times):.0f} ({min(times)}-{max(times)})" if times else "-"


# -- the two tools on a prefix ---------------------------------------------------------------------------------------


def flatline_flags(history, ids=None) -> dict:
    from flatline.diagnostics.judge import judge

    return {v.id: (v.status, " ".join(v.reason.split())) for v in judge(history, ids=ids).verdicts
            if v.status in FLAGGED}


def rldoctor_flags(entries: list[dict], step: int, max_steps: int, eval_steps: int, only=()) -> dict:
    """rldoctor's WARNING+ findings on the entries logged up to `step`, with the checkpoint's TrainerState scalars
    as config (rl_doctor's trainer_state loader does the same)."""
    from rl_doctor import diagnose, run_from_records

    rows = [e for e in entries if e["step"] <= step and "train_runtime" not in e]
    state = trainer_state([], max_steps, eval_steps)
    config = {k: v for k, v in {**state, "global_step": step}.items() if isinstance(v, (int, float, str, bool))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diagnosis = diagnose(run_from_records(rows, config=config, name="live", source="live"), only=tuple(only))
    return {f.detector: (f.severity.name, " ".join(f.summary.split())) for f in diagnosis.findings
            if f.severity.name in RLDOCTOR_FIRING}


def _simulate(spec, latent, folder: Path):
    from flatline.diagnostics.history import load_history

    entries = log_history(spec, latent)
    path = write_trainer_state(folder / spec.name, entries, spec.steps, spec.eval_every)
    return entries, load_history(path)


def _describe(spec, history) -> tuple[str, str]:
    rewards = "+".join(name.split("_")[0] + (f"x{w:g}" if w != 1 else "") for name, w in spec.rewards)
    settings = (f"{spec.prompts}x{spec.generations} {rewards} beta {spec.beta:g} iters {spec.num_iterations} "
                f"max_len {spec.max_completion_length} eval {spec.eval_prompts} prompts/{spec.eval_every} steps")

    def ends(name: str, fmt: str) -> str:
        s = history.series(name).finite()
        if not len(s):
            return "-"
        n = max(1, min(20, len(s) // 10))
        return f"{s.head(n).median():{fmt}}>{s.tail(n).median():{fmt}}"

    figures = (f"reward {ends('reward', '.2f')} eval {ends('eval/reward', '.2f')} zero_std "
               f"{ends('frac_reward_zero_std', '.2f')} entropy {ends('entropy', '.2f')} len "
               f"{ends('completions/mean_length', '.0f')} cut {ends('completions/clipped_ratio', '.2f')} grad "
               f"{ends('grad_norm', '.2g')}")
    return settings, figures


def monitor_healthy(args: tuple) -> HealthyResult:
    seed, dynamic, every, folder, with_rldoctor = args
    clock = time.process_time()
    spec, latent = healthy_run(seed, dynamic)
    entries, history = _simulate(spec, latent, Path(folder))
    seconds = {"simulate": time.process_time() - clock}
    steps = judged_steps(every, spec.steps, every)
    timelines = {}
    for tool in TOOLS[:2 if with_rldoctor else 1]:
        clock = time.process_time()
        if tool == "flatline":
            timelines[tool] = [(s, flatline_flags(prefix(history, s))) for s in steps]
        else:
            timelines[tool] = [(s, rldoctor_flags(entries, s, spec.steps, spec.eval_every)) for s in steps]
        seconds[tool] = time.process_time() - clock
    settings, figures = _describe(spec, history)
    return HealthyResult(spec.name, spec.steps, settings, figures,
                         {tool: entering(line, spec.name) for tool, line in timelines.items()},
                         {tool: line[-1][1] for tool, line in timelines.items()}, len(steps), seconds)


def flag_planted(args: tuple) -> PlantResult:
    seed, pathology, every, folder, with_rldoctor = args
    from flatline.diagnostics.judge import hypothesis_ids

    clock = time.process_time()
    spec, latent = planted_run(seed, pathology)
    entries, history = _simulate(spec, latent, Path(folder))
    result = PlantResult(spec.name, pathology, spec.onset, spec.steps,
                         seconds={"simulate": time.process_time() - clock})
    target = TARGETS[pathology]
    tools = {"flatline": matching_ids(target.flatline, hypothesis_ids())}
    if with_rldoctor:
        tools["rldoctor"] = list(target.rldoctor)
    for tool, ids in tools.items():
        clock = time.process_time()
        flag = result.flags.setdefault(tool, Flag())
        for step in judged_steps(spec.onset, spec.steps, every) if ids else []:
            if tool == "flatline":
                flagged = flatline_flags(prefix(history, step), ids)
            else:
                flagged = rldoctor_flags(entries, step, spec.steps, spec.eval_every, only=ids)
            result.judged += 1
            if flagged:
                by, (status, reason) = next(iter(flagged.items()))
                flag.at, flag.by, flag.before_onset = step, by, step == spec.onset
                flag.last = f"{by} {status}: {reason}"
                break
        if flag.at is None and ids and tool == "flatline":
            from flatline.diagnostics.judge import judge

            flag.last = " | ".join(f"{v.id} {v.status}: {' '.join(v.reason.split())}"
                                   for v in judge(history, ids=ids).verdicts)
        result.seconds[tool] = time.process_time() - clock
    return result


# -- printout --------------------------------------------------------------------------------------------------------


def _wrap(text: str, indent: str = "  ", hang: str = "      ") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=hang, break_on_hyphens=False)


def alarm_figures(results: list[HealthyResult], tool: str) -> list[str]:
    steps = sum(r.steps for r in results)
    events = [e for r in results for e in r.events.get(tool, [])]
    rate, low, high = rate_per_1000(len(events), steps)
    late = [e for e in events if e.step >= WARM_UP]
    late_rate, late_low, late_high = rate_per_1000(len(late), steps)
    pairs = len({(e.run, e.id) for e in events})
    lines = [f"{tool}: {len(events)} alarm events in {steps:,} healthy steps = {rate:.2f} per 1,000 steps (95% "
             f"Garwood {low:.2f}-{high:.2f}); after a {WARM_UP}-step warm-up {len(late)} = {late_rate:.2f} "
             f"({late_low:.2f}-{late_high:.2f}); {pairs} distinct (run, id) alarms"]
    for label, count in (("at the end (whole log)", sum(bool(r.at_end.get(tool)) for r in results)),
                         ("at any judged prefix", sum(bool(r.events.get(tool)) for r in results))):
        lo, hi = binomial_interval(count, len(results))
        lines.append(f"  runs with an alarm {label}: {count}/{len(results)} (95% Clopper-Pearson {lo:.2f}-{hi:.2f})")
    by_id: dict[str, list[Event]] = {}
    for e in events:
        by_id.setdefault(e.id, []).append(e)
    for i, group in sorted(by_id.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        runs = sorted({e.run for e in group})
        lines += _wrap(f"{i}: {len(group)} events on {len(runs)} runs ({', '.join(runs)})", "    ", "        ")
    return lines


def render_healthy(results: list[HealthyResult], every: int, tools: tuple) -> list[str]:
    steps = sum(r.steps for r in results)
    lines = [f"== False alarms: {len(results)} healthy runs, {steps:,} steps, judged every {every} steps from step "
             f"{every} and at the end ({sum(r.judged for r in results)} prefixes per tool) ==", "",
             "run            steps  settings; then first>last (medians of the first and last tenth, at most 20 points)"]
    for r in results:
        lines.append(f"{r.name:<13}{r.steps:>6}  {r.settings}")
        end = "; ".join(f"{tool} ALARM at end: {', '.join(sorted(r.at_end[tool]))}" for tool in tools
                        if r.at_end.get(tool))
        lines += _wrap(r.figures + (f"; {end}" if end else ""), " " * 21, " " * 21)
    lines += ["", "An alarm event: a flatline id entering fail or warn (an rldoctor detector entering WARNING or "
              "CRITICAL) at a judged prefix, not flagged at the one before."]
    for tool in tools:
        lines += alarm_figures(results, tool)
    events = sorted((e for r in results for e in r.events.get("flatline", [])), key=lambda e: (e.id, e.run, e.step))
    if events:
        lines += ["", "Every flatline alarm event (run, step, id, status: reason):"]
        for e in events:
            lines += _wrap(f"{e.run} step {e.step} {e.id} {e.status}: {e.reason}")
    if "rldoctor" in tools:
        firsts: dict[str, Event] = {}
        for e in sorted((e for r in results for e in r.events.get("rldoctor", [])), key=lambda e: (e.run, e.step)):
            firsts.setdefault(e.id, e)
        if firsts:
            lines += ["", "rldoctor's alarms, the first of each detector (run, step, severity: summary):"]
            for e in firsts.values():
                lines += _wrap(f"{e.id}: {e.run} step {e.step} {e.status}: {e.reason}")
    return lines


def render_planted(results: list[PlantResult], every: int, tools: tuple) -> list[str]:
    lines = [f"== Time to flag: pathologies planted at an onset, judged at the onset and every {every} steps after ==",
             "", f"{'pathology':<24}{'tool':<10}{'counts as':<46}{'flagged':>8}  {'median (range)':<16}{'missed':>7}"
             f"{'before':>7}"]
    for pathology, target in TARGETS.items():
        runs = [r for r in results if r.pathology == pathology]
        for tool in tools:
            ids = getattr(target, tool)
            times = [t for r in runs if (t := r.time_to_flag(tool)) is not None]
            missed = sum(r.flags[tool].at is None for r in runs if tool in r.flags)
            before = sum(r.flags[tool].before_onset for r in runs if tool in r.flags)
            counted = ", ".join(ids) or "(no detector)"
            lines.append(f"{pathology if tool == tools[0] else '':<24}{tool:<10}{counted:<46}{len(times):>5}/"
                         f"{len(runs):<2}  {summarise_ttf(times):<16}{missed:>7}{before:>7}")
    lines += ["time to flag in steps from the onset; before = a target already flagged at the onset, from the healthy "
              "part of the run (a false alarm, not a catch)", "",
              "Per run (pathology@base dynamic-seed, onset/steps): flatline's steps to flag, or its verdicts on the "
              "whole log for a miss; rldoctor's steps in []"]
    for r in results:
        flag = r.flags["flatline"]
        if flag.at is None:
            what = f"MISSED: {flag.last}"
        elif flag.before_onset:
            what = f"flagged BEFORE onset: {flag.last}"
        else:
            what = f"{r.time_to_flag('flatline')} steps ({flag.by})"
        if "rldoctor" in r.flags:
            rd = r.flags["rldoctor"]
            what += (" [rldoctor: " + ("-" if not TARGETS[r.pathology].rldoctor else "missed" if rd.at is None else
                                       "before onset" if rd.before_onset else f"{r.time_to_flag('rldoctor')} steps")
                     + "]")
        lines += _wrap(f"{r.name} onset {r.onset}/{r.steps}: {what}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=HEALTHY_RUNS, help=f"healthy runs (default {HEALTHY_RUNS})")
    parser.add_argument("--planted-seeds", type=int, default=PLANTED_SEEDS, help="seeds per planted pathology")
    parser.add_argument("--every", type=int, default=EVERY, help=f"judge healthy logs every N steps ({EVERY})")
    parser.add_argument("--ttf-every", type=int, default=TTF_EVERY, help=f"after an onset ({TTF_EVERY})")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--no-rldoctor", dest="rldoctor", action="store_false", help="judge with flatline only")
    parser.add_argument("--keep", type=Path, help="write the trainer_state.json files here (default: a temp dir)")
    args = parser.parse_args()
    if args.rldoctor:
        try:
            from importlib.metadata import version

            rd_version = version("rldoctor")
        except Exception:
            print("rldoctor is not installed (pip install -e '.[bench]'): judging with flatline only", file=sys.stderr)
            args.rldoctor = False
    tools = TOOLS if args.rldoctor else TOOLS[:1]
    started = time.perf_counter()
    dynamics = list(DYNAMICS)
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(args.jobs) as pool:
        folder = str(args.keep or tmp)
        healthy = list(pool.map(monitor_healthy, [(i, dynamics[i % len(dynamics)], args.every, folder, args.rldoctor)
                                                  for i in range(args.runs)]))
        healthy_wall = time.perf_counter() - started
        planted = list(pool.map(flag_planted, [(seed, p, args.ttf_every, folder, args.rldoctor) for p in TARGETS
                                               for seed in range(args.planted_seeds)]))
    total = time.perf_counter() - started
    peer = f" and rldoctor {rd_version}" if args.rldoctor else ""
    lines = [f"flatline{peer} on long simulated GRPO logs (bench/grpo_*.py, written as TRL trainer_state.json), "
             "judged as a live monitor would", ""]
    lines += render_healthy(healthy, args.every, tools) + [""] + render_planted(planted, args.ttf_every, tools)
    cost = {key: sum(r.seconds.get(key, 0.0) for r in healthy + planted) for key in ("simulate",) + tools}
    judged = sum(r.judged for r in healthy)
    lines += ["", f"Time: {total:.0f} s wall with {args.jobs} worker(s) (healthy {healthy_wall:.0f} s, planted "
              f"{total - healthy_wall:.0f} s); CPU seconds in the workers: simulate+write+read {cost['simulate']:.0f}, "
              + ", ".join(f"{tool} {cost[tool]:.0f} ({cost[tool] / max(judged, 1):.2f} s per healthy prefix)"
                          for tool in tools)]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
