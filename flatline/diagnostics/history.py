"""Metric histories: what the hypotheses judge. Read from a run directory, a metrics.jsonl, or TRL's
trainer_state.json, so a finished run or another trainer's log can be re-judged without the model.

    h = load_history("runs/exp0.1-arithmetic-1122")
    h.series("reward").trend()     # Theil-Sen slope and Kendall tau over the steps
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tomllib

from flatline.common.errors import FlatlineError
from flatline.common.jsonl import read_jsonl

# Below this many points a trend is not judged (Kendall's tau on fewer points cannot reach p < 0.05 reliably).
MIN_TREND_POINTS = 6
# Trends of longer series are judged on this many bin means (Theil-Sen's pairwise slopes grow with n squared).
MAX_TREND_POINTS = 1000
# Significance for Kendall's tau (the conventional 5%; rldoctor's Mann-Kendall uses the same).
TREND_ALPHA = 0.05


@dataclass(frozen=True)
class Trend:
    """A robust trend: Theil-Sen slope per step and the Kendall tau test of monotonic change."""

    slope: float
    tau: float
    p_value: float
    points: int

    @property
    def rising(self) -> bool:
        return self.points >= MIN_TREND_POINTS and self.tau > 0 and self.p_value < TREND_ALPHA

    @property
    def falling(self) -> bool:
        return self.points >= MIN_TREND_POINTS and self.tau < 0 and self.p_value < TREND_ALPHA


@dataclass(frozen=True)
class Series:
    """One metric over the steps that logged it; non-numeric values ("nan", "inf" strings) become floats."""

    name: str
    steps: np.ndarray  # [S]
    values: np.ndarray  # [S] float64, may hold NaN/inf

    def __len__(self) -> int:
        return len(self.values)

    def finite(self) -> "Series":
        keep = np.isfinite(self.values)
        return Series(self.name, self.steps[keep], self.values[keep])

    def head(self, n: int) -> "Series":
        return Series(self.name, self.steps[:n], self.values[:n])

    def tail(self, n: int) -> "Series":
        return Series(self.name, self.steps[-n:], self.values[-n:])

    def mean(self) -> float:
        finite = self.values[np.isfinite(self.values)]
        return float(finite.mean()) if finite.size else math.nan

    def median(self) -> float:
        finite = self.values[np.isfinite(self.values)]
        return float(np.median(finite)) if finite.size else math.nan

    def max(self) -> float:
        finite = self.values[np.isfinite(self.values)]
        return float(finite.max()) if finite.size else math.nan

    def last(self) -> float:
        return float(self.values[-1]) if len(self) else math.nan

    def frac(self, predicate) -> float:
        """Fraction of logged steps where predicate(value) holds (NaN-safe: the predicate sees floats)."""
        if not len(self):
            return math.nan
        return float(np.mean([bool(predicate(v)) for v in self.values]))

    def trend(self) -> Trend:
        """Theil-Sen slope and Kendall tau over the finite points; a series longer than MAX_TREND_POINTS is first
        averaged in consecutive bins (Theil-Sen is quadratic in the points; bin means keep the trend)."""
        from scipy.stats import kendalltau, theilslopes

        s = self.finite()
        if len(s) < 2 or np.all(s.values == s.values[0]):
            return Trend(0.0, 0.0, 1.0, len(s))
        steps, values = s.steps, s.values
        if len(s) > MAX_TREND_POINTS:
            bins = np.array_split(np.arange(len(s)), MAX_TREND_POINTS)
            steps = np.array([steps[b].mean() for b in bins])
            values = np.array([values[b].mean() for b in bins])
        slope = theilslopes(values, steps)[0]
        tau, p_value = kendalltau(steps, values)
        return Trend(float(slope), float(tau), float(p_value) if math.isfinite(p_value) else 1.0, len(s))


def _number(value) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # "nan", "inf", "-inf" as written by the run directory
        except ValueError:
            return math.nan
    return math.nan


@dataclass
class History:
    """A run's metric rows (one per step), its resolved config and summary when known, and a control run."""

    run: str
    rows: list[dict]
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    run_dir: Path | None = None
    control: "History | None" = None

    def has(self, name: str) -> bool:
        return any(name in row for row in self.rows)

    def series(self, name: str) -> Series:
        steps, values = [], []
        for index, row in enumerate(self.rows):
            if name in row:
                steps.append(_number(row.get("step", index + 1)))
                values.append(_number(row[name]))
        return Series(name, np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64))

    def names(self, prefix: str) -> list[str]:
        """Metric names that start with `prefix`, in first-seen order."""
        seen: dict[str, None] = {}
        for row in self.rows:
            for key in row:
                if key.startswith(prefix):
                    seen.setdefault(key)
        return list(seen)

    def setting(self, key: str, default=None):
        """A config value of the run (config.toml), or `default` when the log did not come with one."""
        return self.config.get(key, default)

    @property
    def steps(self) -> int:
        return len(self.rows)


def _trl_state_rows(path: Path) -> list[dict]:
    """TRL/transformers trainer_state.json: the training rows of log_history (eval rows folded into eval/)."""
    state = json.loads(path.read_text(encoding="utf-8"))
    rows = []
    for entry in state.get("log_history", []):
        if "train_runtime" in entry:
            continue
        row = {("eval/" + k[len("eval_"):] if k.startswith("eval_") else k): v for k, v in entry.items()}
        rows.append(row)
    return rows


def load_history(path: str | Path) -> History:
    """A run directory (metrics.jsonl + config.toml + summary.json + samples.jsonl), a metrics .jsonl file, or a
    trainer_state.json. Raises FlatlineError naming the path when there is nothing to judge."""
    path = Path(path)
    if not path.exists():
        raise FlatlineError(f"{path}: no such run directory or log file")
    run_dir = path if path.is_dir() else None
    if run_dir is not None:
        candidates = [run_dir / "metrics.jsonl", run_dir / "trainer_state.json"]
        log = next((c for c in candidates if c.exists()), None)
        if log is None:
            raise FlatlineError(f"{path}: no metrics.jsonl (or trainer_state.json) in this directory; "
                                f"pass a run directory written by `flatline train` or a metrics log")
    else:
        log = path
    rows = _trl_state_rows(log) if log.name.endswith(".json") else read_jsonl(log).rows
    if not rows:
        raise FlatlineError(f"{log}: holds no metric rows to judge")
    home = run_dir or log.parent
    config, summary, samples = {}, {}, []
    if (home / "config.toml").exists():
        config = tomllib.loads((home / "config.toml").read_text(encoding="utf-8"))
    if (home / "summary.json").exists():
        summary = json.loads((home / "summary.json").read_text(encoding="utf-8"))
    if (home / "samples.jsonl").exists():
        samples = read_jsonl(home / "samples.jsonl").rows
    name = summary.get("run") or (run_dir.name if run_dir else log.stem)
    return History(run=name, rows=rows, config=config, summary=summary, samples=samples, run_dir=run_dir)
