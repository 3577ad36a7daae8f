"""Exact confidence intervals for the benches' rates.

    poisson_interval(3)            # (0.619, 8.767): Garwood 95% interval for a Poisson count of 3
    rate_per_1000(3, 12_000)       # (0.25, 0.052, 0.731): events per 1,000 steps with its interval
    binomial_interval(2, 20)       # Clopper-Pearson 95% interval for 2 of 20

Garwood (1936): the exact central interval for a Poisson mean, [chi2(a/2; 2k) / 2, chi2(1 - a/2; 2k + 2) / 2];
tplane reports false alarms per 100k healthy steps the same way (a count over an exposure). Clopper-Pearson (1934):
the exact binomial interval from the beta distribution. Both are conservative (coverage at least 95%).
"""
from __future__ import annotations

from scipy.stats import beta, chi2

CONFIDENCE = 0.95


def poisson_interval(count: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    alpha = 1.0 - confidence
    low = chi2.ppf(alpha / 2, 2 * count) / 2 if count > 0 else 0.0
    return float(low), float(chi2.ppf(1 - alpha / 2, 2 * count + 2) / 2)


def rate_per_1000(count: int, steps: int, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(rate, low, high) in events per 1,000 steps."""
    low, high = poisson_interval(count, confidence)
    scale = 1000.0 / steps
    return count * scale, low * scale, high * scale


def binomial_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    alpha = 1.0 - confidence
    low = beta.ppf(alpha / 2, successes, trials - successes + 1) if successes > 0 else 0.0
    high = beta.ppf(1 - alpha / 2, successes + 1, trials - successes) if successes < trials else 1.0
    return float(low), float(high)
