"""flatline vs rldoctor: which planted faults each one catches, from the same run logs.

    python bench/detection_vs_rldoctor.py RUNS_DIR

RUNS_DIR is what `python bench/selftest_full.py --save-runs RUNS_DIR` writes: one run directory per case,
`<case>-seed<N>`, holding config.toml and metrics.jsonl. Every directory is judged by flatline
(diagnostics.judge on the logged metrics, as `flatline diagnose` does) and by rldoctor (PyPI `rldoctor`,
junglezke/rl-doctor: nine detectors over scalar GRPO logs), and the two detection matrices are printed side by side
with the totals. Needs `pip install rldoctor` (not a flatline dependency).

How rldoctor is run: `rl_doctor.run_from_records(rows, config=config.toml)` then `rl_doctor.diagnose(run)`, the
Python API behind `rl-doctor diagnose FILE.jsonl`. The rows are metrics.jsonl as written (TRL metric names plus
flatline's namespaced probe metrics; rldoctor resolves names itself). The one change from the CLI: the run's
config.toml is passed as its config (the CLI reads a config only from a leading {"config": ...} line of the jsonl,
which flatline's log does not have), so rldoctor knows the algorithm (grpo), the group size and beta.

What counts: flatline caught a fault when every id the fault must fail failed (flatline/harness/selftest/matrix.py
CaseResult.missed); rldoctor caught it when one of the detectors mapped to that fault (RLDOCTOR_DETECTORS) reported
WARNING or CRITICAL. On a healthy run any flatline fail, or any rldoctor WARNING/CRITICAL, is a false alarm.
Output committed under reports/examples/detection_vs_rldoctor.txt.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flatline.harness.selftest.faults import FAULTS, HEALTHY, REFUSED, Fault  # noqa: E402

# The rldoctor detectors that watch the same failure as each planted fault. A fault whose failure no rldoctor
# detector looks at is absent here (ANY): then any WARNING/CRITICAL from any detector counts as a catch, which is
# generous to rldoctor, and the output says which catches were of that kind. Judged from the detectors' source
# (rl_doctor/detectors/*.py, 0.2.0):
RLDOCTOR_DETECTORS: dict[str, frozenset] = {
    # An update too small to move the weights: rldoctor has no update-size check; its only view of "the run is not
    # learning" is the reward trend test.
    "lr_1e-7": frozenset({"plateau"}),
    "bf16_tiny_lr": frozenset({"plateau"}),  # the same failure: bf16 rounds the small update away
    # Greedy sampling: every completion of a group identical -> no exploration, every group zero-variance.
    "temperature_0": frozenset({"entropy_collapse", "advantage_collapse"}),
    # beta = 50 pins the policy to the reference: kl_drift's "strangled policy" branch (KL never above 1e-4).
    "beta_swamps": frozenset({"kl_drift"}),
    # A reward that ignores the completion: every group zero-variance.
    "constant_reward": frozenset({"advantage_collapse"}),
    # A loss on detached logprobs: no gradient reaches the weights (gradient_pathology's exactly-zero norms).
    "detached_logprob": frozenset({"gradient_pathology"}),
    # A flipped loss sign: the reward falls (plateau's "declining" branch).
    "sign_flipped_loss": frozenset({"plateau"}),
    # Completions cut at max_completion_length: length_pathology's truncation check.
    "completion_too_short": frozenset({"length_pathology"}),
    # ANY (no rldoctor detector for the mechanism): batch_advantages, shifted_groups, float32_std (advantage
    # numerics); raising_reward (reward-function errors); frozen_adapter, adapter_not_in_optimizer (optimizer
    # coverage); unsynced_sampler (sampler/policy mismatch); prompt_in_mask, eos_dropped (which tokens the loss
    # trains on: rldoctor reads no mask metric).
}
ANY = "any"
# rldoctor severities (SKIPPED < OK < INFO < WARNING < CRITICAL) that count as a detector firing.
FIRING = ("WARNING", "CRITICAL")
WIDTH = 116  # prose lines of the printout
SEVERITY_TAG = {"WARNING": "W", "CRITICAL": "C", "INFO": "i"}
# flatline's probe families (probes/*.py `family`): their metrics are flatline's own instrumentation, not what a TRL
# run logs. Used only for the check that rldoctor's verdicts do not hinge on them.
PROBE_FAMILIES = ("advantage", "gradients", "length", "masks", "policy", "reward", "sync", "update")
BANDIT_TRUNCATION_NOTE = (
    "the bandit probe's completions are one token long (max_completion_length = 1), so every completion ends at "
    "the cap and completions/clipped_ratio is 1.0 at every step of every run, faulty or healthy")


@dataclass
class Outcome:
    fault: Fault
    seed: int
    failed: set = field(default_factory=set)  # flatline ids with status fail
    fired: dict = field(default_factory=dict)  # rldoctor detector -> "WARNING" | "CRITICAL"
    info: set = field(default_factory=set)  # rldoctor detectors at INFO (not counted)
    skipped: dict = field(default_factory=dict)  # rldoctor detector -> why it did not run
    said: dict = field(default_factory=dict)  # rldoctor detector -> (severity, summary), every detector
    trl_only_fired: set | None = None  # the same, with flatline's probe metrics removed from the rows
    final_reward: float = float("nan")  # mean reward of the last 5 steps

    @property
    def healthy(self) -> bool:
        return not self.fault.must_fail

    @property
    def name(self) -> str:
        return f"{self.fault.name}-seed{self.seed}"


# -- pure: matching and rendering ----------------------------------------------------------------------------------


def split_case(directory_name: str) -> tuple[str, int] | None:
    """'lr_1e-7-seed0' -> ('lr_1e-7', 0); None for a name of another shape."""
    match = re.fullmatch(r"(.+)-seed(\d+)", directory_name)
    return (match.group(1), int(match.group(2))) if match else None


def targets(fault: Fault) -> frozenset | str:
    """The rldoctor detectors that count for this fault, or ANY."""
    return RLDOCTOR_DETECTORS.get(fault.name, ANY)


def flatline_caught(outcome: Outcome) -> bool:
    return set(outcome.fault.must_fail) <= outcome.failed


def rldoctor_caught(outcome: Outcome, fired=None, ignore=frozenset()) -> bool:
    fired = set(outcome.fired if fired is None else fired) - set(ignore)
    wanted = targets(outcome.fault)
    return bool(fired) if wanted == ANY else bool(fired & wanted)


def flatline_alarm(outcome: Outcome) -> bool:
    """A healthy run with any fail."""
    return outcome.healthy and bool(outcome.failed)


def rldoctor_alarm(outcome: Outcome, fired=None, ignore=frozenset()) -> bool:
    fired = set(outcome.fired if fired is None else fired) - set(ignore)
    return outcome.healthy and bool(fired)


def _verdict(caught: bool, alarm: bool, healthy: bool) -> str:
    if healthy:
        return "FALSE ALARM" if alarm else "clean"
    return "caught" if caught else "MISSED"


def flatline_ids(outcome: Outcome) -> str:
    """Failed ids: the must-fail ones first, then symptoms (allowed) in (), anything else marked !, then the
    must-fail ids that did not fail as missing:id."""
    fault = outcome.fault
    must = sorted(outcome.failed & fault.must_fail)
    missed = sorted(set(fault.must_fail) - outcome.failed)
    allowed = sorted((outcome.failed & fault.allowed) - fault.must_fail)
    extra = sorted(outcome.failed - fault.allowed)
    parts = must + [f"({i})" for i in allowed] + [f"!{i}" for i in extra] + [f"missing:{i}" for i in missed]
    return ", ".join(parts) if parts else "-"


def rldoctor_detectors(outcome: Outcome) -> str:
    parts = [f"{d}({SEVERITY_TAG[s]})" for d, s in sorted(outcome.fired.items())]
    return ", ".join(parts) if parts else "-"


def _para(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, break_on_hyphens=False)


def _table(header: list[str], rows: list[list[str]], widths: list[int | None]) -> list[str]:
    """A plain-text table; cells wider than their column's limit wrap onto more lines."""
    wrapped = [[(textwrap.wrap(cell, w, break_on_hyphens=False) or [""]) if w else [cell]
                for cell, w in zip(row, widths)] for row in rows]
    cols = [max([len(h)] + [len(line) for row in wrapped for line in row[i]]) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(c) for h, c in zip(header, cols)).rstrip(),
           "  ".join("-" * c for c in cols)]
    for row in wrapped:
        for k in range(max(len(cell) for cell in row)):
            out.append("  ".join((cell[k] if k < len(cell) else "").ljust(c) for cell, c in zip(row, cols)).rstrip())
    return out


def render(outcomes: list[Outcome], detectors: list[str], version: str, refused: list[Fault] = (),
           missing: list[str] = (), unknown: list[str] = (), runs_dir: str = "") -> str:
    faults = [o for o in outcomes if not o.healthy]
    healthy = [o for o in outcomes if o.healthy]
    lines = [f"flatline vs rldoctor {version}: the planted-fault runs of bench/selftest_full.py "
             f"({len(faults)} faulty runs, {len(healthy)} healthy runs{', ' + runs_dir if runs_dir else ''})", ""]
    lines += _para("flatline: diagnostics.judge over metrics.jsonl + config.toml; caught = every must-fail id of the "
                   "fault failed. Ids: must-fail ids, (symptoms the fault may also fail), !any other fail, "
                   "missing:a must-fail id that did not fail.")
    lines += _para(f"rldoctor: diagnose(run_from_records(metrics.jsonl rows, config=config.toml)); a detector fires "
                   f"at {' or '.join(FIRING)} (C, W; INFO does not count); caught = a detector mapped to the fault "
                   f"fired ('counts for'); '{ANY}' = no rldoctor detector watches that failure, so any detector that "
                   f"fires counts. The rows go in as written (rldoctor resolves TRL metric names itself); "
                   f"config.toml goes in as the run's config, which `rl-doctor diagnose FILE.jsonl` would not "
                   f"read (it takes one only from a leading {{\"config\": ...}} line).")
    lines.append("")
    lines += ["rldoctor detectors that count for each fault ('counts for'):"]
    for fault in {o.fault.name: o.fault for o in faults}.values():
        wanted = targets(fault)
        counted = f"{ANY} (no detector for this failure)" if wanted == ANY else ", ".join(sorted(wanted))
        lines.append(f"  {fault.name:<26}{counted}")
    lines.append("")
    header = ["case", "run", "seed", "how", "reward", "flatline", "failed ids", "rldoctor", "detectors fired"]
    rows = []
    for o in outcomes:
        reward = "-" if math.isnan(o.final_reward) else f"{o.final_reward:.2f}"
        rows.append([o.fault.name, o.fault.base, str(o.seed), "healthy" if o.healthy else o.fault.how, reward,
                     _verdict(flatline_caught(o), flatline_alarm(o), o.healthy), flatline_ids(o),
                     _verdict(rldoctor_caught(o), rldoctor_alarm(o), o.healthy), rldoctor_detectors(o)])
    for fault in refused:
        rows.append([fault.name, fault.base, "-", fault.how, "-", "caught", f"{REFUSED} (no run directory)", "n/a",
                     "no log to read"])
    lines += _table(header, rows, [None, None, None, None, None, None, 34, None, 40])
    lines.append("run: bandit = the bandit probe on a tiny random Llama (40 steps); default = SmolLM2 on arithmetic "
                 "(12 steps per fault, 24 per healthy run).")
    lines.append("reward: mean training reward over the last 5 of the run's steps (1.00 is the best on both).")

    def names(items) -> str:
        return ", ".join(o.name for o in items) or "none"

    fl_caught = [o for o in faults if flatline_caught(o)]
    rd_caught = [o for o in faults if rldoctor_caught(o)]
    rd_mapped = [o for o in rd_caught if targets(o.fault) != ANY]
    rd_any = [o for o in rd_caught if targets(o.fault) == ANY]
    n_any = sum(targets(o.fault) == ANY for o in faults)
    lines += ["", "Totals", "------"]
    lines += textwrap.wrap(f"planted faults caught       flatline {len(fl_caught)}/{len(faults)}    "
                           f"rldoctor {len(rd_caught)}/{len(faults)} ({len(rd_mapped)}/{len(faults) - n_any} by a "
                           f"mapped detector, {len(rd_any)}/{n_any} of the '{ANY}' faults by whatever fired)", WIDTH,
                           subsequent_indent=" " * 28)
    if refused:
        lines.append(f"  not counted: {', '.join(f.name for f in refused)} (flatline refuses the config before "
                     f"training: no run, no log for rldoctor)")
    fl_alarms = [o for o in healthy if flatline_alarm(o)]
    rd_alarms = [o for o in healthy if rldoctor_alarm(o)]
    lines.append(f"healthy runs with an alarm  flatline {len(fl_alarms)}/{len(healthy)}    "
                 f"rldoctor {len(rd_alarms)}/{len(healthy)}")
    rewards = [o.final_reward for o in healthy if not math.isnan(o.final_reward)]
    if rewards:
        lines.append(f"  (the healthy runs learn: reward over their last 5 steps {min(rewards):.2f} to "
                     f"{max(rewards):.2f}; an alarm there is an alarm on a run that learned)")
    for o in fl_alarms:
        lines.append(f"  flatline false alarm {o.name}: {', '.join(sorted(o.failed))}")
    by_detector: dict[str, list[str]] = {}
    for o in rd_alarms:
        for d in o.fired:
            by_detector.setdefault(d, []).append(o.name)
    for d, runs in sorted(by_detector.items()):
        first = next(o for o in rd_alarms if d in o.fired)
        severity, summary = first.said.get(d, (first.fired[d], ""))
        lines += textwrap.wrap(f"rldoctor {d} fired on {len(runs)}/{len(healthy)} healthy runs; on {first.name} "
                               f"({severity}): {summary}", WIDTH, initial_indent="  ", subsequent_indent="      ")
    splits = (("caught by flatline only", True, False), ("caught by rldoctor only", False, True),
              ("missed by both", False, False))
    for label, by_flatline, by_rldoctor in splits:
        picked = [o for o in faults if flatline_caught(o) == by_flatline and rldoctor_caught(o) == by_rldoctor]
        lines += textwrap.wrap(f"{label:<26}  {names(picked)}", WIDTH, subsequent_indent=" " * 28)

    # The bandit's one-token completions: length_pathology's truncation check fires on every bandit run.
    bandit = [o for o in outcomes if o.fault.base == "bandit"]
    if bandit and all("length_pathology" in o.fired for o in bandit):
        def ignore(o):
            return {"length_pathology"} if o.fault.base == "bandit" else set()

        caught = [o for o in faults if rldoctor_caught(o, ignore=ignore(o))]
        alarms = [o for o in healthy if rldoctor_alarm(o, ignore=ignore(o))]
        lines.append("")
        lines += _para(f"rldoctor length_pathology fired on every bandit run: {BANDIT_TRUNCATION_NOTE}. Its warning "
                       f"is true of the log but says nothing about the planted fault. With it set aside on the "
                       f"bandit runs: "
                       f"rldoctor catches {len(caught)}/{len(faults)} faults "
                       f"({len([o for o in caught if targets(o.fault) != ANY])} by a mapped detector), "
                       f"alarms on {len(alarms)}/{len(healthy)} healthy runs; caught by flatline only: "
                       f"{names(o for o in faults if flatline_caught(o) and not rldoctor_caught(o, ignore=ignore(o)))}.")

    lines += ["", "rldoctor detectors over all runs (W/C = WARNING or CRITICAL, i = INFO, skip = did not run)"]
    det_rows = []
    for d in detectors:
        fired_f = sum(d in o.fired for o in faults)
        fired_h = sum(d in o.fired for o in healthy)
        info = sum(d in o.info for o in outcomes)
        skipped = [o for o in outcomes if d in o.skipped]
        why = sorted({o.skipped[d] for o in skipped})
        det_rows.append([d, f"{fired_f}/{len(faults)}", f"{fired_h}/{len(healthy)}", str(info), str(len(skipped)),
                         "; ".join(why) or "-"])
    lines += _table(["detector", "W/C faulty", "W/C healthy", "i", "skip", "why skipped"], det_rows,
                    [None, None, None, None, None, 60])

    misses = [o for o in faults if not rldoctor_caught(o) and targets(o.fault) != ANY]
    if misses:
        lines += ["", "rldoctor's misses, in its own words (the mapped detectors' verdicts)"]
        for o in misses:
            for d in sorted(targets(o.fault)):
                severity, summary = o.said.get(d, ("?", "not run"))
                lines += textwrap.wrap(f"{o.name} {d} {severity}: {summary}", WIDTH, initial_indent="  ",
                                       subsequent_indent="      ")

    changed = [o for o in outcomes if o.trl_only_fired is not None and o.trl_only_fired != set(o.fired)]
    lines.append("")
    if any(o.trl_only_fired is not None for o in outcomes):
        families = "/, ".join(PROBE_FAMILIES) + "/"
        if changed:
            lines += _para(f"rldoctor on the TRL-named metrics only (flatline's probe metrics {families} removed) "
                           f"fires differently on {len(changed)} run(s):")
            for o in changed:
                before, after = ", ".join(sorted(o.fired)) or "-", ", ".join(sorted(o.trl_only_fired)) or "-"
                lines.append(f"  {o.name}: {before} -> {after}")
        else:
            lines += _para(f"rldoctor on the TRL-named metrics only (flatline's probe metrics {families} removed) "
                           f"fires the same detectors on every run: its verdicts above do not lean on flatline's "
                           f"probes.")
    for name in missing:
        lines.append(f"no run directory for {name}: left out")
    for name in unknown:
        lines.append(f"{name}: not a <case>-seed<N> directory (with metrics.jsonl) of a case in "
                     f"flatline/harness/selftest/faults.py, left out")
    return "\n".join(lines)


# -- the two tools -------------------------------------------------------------------------------------------------


def read_rows(run_dir: Path) -> list[dict]:
    rows = []
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def last_reward(rows: list[dict], n: int = 5) -> float:
    values = [float(row["reward"]) for row in rows if isinstance(row.get("reward"), (int, float))][-n:]
    return sum(values) / len(values) if values else float("nan")


def judge_flatline(run_dir: Path) -> set:
    from flatline.diagnostics.history import load_history
    from flatline.diagnostics.judge import judge

    return {v.id for v in judge(load_history(run_dir)).verdicts if v.status == "fail"}


def judge_rldoctor(run_dir: Path, rows: list[dict], config: dict, trl_only: bool = False):
    """(fired {detector: severity}, info {detector}, skipped {detector: why}, said {detector: (severity, summary)})
    of rldoctor's diagnose()."""
    from rl_doctor import diagnose, run_from_records

    if trl_only:
        rows = [{k: v for k, v in row.items() if k.split("/", 1)[0] not in PROBE_FAMILIES} for row in rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy on constant series
        diagnosis = diagnose(run_from_records(rows, config=config, name=run_dir.name, source=f"jsonl:{run_dir}"))
    fired = {f.detector: f.severity.name for f in diagnosis.findings if f.severity.name in FIRING}
    info = {f.detector for f in diagnosis.findings if f.severity.name == "INFO"}
    skipped = {f.detector: _one_line(f.summary) for f in diagnosis.findings if f.severity.name == "SKIPPED"}
    said = {f.detector: (f.severity.name, _one_line(f.summary)) for f in diagnosis.findings}
    return fired, info, skipped, said


def _one_line(reason: str) -> str:
    return re.sub(r"\s+", " ", reason).strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path, help="the --save-runs folder of bench/selftest_full.py")
    args = parser.parse_args()
    try:
        from importlib.metadata import version as dist_version

        import rl_doctor
        from rl_doctor.detectors import available
    except ImportError:
        print("rldoctor is not installed: pip install rldoctor", file=sys.stderr)
        return 2
    try:
        rd_version = dist_version("rldoctor")
    except Exception:
        rd_version = rl_doctor.__version__
    if not args.runs_dir.is_dir():
        print(f"{args.runs_dir}: no such folder", file=sys.stderr)
        return 2

    cases = {c.name: c for c in FAULTS + HEALTHY}
    found: dict[str, list[tuple[int, Path]]] = {}
    unknown = []
    for run_dir in sorted(p for p in args.runs_dir.iterdir() if p.is_dir()):
        parsed = split_case(run_dir.name)
        if parsed is None or parsed[0] not in cases or not (run_dir / "metrics.jsonl").exists():
            unknown.append(run_dir.name)
            continue
        found.setdefault(parsed[0], []).append((parsed[1], run_dir))

    outcomes, refused, missing = [], [], []
    for case in FAULTS + HEALTHY:
        if case.name not in found:
            if REFUSED in case.must_fail:
                refused.append(case)
            else:
                missing.append(case.name)
            continue
        for seed, run_dir in sorted(found[case.name]):
            rows = read_rows(run_dir)
            toml = run_dir / "config.toml"
            config = tomllib.loads(toml.read_text("utf-8")) if toml.exists() else {}
            outcome = Outcome(case, seed, failed=judge_flatline(run_dir))
            outcome.fired, outcome.info, outcome.skipped, outcome.said = judge_rldoctor(run_dir, rows, config)
            outcome.trl_only_fired = set(judge_rldoctor(run_dir, rows, config, trl_only=True)[0])
            outcome.final_reward = last_reward(rows)
            outcomes.append(outcome)
    print(render(outcomes, available(), rd_version, refused, missing, unknown, str(args.runs_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
