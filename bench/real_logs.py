"""flatline on real GRPO runs: read, judged, and held against what each run's author reported.

    python bench/real_logs.py                                    # data/real_runs
    python bench/real_logs.py --corpus ../a/data/real_runs --corpus ../b/data/real_runs --no-prefixes

Every folder `<corpus>/<run_id>/` with a `source.toml` (the corpus format: docs in data/real_runs/README.md) is one
run: its log (`log`, in the native format the author's tools wrote) is read with `load_history(path)` as
`flatline diagnose` reads it (format detected, never forced) and judged with `judge` in-process. Per run: whether it
was read, the fail and warn ids, the headline, the author's outcome, and the class:

    caught         broken, and at least one fail
    missed         broken, no fail (a warn does not count: a user acting on `--fail-on fail` hears nothing)
    false alarm    healthy, and at least one fail
    correct pass   healthy, no fail (its warns are counted apart: a warn says "learning now, but ...")
    not judged     read, but every hypothesis skipped (no metric flatline reads): neither caught nor passed
    unreadable     the log could not be read (the reader's one-line error is listed)

For a broken run whose author named a failure that maps to hypotheses (CAUSE_IDS), whether the first fail (the
headline's first id) is one of them. For each collapsed run (collapse_step > 0): lead time, the first logged step
at which judging the log's prefix (training and held-out rows up to that step) fails, in logged steps before the
collapse step (negative: after it), and the id that failed first there. Each healthy run's prefixes are judged the
same way: a fail there is a false alarm `flatline watch` would raise while the run ran (--no-prefixes: whole logs
only, a few seconds instead of a minute or two).

Leaves out: runs without source.toml, settings the author did not log (a run's config beyond what its log holds),
and any tuning: the corpus is read as it is. Output committed under reports/examples/real_logs.txt.
"""
from __future__ import annotations

import argparse
import sys
import time
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flatline.common.errors import FlatlineError  # noqa: E402

DEFAULT_CORPUS = Path(__file__).resolve().parent.parent / "data" / "real_runs"
# A word of a broken run's reported failure (source.toml's `failure`, free text such as "length collapse") -> the
# hypotheses that name it. The collapses of real runs end with completions grown into max_completion_length or
# shrunk to a few tokens while the reward falls to 0 (issue 25); "flat", "worse" and "crash" have many causes, so
# any fail names one.
CAUSE_IDS = {
    "truncation": {"length.truncation", "length.context_overflow"},
    # a collapse is an outcome: its causes are the documented mechanisms that precede one (../shared/research/
    # field-2026-11.md: completions growing into the limit, TRL #6219; shrinking to nothing; a sampler/trainer mismatch
    # that grows until the importance weights give out, VeXact and "When Speed Kills Stability"; entropy running away,
    # verl #2738)
    "collapse": {"length.truncation", "length.collapse", "length.growth", "length.context_overflow",
                 "sync.sampler_mismatch", "sync.importance_weights", "entropy.explosion"},
    "nan": {"gradients.non_finite"},
}
# Prefixes judged on the first pass of the lead-time search (lead_time: then the block before the first failing one
# is bisected).
COARSE_PREFIXES = 50
CLASSES = ("caught", "missed", "false alarm", "correct pass", "not judged", "unreadable")
REQUIRED = ("log", "outcome")
OUTCOMES = ("healthy", "broken")


@dataclass
class Run:
    """One corpus entry and what flatline made of it."""

    run_id: str
    folder: Path
    source: dict
    read: bool = False
    error: str = ""
    rows: int = 0
    judged: bool = True  # some verdict was not skipped (False: read, but nothing in it could be judged)
    fails: list[str] = field(default_factory=list)
    warns: list[str] = field(default_factory=list)
    headline: str = ""
    lead: "Lead | None" = None
    watched: "Lead | None" = None  # a healthy run judged at its prefixes, as `flatline watch` would judge it
    seconds: float = 0.0

    @property
    def outcome(self) -> str:
        return self.source.get("outcome", "")

    @property
    def failure(self) -> str:
        return self.source.get("failure", "")

    @property
    def collapse_step(self) -> float:
        return float(self.source.get("collapse_step", 0) or 0)

    @property
    def verdict_class(self) -> str:
        return classify(self.outcome, self.read, self.fails, self.judged)

    @property
    def cause_named_first(self) -> bool | None:
        return names_cause(self.failure, self.fails)


@dataclass(frozen=True)
class Lead:
    collapse_step: float
    first_fail_step: float | None  # None: no prefix fails, not even the whole log
    first_fail_id: str = ""
    rows_before: int = 0  # logged rows from the first failing prefix's step up to the collapse step
    first_fail_row: int = 0  # 1-based: the row of first_fail_step

    @property
    def steps(self) -> float | None:
        """Logged steps the fail came before the collapse step (negative: after)."""
        return None if self.first_fail_step is None else self.collapse_step - self.first_fail_step


# -- pure pieces ------------------------------------------------------------------------------------------------------


def classify(outcome: str, read: bool, fails: list[str], judged: bool = True) -> str:
    if not read:
        return "unreadable"
    if not judged:
        return "not judged"
    if outcome == "broken":
        return "caught" if fails else "missed"
    return "false alarm" if fails else "correct pass"


def names_cause(failure: str, fails: list[str]) -> bool | None:
    """Whether the first fail (the headline's: judge orders fails by when their evidence moved) is one of the
    reported failure's hypotheses; None when the failure maps to none (any fail names a cause) or nothing failed."""
    ids = cause_ids(failure)
    if ids is None or not fails:
        return None
    return fails[0] in ids


def cause_ids(failure: str) -> set[str] | None:
    """The hypotheses a reported failure names, from its words; None when none of CAUSE_IDS's words is there."""
    named = [CAUSE_IDS[word] for word in failure.lower().replace("-", " ").split() if word in CAUSE_IDS]
    return set().union(*named) if named else None


def lead_time(steps: list[float], first_fail_at, collapse_step: float, coarse: int = COARSE_PREFIXES) -> Lead:
    """The first of `steps` (the log's steps, in order) whose prefix fails; `first_fail_at(step)` judges the prefix
    up to that step and gives the first failing id, or "" when nothing fails. A log of more than `coarse` steps is
    judged at `coarse` evenly spaced prefixes (the last step always among them), then the block before the first
    failing one is bisected: exact when the verdict does not come and go between two judged prefixes, and a
    1,000-row log costs about 60 judgements instead of 1,000 (each judges the whole prefix)."""
    if not steps:
        return Lead(collapse_step, None)
    stride = max(1, -(-len(steps) // coarse))
    marks = list(range(stride - 1, len(steps), stride))
    if marks[-1:] != [len(steps) - 1]:
        marks.append(len(steps) - 1)
    found, low = None, -1  # low: the last index known not to fail
    for index in marks:
        failed = first_fail_at(steps[index])
        if failed:
            found = (index, failed)
            break
        low = index
    if found is None:
        return Lead(collapse_step, None)
    high, failed = found
    while high - low > 1:  # the first failing index lies in (low, high]
        middle = (low + high) // 2
        if middle_failed := first_fail_at(steps[middle]):
            high, failed = middle, middle_failed
        else:
            low = middle
    step = steps[high]
    return Lead(collapse_step, step, failed, sum(step <= s < collapse_step for s in steps), high + 1)


def totals(runs: list[Run]) -> dict:
    count = {name: sum(r.verdict_class == name for r in runs) for name in CLASSES}
    judged = [r for r in runs if r.read and r.judged]
    healthy = [r for r in judged if r.outcome == "healthy"]
    broken = [r for r in judged if r.outcome == "broken"]
    mapped = [r for r in broken if r.cause_named_first is not None]
    return {"runs": len(runs), "read": sum(r.read for r in runs), "unreadable": count["unreadable"],
            "not_judged": count["not judged"],
            "broken": len(broken), "caught": count["caught"], "missed": count["missed"],
            "healthy": len(healthy), "false_alarms": count["false alarm"], "correct_passes": count["correct pass"],
            "healthy_warned": sum(bool(r.warns) for r in healthy if not r.fails),
            "cause_mapped": len(mapped), "cause_first": sum(bool(r.cause_named_first) for r in mapped)}


def source_problem(source: dict) -> str:
    """What is wrong with a source.toml for this bench, or ""."""
    missing = [key for key in REQUIRED if not source.get(key)]
    if missing:
        return f"source.toml lacks {', '.join(missing)}"
    if source["outcome"] not in OUTCOMES:
        return f"source.toml: outcome {source['outcome']!r} is not one of {', '.join(OUTCOMES)}"
    return ""


# -- reading and judging ----------------------------------------------------------------------------------------------


def find_runs(corpora: list[Path]) -> list[Run]:
    runs = []
    for corpus in corpora:
        if not corpus.is_dir():
            raise SystemExit(f"--corpus {corpus}: not a directory")
        for folder in sorted(p for p in corpus.iterdir() if (p / "source.toml").is_file()):
            try:
                source = tomllib.loads((folder / "source.toml").read_text())
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                source, problem = {}, f"source.toml: {exc}"
            else:
                problem = source_problem(source)
            run = Run(folder.name, folder, source)
            if problem:
                run.error = problem
            runs.append(run)
    return runs


def prefix(history, step: float):
    """The history as a monitor saw it at `step`: training and held-out rows logged up to it."""
    return replace(history, rows=[r for r in history.rows if r["step"] <= step],
                   eval_rows=[r for r in history.eval_rows if r["step"] <= step])


def judge_run(run: Run, with_lead: bool, watch_healthy: bool = False) -> Run:
    from flatline.diagnostics.history import load_history
    from flatline.diagnostics.judge import judge

    if run.error:
        return run
    started = time.perf_counter()
    try:
        history = load_history(run.folder / run.source["log"])
    except FlatlineError as exc:
        run.error = str(exc).replace(f"{run.folder}/", "")  # the run id is printed beside it
        return run
    except Exception as exc:  # a reader's bug: listed with the unreadable runs, the other runs still judged
        run.error = f"internal error in flatline: {type(exc).__name__}: {exc}"
        return run
    diagnosis = judge(history)
    run.read, run.rows, run.judged = True, history.steps, any(v.status != "skipped" for v in diagnosis.verdicts)
    run.fails, run.warns = [v.id for v in diagnosis.failed], [v.id for v in diagnosis.warned]
    run.headline = " ".join(diagnosis.headline().split())
    def first_fail_at(step):
        failed = judge(prefix(history, step)).failed
        return failed[0].id if failed else ""

    steps = [float(r["step"]) for r in history.rows]
    if with_lead and run.collapse_step > 0:
        run.lead = lead_time(steps, first_fail_at, run.collapse_step)
    if watch_healthy and run.outcome == "healthy":
        run.watched = lead_time(steps, first_fail_at, 0)
    run.seconds = time.perf_counter() - started
    return run


# -- the table --------------------------------------------------------------------------------------------------------


def _ids(ids: list[str], width: int) -> str:
    text = ",".join(ids) or "-"
    return text if len(text) <= width else text[:width - 3] + "..."


def render(runs: list[Run], corpora: list[Path], seconds: float) -> str:
    t = totals(runs)
    out = [f"flatline on {t['runs']} real GRPO runs ({', '.join(str(c) for c in corpora)}): read with load_history "
           "(format detected), judged in-process", ""]
    out.append(f"{'run':<38} {'rows':>5} {'author':<20} {'flatline':<13} {'cause':<5} {'fails (headline first)':<44} "
               "warns")
    for r in runs:
        author = r.outcome + (f" ({r.failure})" if r.failure else "")
        cause = {True: "yes", False: "no", None: "-"}[r.cause_named_first]
        out.append(f"{r.run_id[:38]:<38} {r.rows if r.read else '-':>5} {author[:20]:<20} {r.verdict_class:<13} "
                   f"{cause:<5} {_ids(r.fails, 44):<44} {_ids(r.warns, 60)}")
    out += ["", f"Totals: {t['runs']} runs, {t['read']} read, {t['not_judged']} read but not judged, "
                f"{t['unreadable']} unreadable",
            f"  broken {t['broken']}: caught {t['caught']} (with a fail), missed {t['missed']}; the headline's first "
            f"fail names the reported cause in {t['cause_first']} of the {t['cause_mapped']} caught runs whose "
            "failure maps to hypotheses (the cause column):",
            *(f"    {word}: {', '.join(sorted(ids))}" for word, ids in CAUSE_IDS.items()),
            f"  healthy {t['healthy']}: false alarms with a fail {t['false_alarms']}, correct passes "
            f"{t['correct_passes']} ({t['healthy_warned']} of them with a warn)"]
    leads = [r for r in runs if r.lead is not None]
    if leads:
        out += ["", "Lead time on collapsed runs: the first logged step whose prefix fails, against the collapse step",
                f"  {'run':<38} {'collapse':>8} {'first fail':>10} {'lead (steps)':>12} {'rows':>5}  failed first"]
        for r in leads:
            lead = r.lead
            if lead.first_fail_step is None:
                out.append(f"  {r.run_id[:38]:<38} {lead.collapse_step:>8g} {'never':>10} {'-':>12} {'-':>5}")
            else:
                out.append(f"  {r.run_id[:38]:<38} {lead.collapse_step:>8g} {lead.first_fail_step:>10g} "
                           f"{lead.steps:>12g} {lead.rows_before:>5}  {lead.first_fail_id}")
    watched = [r for r in runs if r.watched is not None]
    if watched:
        flagged = [r for r in watched if r.watched.first_fail_step is not None]
        out += ["", f"Healthy runs as `flatline watch` sees them: {len(flagged)} of {len(watched)} fail at some prefix "
                f"(judged at up to {COARSE_PREFIXES} evenly spaced prefixes; the step is a failing prefix, the first "
                "when the verdict does not come and go)"]
        out += [f"  {r.run_id[:38]:<38} fails at step {r.watched.first_fail_step:g} (row {r.watched.first_fail_row} "
                f"of {r.rows}): {r.watched.first_fail_id}" for r in flagged]
    headlines = [r for r in runs if r.read and (r.fails or r.warns)]
    if headlines:
        out += ["", "Headlines (runs with a fail or warn):"]
        out += [f"  {r.run_id} [{r.outcome}{'/' + r.failure if r.failure else ''}]: {r.headline[:300]}"
                for r in headlines]
    blind = [r for r in runs if r.read and not r.judged]
    if blind:
        out += ["", "Not judged (read, every hypothesis skipped; counted neither broken nor healthy):"]
        out += [f"  {r.run_id} [{r.outcome}]: {r.headline[:300]}" for r in blind]
    unread = [r for r in runs if not r.read]
    if unread:
        out += ["", "Unreadable:"] + [f"  {r.run_id}: {r.error[:300]}" for r in unread]
    out += ["", f"{seconds:.1f} s in all"]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", action="append", type=Path, help="a folder of runs (repeatable; default "
                        "data/real_runs)")
    parser.add_argument("--no-prefixes", action="store_true", help="judge whole logs only: no lead time on collapsed "
                        "runs, no prefixes of healthy runs")
    parser.add_argument("--only", nargs="+", metavar="RUN_ID", help="judge only these runs")
    args = parser.parse_args()
    corpora = args.corpus or [DEFAULT_CORPUS]
    started = time.perf_counter()
    runs = [r for r in find_runs(corpora) if not args.only or r.run_id in args.only]
    runs = [judge_run(r, not args.no_prefixes, not args.no_prefixes) for r in runs]
    print(render(runs, corpora, time.perf_counter() - started))


if __name__ == "__main__":
    main()
