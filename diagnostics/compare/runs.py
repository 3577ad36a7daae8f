"""From paths to a comparison: which paths are runs, each run's score, the checks, the cells and the verdicts.

Which paths are runs: every path is one run (a run directory or a log file, anything load_history reads), except a
directory that holds no log file itself and no TRL `checkpoint-N/` (`holds_a_log`): its subdirectories are the runs,
one level down (hidden ones skipped; one with nothing to read is left out and listed). A run reached twice (the same
resolved path) counts once. A file of several runs (a W&B export) gives each of them, named `FILE/<run name>`.

A run's score: the mean of the last K values it logged for the metric; K is `last` when set, else the last
WINDOW_PERCENT % of the values the run logged for that metric, rounded up (at least 1). One final value is too noisy
to rank runs by, and a whole-run mean rewards fast starters. A non-finite value inside the window means the run
diverged: it has no score (an error, or left out with `skip_missing`), never a score from the values around it.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flatline.common.errors import FlatlineError
from flatline.diagnostics.compare.labels import (
    Label,
    canonical,
    compile_pattern,
    default_pattern,
    hydra_overrides,
    natural_key,
    path_components,
    path_pairs,
    run_labels,
)
from flatline.diagnostics.compare.stats import Cell, Comparison, compare_cells
from flatline.diagnostics.history import History, load_histories

DEFAULT_METRIC = "reward"
DEFAULT_BY = "variant"
DEFAULT_BASELINE = "baseline"
# The default scoring window: this percentage of the values a run logged for the metric, rounded up (at least 1).
WINDOW_PERCENT = 10
# A directory holding one of these right inside is one run, not a folder of runs: the logs load_history reads
# (flatline's metrics.jsonl, JSON Lines, CSV/TSV, W&B's run-*.wandb, TRL's trainer_state.json, TensorBoard event
# files), or TRL's checkpoint-N/ directories, which are parts of one run.
RUN_LOG_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".tsv", ".wandb", ".ipynb")
LOG_NAMES = ("trainer_state.json",)
LOG_PREFIXES = ("events.out.tfevents.",)
_CHECKPOINT_DIR = re.compile(r"checkpoint-\d+")
# Metric names listed when a run lacks the metric asked for.
MAX_NAMES_SHOWN = 12


@dataclass(frozen=True)
class CompareOptions:
    """What to compare and how; the CLI's flags, one to one."""

    metric: str = DEFAULT_METRIC
    """The logged metric a run is scored by (`reward`, `plan_reward`, `eval/reward`, a loss with lower_is_better)."""
    by: str = DEFAULT_BY
    """The label key whose value names the variant (a config key, a KEY=VALUE path component, a pattern field)."""
    baseline: str | None = None
    """The baseline variant's value; None: the variant named "baseline", which must then exist."""
    last: int | None = None
    """Score over this many last logged values; None: the last WINDOW_PERCENT % of them (at least 1)."""
    task_key: str = "task"
    seed_key: str = "seed"
    pattern: str | None = None
    """Fields read from a path component, e.g. "{task}_{variant}_s{seed}"; None: {task_key}-{by}-seed{seed_key}."""
    lower_is_better: bool = False
    skip_missing: bool = False
    """Leave out (and list) runs without a finite score instead of stopping with an error."""

    @property
    def resolved_pattern(self) -> str:
        return self.pattern if self.pattern is not None else default_pattern(self.task_key, self.by, self.seed_key)

    @property
    def window_text(self) -> str:
        if self.last is not None:
            return f"last {self.last} logged values"
        return f"last {WINDOW_PERCENT}% of logged values (rounded up, at least 1)"


@dataclass(frozen=True)
class ScoredRun:
    """One run: where it is, how it was grouped (and from where), and its score."""

    path: str
    task: Label
    variant: Label
    seed: Label
    score: float
    values: int  # values averaged into the score
    logged: int  # values the run logged for the metric
    first_step: float  # the scoring window's first and last step
    last_step: float


@dataclass(frozen=True)
class CompareResult:
    options: CompareOptions
    baseline: str
    variants: list[str]  # baseline first
    tasks: list[str]
    runs: list[ScoredRun]  # sorted by task, variant, seed
    cells: list[Cell]
    comparisons: list[Comparison]  # per task, the baseline against each other variant
    left_out: list[tuple[str, str]]  # (path, why)


class NoScore(FlatlineError):
    """A run without a finite score: the metric is missing, or not finite inside the window."""


def window_size(logged: int, last: int | None) -> int:
    """How many of the last logged values make the score: `last` (at most all), else WINDOW_PERCENT % rounded up."""
    if last is not None:
        return min(last, logged)
    return max(1, -(-logged * WINDOW_PERCENT // 100))


def missing_metric(path: str, history: History, metric: str) -> str:
    """Why this run has no `metric`: the names it does log, the nearest first."""
    names = [n for n in history.names("") if n != "step"]
    near = difflib.get_close_matches(metric, names, n=3, cutoff=0.5)
    shown = near + [n for n in names if n not in near][: max(0, MAX_NAMES_SHOWN - len(near))]
    listing = ", ".join(shown) + (f", ... ({len(names)} in all)" if len(names) > len(shown) else "")
    hint = f" (did you mean {' or '.join(repr(n) for n in near)}?)" if near else ""
    return f"{path}: no metric {metric!r}{hint}; it logs: {listing or 'nothing but step'}"


def score_run(path: str, history: History, options: CompareOptions) -> tuple[float, int, int, float, float]:
    """(score, values averaged, values logged, first and last step of the window); NoScore says why there is none."""
    series = history.series(options.metric)
    if not len(series):
        raise NoScore(missing_metric(path, history, options.metric))
    window = series.tail(window_size(len(series), options.last))
    bad = ~np.isfinite(window.values)
    if bad.any():
        span = f"steps {window.steps[0]:g}-{window.steps[-1]:g}"
        raise NoScore(f"{path}: {options.metric!r} is {window.values[bad][0]} at step {window.steps[bad][0]:g}, inside "
                      f"its scoring window ({span}): a diverged run has no score")
    return float(window.values.mean()), len(window), len(series), float(window.steps[0]), float(window.steps[-1])


def holds_a_log(directory: Path) -> bool:
    """Whether a directory is one run (a log file or TRL checkpoint-N/ right inside it), not a folder of runs."""
    try:
        entries = list(directory.iterdir())
    except OSError:
        return False
    for entry in entries:
        name = entry.name
        if entry.is_file() and (entry.suffix.lower() in RUN_LOG_SUFFIXES or name in LOG_NAMES
                                or name.startswith(LOG_PREFIXES)):
            return True
        if entry.is_dir() and _CHECKPOINT_DIR.fullmatch(name):
            return True
    return False


def expand(arguments: list[str]) -> list[tuple[str, bool]]:
    """(path, came from a folder of runs) for each run the arguments name (rules in the module docstring)."""
    runs = []
    for argument in arguments:
        path = Path(argument)
        children = []
        if path.is_dir() and not holds_a_log(path):
            children = sorted(c.name for c in path.iterdir() if c.is_dir() and not c.name.startswith("."))
        runs += [(str(path / name), True) for name in children] or [(argument, False)]
    return runs


def load_runs(arguments: list[str], options: CompareOptions) -> tuple[list[ScoredRun], list[tuple[str, str]], list]:
    """Every run scored and labelled, the paths left out (and why), and the runs' configs (for hints)."""
    runs, left_out, configs, unscored, seen = [], [], [], [], {}
    for path, expanded in expand(arguments):
        resolved = Path(path).resolve()
        if resolved in seen:
            left_out.append((path, f"the same run as {seen[resolved]}"))
            continue
        seen[resolved] = path
        try:
            histories = load_histories(path)
        except FlatlineError as exc:
            if not expanded:
                raise
            left_out.append((path, f"nothing to read: {exc}"))
            continue
        for history in histories:  # a W&B export of several runs: each is a run, labelled by its name
            name = path if len(histories) == 1 else f"{path}/{history.run}"
            try:
                scored = score_run(name, history, options)
            except NoScore as exc:
                unscored.append((name, str(exc)))
                continue
            labels = run_labels(name, history.config, task_key=options.task_key, by=options.by,
                                seed_key=options.seed_key, pattern=options.resolved_pattern)
            configs.append(history.config)
            runs.append(ScoredRun(name, *labels, *scored))
    if unscored and not options.skip_missing:
        others = f" ({len(unscored) - 1} more run(s) like it)" if len(unscored) > 1 else ""
        raise FlatlineError(f"{unscored[0][1]}{others}; pass --metric NAME, or --skip-missing to leave such runs out")
    return runs, left_out + unscored, configs


def differing_keys(configs: list[dict], runs: list[ScoredRun], options: CompareOptions) -> list[str]:
    """Config, Hydra-override and KEY=VALUE path keys whose values differ between the runs: candidates for --by."""
    sources = configs + [path_pairs(path_components(r.path)) | hydra_overrides(r.path) for r in runs]
    keys = sorted({k for s in sources for k in s} - {options.task_key, options.seed_key, options.by})
    return [k for k in keys if len({canonical(s[k]) for s in sources if s.get(k) is not None}) > 1]


def _runs_text(paths: list[str], limit: int = 5) -> str:
    return ", ".join(paths[:limit]) + (f", ... ({len(paths)} in all)" if len(paths) > limit else "")


def check_labels(runs: list[ScoredRun], configs: list[dict], options: CompareOptions) -> None:
    """Every run has a variant, and no two runs share task, variant and seed; else an error naming the runs."""
    unlabelled = [r.path for r in runs if r.variant.value is None]
    if unlabelled:
        candidates = differing_keys(configs, runs, options)
        hint = f" (keys whose values differ between these runs: {', '.join(candidates[:8])})" if candidates else ""
        raise FlatlineError(
            f"no variant for {_runs_text(unlabelled)}: {options.by!r} is not in the config, not a {options.by}=VALUE "
            f"path component and not a field of the pattern {options.resolved_pattern!r}; pass --by KEY naming the "
            f"key whose value tells the variants apart{hint}, or --pattern")
    groups: dict[tuple, list[ScoredRun]] = {}
    for run in runs:
        groups.setdefault((run.task.value, run.variant.value, run.seed.value), []).append(run)
    clashes = [group for group in groups.values() if len(group) > 1]
    if clashes:
        first, paths = clashes[0][0], _runs_text([r.path for r in clashes[0]])
        seed = f"seed {first.seed.value}" if first.seed.value is not None else "no seed found"
        more = f"; {len(clashes) - 1} more such group(s)" if len(clashes) > 1 else ""
        raise FlatlineError(
            f"{paths} have the same task, variant and seed (task {first.task.value}, "
            f"{options.by} {first.variant.value}, {seed}){more}: give each its own seed (config {options.seed_key!r} "
            f"or a {options.seed_key}=N path component) or leave the extra runs out")


def choose_baseline(variants: list[str], options: CompareOptions) -> str:
    """--baseline (normalised like the labels), else the variant named "baseline"; an error when neither is there."""
    if len(variants) < 2:
        raise FlatlineError(f"every run has {options.by} {variants[0]}: nothing to compare; pass runs of at least two "
                            "variants, or --by another key")
    if options.baseline is not None:
        wanted = canonical(options.baseline)
        if wanted not in variants:
            raise FlatlineError(f"--baseline {options.baseline}: no run has {options.by} {wanted}; "
                                f"the variants found are {', '.join(variants)}")
        return wanted
    if DEFAULT_BASELINE in variants:
        return DEFAULT_BASELINE
    raise FlatlineError(f"which variant is the baseline? none is named {DEFAULT_BASELINE!r}; pass --baseline with one "
                        f"of: {', '.join(variants)} (the values of {options.by})")


def check_options(options: CompareOptions) -> None:
    if options.last is not None and options.last < 1:
        raise FlatlineError(f"--last {options.last}: the scoring window needs at least 1 value")
    keys = {"--task-key": options.task_key, "--by": options.by, "--seed-key": options.seed_key}
    if len(set(keys.values())) < len(keys):
        raise FlatlineError(f"{', '.join(f'{k} {v}' for k, v in keys.items())}: task, variant and seed need three "
                            "different keys")
    compile_pattern(options.resolved_pattern)


def compare_runs(arguments: list[str], options: CompareOptions = CompareOptions()) -> CompareResult:
    """Load, label and score the runs, then compare every variant with the baseline on every task.

    Raises FlatlineError (one line naming the run or key, and the fix) on bad input."""
    check_options(options)
    runs, left_out, configs = load_runs(arguments, options)
    if not runs:
        reasons = "; ".join(why for _, why in left_out[:3])
        raise FlatlineError(f"no run to compare in {' '.join(arguments)}" + (f" ({reasons})" if reasons else ""))
    check_labels(runs, configs, options)
    variants = sorted({r.variant.value for r in runs}, key=natural_key)
    baseline = choose_baseline(variants, options)
    variants = [baseline] + [v for v in variants if v != baseline]
    tasks = sorted({r.task.value for r in runs}, key=natural_key)
    order = {v: i for i, v in enumerate(variants)}
    runs.sort(key=lambda r: (natural_key(r.task.value), order[r.variant.value], natural_key(r.seed.value), r.path))
    grouped: dict[tuple[str, str], list[ScoredRun]] = {}
    for run in runs:
        grouped.setdefault((run.task.value, run.variant.value), []).append(run)
    cells = {key: Cell(*key, tuple(r.score for r in group), tuple(r.seed.value for r in group))
             for key, group in grouped.items()}
    comparisons = [compare_cells(task, baseline, variant, cells.get((task, baseline)), cells.get((task, variant)),
                                 options.lower_is_better)
                   for task in tasks for variant in variants[1:]]
    return CompareResult(options, baseline, variants, tasks, runs, list(cells.values()), comparisons, left_out)
