"""Evidence shared by several families: did the reward (or the held-out score) rise, is it still rising, and which
steps had signal.

A run is judged at both ends (the first and last windows) and in its recent part (the last third): a pathology that
will stop learning must be seen while the reward still rises, and a run that rose early and then went flat has
stopped learning even though its end is above its start.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flatline.diagnostics.history import MIN_TREND_POINTS, History, Series, Trend

# Steps averaged at each end of a run when comparing its start with its end (as the run summary does); long runs
# average a tenth of their steps, up to MAX_WINDOW, so one noisy batch cannot decide.
WINDOW = 5
WINDOW_FRAC = 0.1
MAX_WINDOW = 50
# A gain of 0.1 in mean reward (rewards scored in [0, 1]) between the first and last window counts as learning
# even when the step-to-step noise keeps Kendall's tau from significance; rldoctor's plateau detector uses a
# trend test first and a minimum relative change second in the same way.
MIN_GAIN = 0.1
# A window-to-window gain must also stand NOISE_Z standard errors clear of the step-to-step noise (two windows of
# 5 noisy batch means can differ by 0.1 by chance alone).
NOISE_Z = 2.0
# Reward within 5% of the task's maximum is "solved": flat reward there is convergence, not a plateau.
CEILING_MARGIN = 0.05
# The recent part of a run: its last third. It is judged on its own only with at least RECENT_MIN_POINTS points:
# below that, Kendall's test on the window is too weak to tell flat from slowly rising (rldoctor's plateau window
# is 35% of the run and at least 12 points).
RECENT_FRAC = 1 / 3
RECENT_MIN_POINTS = 20
# A series "at the top" of its own run: its recent median within this share of its range below its highest point
# (a [0, 1] batch mean saturating at 0.98 has a range of ~0.6 and sits within a few percent of its top).
TOP_MARGIN = 0.1
# A solved run: at least this share of recent groups have identical rewards, with the reward at the top of its run.
SOLVED_FLAT_FRAC = 0.95


def window_size(points: int) -> int:
    """Steps averaged at each end of a run of `points` steps."""
    return int(min(MAX_WINDOW, max(WINDOW, points * WINDOW_FRAC)))


def recent_part(series: Series) -> Series:
    """The last third of a series' finite points (None-free); may be shorter than RECENT_MIN_POINTS."""
    s = series.finite()
    return s.tail(max(1, math.ceil(len(s) * RECENT_FRAC)))


def end_means(series: Series) -> tuple[float, float, float]:
    """(mean of the first window, mean of the last window, standard error of their difference)."""
    s = series.finite()
    n = window_size(len(s))
    head, tail = s.head(n).values, s.tail(n).values
    spread = (np.var(head, ddof=1) / len(head) if len(head) > 1 else 0.0) + \
        (np.var(tail, ddof=1) / len(tail) if len(tail) > 1 else 0.0)
    return float(head.mean()), float(tail.mean()), float(math.sqrt(spread))


def at_top(series: Series) -> bool:
    """The series' recent median sits near the highest level it ever reached (saturated, or still climbing)."""
    s = series.finite()
    if len(s) < 2:
        return False
    low, high = float(np.percentile(s.values, 5)), float(np.percentile(s.values, 95))
    return high > low and recent_part(s).median() >= high - TOP_MARGIN * (high - low)


@dataclass(frozen=True)
class Progress:
    trend: Trend  # the whole run
    recent: Trend  # its last third
    first: float  # mean of the first window
    last: float  # mean of the last window
    eval_first: float
    eval_last: float
    eval_points: int
    ceiling: float  # the task's maximum reward when known, else NaN
    gain_se: float = 0.0  # standard error of last - first from the spread inside the two windows
    eval_peak: float = math.nan  # the held-out score's best value
    recent_start: float = math.nan  # step at which the recent part begins
    eval_recent_gain: float = math.nan  # held-out score at the end minus its last value before the recent part
    recent_span: float = 0.0  # steps covered by the recent part

    @property
    def gain(self) -> float:
        return self.last - self.first

    @property
    def eval_gain(self) -> float:
        return self.eval_last - self.eval_first if self.eval_points >= 2 else math.nan

    @property
    def rising(self) -> bool:
        """The reward rose over the run: a significant trend, or a material gain clear of the noise."""
        return self.trend.rising or self.material_gain

    @property
    def material_gain(self) -> bool:
        """The end is at least MIN_GAIN above the start, NOISE_Z standard errors clear of the noise."""
        return self.gain >= MIN_GAIN and self.gain >= NOISE_Z * self.gain_se

    @property
    def recent_judged(self) -> bool:
        """The recent part is long enough to be judged on its own."""
        return self.recent.points >= RECENT_MIN_POINTS

    @property
    def learning_now(self) -> bool:
        """Still rising at the end: the recent part rises (or, when too short to judge, the whole run does)."""
        if self.recent_judged:
            return self.recent.rising
        return self.rising

    @property
    def recent_gain(self) -> float:
        """The reward's Theil-Sen gain over the recent part."""
        return self.recent.slope * self.recent_span

    @property
    def barely_rising(self) -> bool:
        """The recent part (long enough to judge) gained less than half of MIN_GAIN, significant or not."""
        return self.recent_judged and self.recent_gain < MIN_GAIN / 2

    @property
    def stalled(self) -> bool:
        """Rose, then went flat for the whole recent part (long enough to judge) short of the task's maximum."""
        return self.rising and self.recent_judged and not self.recent.rising and not self.at_ceiling

    @property
    def at_ceiling(self) -> bool:
        return math.isfinite(self.ceiling) and self.last >= self.ceiling - CEILING_MARGIN * max(abs(self.ceiling), 1.0)

    @property
    def eval_rising(self) -> bool:
        return self.eval_points >= 2 and self.eval_gain >= MIN_GAIN

    @property
    def eval_rising_recently(self) -> bool:
        """The held-out score gained MIN_GAIN over the recent part of the run."""
        return math.isfinite(self.eval_recent_gain) and self.eval_recent_gain >= MIN_GAIN

    def evidence(self, prefix: str = "", trend: bool = True) -> dict:
        out = {f"{prefix}reward_first": self.first, f"{prefix}reward_last": self.last}
        if trend:
            out.update({f"{prefix}reward_kendall_tau": self.trend.tau, f"{prefix}reward_kendall_p": self.trend.p_value,
                        f"{prefix}reward_theil_sen_slope": self.trend.slope})
        if self.recent_judged:
            out[f"{prefix}recent_kendall_tau"] = self.recent.tau
            out[f"{prefix}recent_kendall_p"] = self.recent.p_value
        if self.eval_points >= 2:
            out[f"{prefix}eval_first"], out[f"{prefix}eval_last"] = self.eval_first, self.eval_last
        return out


def progress(h: History) -> Progress | None:
    """Reward trend (whole run and recent third), window means, held-out score; None when the log has no reward."""
    reward = h.series("reward").finite()
    if not len(reward):
        return None
    evals = h.series("eval/reward").finite()
    ceiling = h.series("advantage/reward_ceiling").finite()
    task_max = float(np.max(ceiling.values)) if len(ceiling) else math.nan
    first, last, se = end_means(reward)
    recent = recent_part(reward)
    before = evals.values[evals.steps <= recent.steps[0]] if len(evals) else evals.values
    eval_recent_gain = float(evals.values[-1] - before[-1]) if len(before) and len(evals) > len(before) else math.nan
    return Progress(trend=reward.trend(), recent=recent.trend(), first=first, last=last, gain_se=se,
                    eval_first=float(evals.values[0]) if len(evals) else math.nan,
                    eval_last=float(evals.values[-1]) if len(evals) else math.nan,
                    eval_points=len(evals), ceiling=task_max,
                    eval_peak=evals.max() if len(evals) else math.nan,
                    recent_start=float(recent.steps[0]) if len(recent) else math.nan,
                    eval_recent_gain=eval_recent_gain,
                    recent_span=float(recent.steps[-1] - recent.steps[0]) if len(recent) else 0.0)


def flat_groups(h: History) -> Series:
    """Share of groups with zero reward variance per step: flatline's advantage probe, else TRL's
    frac_reward_zero_std (empty when the log has neither)."""
    flat = h.series("advantage/zero_std_frac")
    return flat if len(flat.finite()) else h.series("frac_reward_zero_std")


def solved(h, p) -> bool:
    """At the task's maximum: known from the reward probe, or (without it) nearly every recent group flat with the
    reward at the top of its run after a rise."""
    if p is None or not p.rising:  # at the top from the start is "too easy", not solved
        return False
    if p.at_ceiling:
        return True
    flat = flat_groups(h).finite()
    return (len(flat) > 0 and recent_part(flat).median() >= SOLVED_FLAT_FRAC and p.rising
            and at_top(h.series("reward")))


def enough_steps(h: History) -> bool:
    return h.steps >= MIN_TREND_POINTS


def signal_steps(h: History) -> set[float] | None:
    """Steps whose batch had at least one non-zero advantage (else a zero gradient is the right answer); None when
    the log does not say (no advantage/zero_frac or frac_reward_zero_std), as against an empty set: no step had one."""
    zero = h.series("advantage/zero_frac")
    if len(zero):
        return {s for s, v in zip(zero.steps, zero.values) if math.isfinite(v) and v < 1.0}
    flat = h.series("frac_reward_zero_std")
    if len(flat):
        return {s for s, v in zip(flat.steps, flat.values) if math.isfinite(v) and v < 1.0}
    return None


def at_steps(series, steps: set[float] | None):
    """The series on those steps only; steps None (the log does not say which had signal) keeps every step."""
    if steps is None:
        return series
    keep = np.array([s in steps for s in series.steps], dtype=bool)
    return type(series)(series.name, series.steps[keep], series.values[keep])
