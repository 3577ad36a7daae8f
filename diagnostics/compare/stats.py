"""Cells and verdicts: the runs of one variant on one task, and the baseline against a variant.

    verdict = compare_cells("walker", "baseline", "dreamer", baseline_cell, variant_cell, lower_is_better=False)

The verdict is the variant's or the baseline's win when Welch's t-test (two-sided, unequal variances) gives
p < ALPHA and the means point that way, tie when it does not, and n/a when there is nothing to test: a cell without
runs, a cell with one run (no variance), or no variance on either side with different means (every seed scored the
same; a p-value there would be invented). Identical constant scores on both sides are a tie.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

# Significance level of Welch's t-test: the conventional two-sided 5%. With 3 seeds a cell the test is weak, so a
# tie means "no difference shown", not "equal". Each comparison is tested on its own (no multiple-comparison
# correction): among k comparisons of equal variants, about 0.05 k false winners are expected by chance.
ALPHA = 0.05
# Fewer runs than this in a cell leave its variance unknown, and Welch's t needs one on each side.
MIN_RUNS_FOR_TEST = 2
VERDICTS = ("variant", "baseline", "tie", "n/a")


@dataclass(frozen=True)
class Cell:
    """The scores of one variant's runs on one task, with their seeds."""

    task: str
    variant: str
    scores: tuple[float, ...]
    seeds: tuple[str | None, ...]

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores))

    @property
    def std(self) -> float:
        """Sample standard deviation (n - 1, as in "mean ± std over seeds"); NaN for one run."""
        return float(np.std(self.scores, ddof=1)) if self.n > 1 else math.nan


@dataclass(frozen=True)
class Comparison:
    """The baseline against one variant on one task."""

    task: str
    baseline_name: str
    variant_name: str
    baseline: Cell | None
    variant: Cell | None
    difference: float  # variant mean - baseline mean (NaN when a cell is empty)
    percent: float  # the difference in percent of |baseline mean| (NaN when that is 0)
    p_value: float  # NaN when no test was possible
    verdict: str  # one of VERDICTS
    reason: str

    @property
    def winner(self) -> str | None:
        return {"variant": self.variant_name, "baseline": self.baseline_name}.get(self.verdict)


def compare_cells(task: str, baseline_name: str, variant_name: str, baseline: Cell | None, variant: Cell | None,
                  lower_is_better: bool = False) -> Comparison:
    """The difference, its percentage of the baseline, Welch's t-test and the verdict for one pair of cells."""
    def result(difference=math.nan, percent=math.nan, p_value=math.nan, verdict="n/a", reason=""):
        return Comparison(task, baseline_name, variant_name, baseline, variant, difference, percent, p_value, verdict,
                          reason)

    if baseline is None or variant is None:
        return result(reason=f"no run of {baseline_name if baseline is None else variant_name} on this task")
    difference = variant.mean - baseline.mean
    percent = difference / abs(baseline.mean) * 100 if baseline.mean != 0 else math.nan
    if min(baseline.n, variant.n) < MIN_RUNS_FOR_TEST:
        return result(difference, percent, reason=f"fewer than {MIN_RUNS_FOR_TEST} runs in a cell: no variance to test")
    if np.ptp(baseline.scores) == 0 and np.ptp(variant.scores) == 0:
        if difference == 0:
            return result(difference, percent, verdict="tie", reason="identical scores on every run")
        return result(difference, percent, reason="no variance on either side: a t-test is undefined")
    from scipy.stats import ttest_ind

    with warnings.catch_warnings():
        # scipy warns of precision loss when one side is constant; that side's variance is exactly 0 and Welch's test
        # stands on the other side's alone, so the warning says nothing here.
        if np.ptp(baseline.scores) == 0 or np.ptp(variant.scores) == 0:
            warnings.simplefilter("ignore", RuntimeWarning)
        p_value = float(ttest_ind(variant.scores, baseline.scores, equal_var=False).pvalue)
    if not math.isfinite(p_value):
        return result(difference, percent, reason="Welch's t-test is undefined here")
    if p_value >= ALPHA:
        return result(difference, percent, p_value, "tie", f"p >= {ALPHA}")
    better = difference < 0 if lower_is_better else difference > 0
    return result(difference, percent, p_value, "variant" if better else "baseline", f"p < {ALPHA}")
