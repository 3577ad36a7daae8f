"""The comparison for people (a markdown table per task and variant, then every run with its labels) and for tools
(a JSON object, shape in diagnostics/compare/__init__.py). Names from paths and configs are escaped, so a
run called `a|b` cannot break the table."""
from __future__ import annotations

import math

from flatline.diagnostics.compare.runs import CompareResult, ScoredRun
from flatline.diagnostics.compare.stats import ALPHA, MIN_RUNS_FOR_TEST, Cell, Comparison
from flatline.diagnostics.markdown import escape_inline, table

# Numbers in the markdown: the largest mean of a task gets this many significant digits, and the task's other numbers
# the same decimals, so a column lines up (the JSON keeps full precision).
SIGNIFICANT_DIGITS = 3
MAX_DECIMALS = 8


def decimals(values) -> int:
    """Decimals that give the largest |value| SIGNIFICANT_DIGITS significant digits (one task's numbers share them)."""
    largest = max((abs(v) for v in values if math.isfinite(v)), default=0.0)
    if largest == 0:
        return SIGNIFICANT_DIGITS
    return min(MAX_DECIMALS, max(0, SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(largest))))


def _number(value: float, places: int, sign: str = "") -> str:
    return f"{value:{sign}.{places}f}" if math.isfinite(value) else "n/a"


def _percent(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.1f}%"


def _cell_text(cell: Cell | None, places: int) -> str:
    if cell is None:
        return "no runs (n=0)"
    spread = f" ± {_number(cell.std, places)}" if cell.n > 1 else ""
    return f"{_number(cell.mean, places)}{spread} (n={cell.n})"


def _winner_text(comparison: Comparison) -> str:
    if comparison.verdict == "variant":
        return f"**{escape_inline(comparison.variant_name)}**"
    if comparison.verdict == "baseline":
        return f"**{escape_inline(comparison.baseline_name)}** (baseline)"
    if comparison.verdict == "tie" and math.isfinite(comparison.p_value):
        return "tie"
    return f"{comparison.verdict}: {escape_inline(comparison.reason)}"


def _code(text: str) -> str:
    return f"`{text}`" if "`" not in text else escape_inline(text)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _header(result: CompareResult) -> list[str]:
    options = result.options
    direction = "lower" if options.lower_is_better else "higher"
    counts = ", ".join(_count(len(things), noun) for things, noun in
                       ((result.runs, "run"), (result.tasks, "task"), (result.variants, "variant")))
    return [
        f"# flatline compare: {_code(options.metric)} by {_code(options.by)}",
        "",
        f"- Score of a run: the mean of {_code(options.metric)} over its {options.window_text}; {direction} is better.",
        f"- Baseline: {_code(result.baseline)}. {counts}; mean ± sample std over seeds, n runs per cell.",
        f"- Winner: Welch's t-test (two-sided, unequal variances) at alpha {ALPHA}, each comparison on its own (no "
        f"multiple-comparison correction); no p-value with fewer than {MIN_RUNS_FOR_TEST} runs in a cell or no "
        "variance on either side.",
    ]


def _comparison_row(c: Comparison, places: int) -> list[str]:
    return [escape_inline(c.task), escape_inline(c.variant_name), _cell_text(c.baseline, places),
            _cell_text(c.variant, places), _number(c.difference, places, "+"), _percent(c.percent),
            f"{c.p_value:.2g}" if math.isfinite(c.p_value) else "n/a", _winner_text(c)]


def _run_row(r: ScoredRun, places: int) -> list[str]:
    return [escape_inline(r.path), escape_inline(r.task.value), escape_inline(r.variant.value),
            escape_inline(r.seed.value if r.seed.value is not None else "-"), _number(r.score, places),
            f"last {r.values} of {r.logged} (steps {r.first_step:g}-{r.last_step:g})",
            f"{r.task.source}, {r.variant.source}, {r.seed.source}"]


def render_markdown(result: CompareResult) -> str:
    """The header (metric, window, direction, baseline, test), a row per task and variant, then every run's labels."""
    places = {task: decimals([c.mean for c in result.cells if c.task == task]) for task in result.tasks}
    lines = _header(result) + [
        "",
        table(["task", "variant", "baseline: mean ± std (n)", "variant: mean ± std (n)", "difference",
               "% of baseline", "p", "winner"], [_comparison_row(c, places[c.task]) for c in result.comparisons]),
        "",
        "## Runs",
        "",
        table(["run", "task", "variant", "seed", "score", "values", "labels from (task, variant, seed)"],
              [_run_row(r, places[r.task.value]) for r in result.runs]),
    ]
    if result.left_out:
        lines += ["", "## Left out", ""]
        lines += [f"- {escape_inline(path)}: {escape_inline(why)}" for path, why in result.left_out]
    return "\n".join(lines) + "\n"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _side(cell: Cell | None, what: str):
    return None if cell is None else _finite(getattr(cell, what))


def render_json(result: CompareResult) -> dict:
    """The comparison as plain JSON; a number that does not exist is null (json.dumps(allow_nan=False) is safe)."""
    options = result.options
    return {
        "metric": options.metric, "window": options.window_text, "last": options.last,
        "higher_is_better": not options.lower_is_better, "test": "welch", "alpha": ALPHA, "by": options.by,
        "task_key": options.task_key, "seed_key": options.seed_key, "pattern": options.resolved_pattern,
        "baseline": result.baseline, "tasks": result.tasks, "variants": result.variants,
        "runs": [{"path": r.path, "task": r.task.value, "variant": r.variant.value, "seed": r.seed.value,
                  "sources": {"task": r.task.source, "variant": r.variant.source, "seed": r.seed.source},
                  "score": r.score, "values": r.values, "logged": r.logged, "first_step": r.first_step,
                  "last_step": r.last_step} for r in result.runs],
        "cells": [{"task": c.task, "variant": c.variant, "n": c.n, "mean": c.mean, "std": _finite(c.std),
                   "seeds": list(c.seeds)} for c in result.cells],
        "comparisons": [{
            "task": c.task, "baseline": c.baseline_name, "variant": c.variant_name,
            "n_baseline": c.baseline.n if c.baseline else 0, "n_variant": c.variant.n if c.variant else 0,
            "mean_baseline": _side(c.baseline, "mean"), "mean_variant": _side(c.variant, "mean"),
            "std_baseline": _side(c.baseline, "std"), "std_variant": _side(c.variant, "std"),
            "difference": _finite(c.difference), "percent": _finite(c.percent), "p_value": _finite(c.p_value),
            "verdict": c.verdict, "winner": c.winner, "reason": c.reason} for c in result.comparisons],
        "left_out": [{"path": path, "reason": why} for path, why in result.left_out],
    }
