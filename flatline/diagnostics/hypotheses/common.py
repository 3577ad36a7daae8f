"""Evidence shared by several families: did the reward (or the held-out score) rise, and which steps had signal."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flatline.diagnostics.history import MIN_TREND_POINTS, History, Trend

# Steps averaged at each end of a run when comparing its start with its end (as the run summary does).
WINDOW = 5
# A gain of 0.1 in mean reward (rewards scored in [0, 1]) between the first and last window counts as learning
# even when the step-to-step noise keeps Kendall's tau from significance; rldoctor's plateau detector uses a
# trend test first and a minimum relative change second in the same way.
MIN_GAIN = 0.1
# A window-to-window gain must also stand NOISE_Z standard errors clear of the step-to-step noise (two windows of
# 5 noisy batch means can differ by 0.1 by chance alone).
NOISE_Z = 2.0
# Reward within 5% of the task's maximum is "solved": flat reward there is convergence, not a plateau.
CEILING_MARGIN = 0.05


@dataclass(frozen=True)
class Progress:
    trend: Trend
    first: float  # mean of the first WINDOW steps
    last: float  # mean of the last WINDOW steps
    eval_first: float
    eval_last: float
    eval_points: int
    ceiling: float  # the task's maximum reward when known, else NaN
    gain_se: float = 0.0  # standard error of last - first from the spread inside the two windows

    @property
    def gain(self) -> float:
        return self.last - self.first

    @property
    def eval_gain(self) -> float:
        return self.eval_last - self.eval_first if self.eval_points >= 2 else math.nan

    @property
    def rising(self) -> bool:
        return self.trend.rising or (self.gain >= MIN_GAIN and self.gain >= NOISE_Z * self.gain_se)

    @property
    def at_ceiling(self) -> bool:
        return math.isfinite(self.ceiling) and self.last >= self.ceiling - CEILING_MARGIN * max(abs(self.ceiling), 1.0)

    @property
    def eval_rising(self) -> bool:
        return self.eval_points >= 2 and self.eval_gain >= MIN_GAIN

    def evidence(self, prefix: str = "", trend: bool = True) -> dict:
        out = {f"{prefix}reward_first": self.first, f"{prefix}reward_last": self.last}
        if trend:
            out.update({f"{prefix}reward_kendall_tau": self.trend.tau, f"{prefix}reward_kendall_p": self.trend.p_value,
                        f"{prefix}reward_theil_sen_slope": self.trend.slope})
        if self.eval_points >= 2:
            out[f"{prefix}eval_first"], out[f"{prefix}eval_last"] = self.eval_first, self.eval_last
        return out


def progress(h: History) -> Progress | None:
    """Reward trend and window means, held-out score at both ends; None when the log has no reward."""
    reward = h.series("reward").finite()
    if not len(reward):
        return None
    evals = h.series("eval/reward").finite()
    ceiling = h.series("advantage/reward_ceiling").finite()
    task_max = float(np.max(ceiling.values)) if len(ceiling) else math.nan
    head, tail = reward.head(WINDOW).values, reward.tail(WINDOW).values
    spread = (np.var(head, ddof=1) / len(head) if len(head) > 1 else 0.0) + \
        (np.var(tail, ddof=1) / len(tail) if len(tail) > 1 else 0.0)
    return Progress(trend=reward.trend(), first=reward.head(WINDOW).mean(), last=reward.tail(WINDOW).mean(),
                    gain_se=float(math.sqrt(spread)),
                    eval_first=float(evals.values[0]) if len(evals) else math.nan,
                    eval_last=float(evals.values[-1]) if len(evals) else math.nan,
                    eval_points=len(evals), ceiling=task_max)


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
