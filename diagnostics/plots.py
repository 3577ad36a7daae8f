"""Training curves for the diagnosis report: one small PNG per question, drawn only when its metrics were logged.

    from flatline.diagnostics.plots import svg_plots, write_plots
    files = write_plots(load_history("runs/x"), "runs/x")   # {"Reward": "reward.png", ...}
    inline = svg_plots(history)                               # [("Reward", "reward.png", "<svg ...</svg>"), ...]

matplotlib is imported inside write_plots (ImportError saying what to install when it is missing) and draws on
standalone Agg figures, so a caller's pyplot state and backend are left alone. Each PNG is written atomically.
Leaves out: per-component rewards, KL and entropy curves.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from flatline.common.files import write_atomic
from flatline.diagnostics.history import History, Series

FIGSIZE = (5, 3)  # inches
DPI = 100
# Below this a log axis cannot show a value; zeros (weights unchanged) switch the axis to symlog instead.
SYMLOG_FLOOR = 1e-12


def _has(history: History, *names: str) -> bool:
    return any(len(history.series(name).finite()) for name in names)


def _aligned(series: Series, steps: np.ndarray) -> np.ndarray:
    """`series` values at `steps`, NaN where it logged nothing."""
    lookup = dict(zip(series.steps.tolist(), series.values.tolist()))
    return np.array([lookup.get(step, np.nan) for step in steps.tolist()], dtype=np.float64)


def _note_dropped(ax, series: Series) -> None:
    dropped = len(series) - len(series.finite())
    if dropped:
        ax.text(0.01, 0.02, f"{dropped} non-finite step(s) not shown", transform=ax.transAxes,
                fontsize=8, color="C3")


def _log_scale(ax, values: np.ndarray) -> None:
    positive = values[values > 0]
    if positive.size == values.size:
        ax.set_yscale("log")
    else:
        ax.set_yscale("symlog", linthresh=float(positive.min()) if positive.size else SYMLOG_FLOOR)


def _legend(ax, *axes) -> None:
    handles, labels = [], []
    for each in (ax, *axes):
        h, l = each.get_legend_handles_labels()
        handles += h
        labels += l
    if handles:
        ax.legend(handles, labels, fontsize=8, loc="best")


def _positive_setting(history: History, key: str) -> float | None:
    try:
        value = float(history.setting(key))
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def draw_reward(ax, history: History) -> None:
    reward = history.series("reward").finite()
    ax.plot(reward.steps, reward.values, color="C0", label="reward")
    std = _aligned(history.series("reward_std").finite(), reward.steps)
    if np.isfinite(std).any():
        ax.fill_between(reward.steps, reward.values - std, reward.values + std, where=np.isfinite(std),
                        color="C0", alpha=0.2, label="± reward_std")
    held_out = history.series("eval/reward").finite()
    if len(held_out):
        ax.plot(held_out.steps, held_out.values, "o", color="C1", label="eval/reward")
    ax.set_ylabel("reward")
    _legend(ax)


def draw_zero_std(ax, history: History) -> None:
    for name, label in (("frac_reward_zero_std", "zero-std groups"),
                        ("advantage/zero_std_all_max_frac", "all at max reward"),
                        ("advantage/zero_std_all_min_frac", "all at min reward")):
        series = history.series(name).finite()
        if len(series):
            ax.plot(series.steps, series.values, label=label)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("fraction of groups")
    _legend(ax)


def _draw_log_line(ax, history: History, name: str, ylabel: str) -> None:
    raw = history.series(name)
    series = raw.finite()
    ax.plot(series.steps, series.values, color="C0", label=name)
    _log_scale(ax, series.values)
    _note_dropped(ax, raw)
    ax.set_ylabel(ylabel)


def draw_update(ax, history: History) -> None:
    _draw_log_line(ax, history, "update/rel_update", "|Δw| / |w|")
    _legend(ax)


def draw_grad_norm(ax, history: History) -> None:
    _draw_log_line(ax, history, "grad_norm", "gradient norm (before clipping)")
    limit = _positive_setting(history, "max_grad_norm")
    if limit is not None:
        ax.axhline(limit, color="C3", linestyle="--", label=f"max_grad_norm = {limit:g}")
    _legend(ax)


def draw_truncation(ax, history: History) -> None:
    clipped = history.series("completions/clipped_ratio").finite()
    length_ax = ax
    if len(clipped):
        ax.plot(clipped.steps, clipped.values, color="C0", label="clipped ratio")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("fraction cut at max length")
        length_ax = ax.twinx()
    length = history.series("completions/mean_length").finite()
    if len(length):
        length_ax.plot(length.steps, length.values, color="C1", label="mean length")
        length_ax.set_ylabel("mean completion length (tokens)")
    _legend(ax, *([length_ax] if length_ax is not ax else []))


# (title, file name, metrics of which at least one must hold finite values, drawing function)
PLOTS: tuple[tuple[str, str, tuple[str, ...], Callable], ...] = (
    ("Reward", "reward.png", ("reward",), draw_reward),
    ("Groups with zero reward std", "zero_std.png",
     ("frac_reward_zero_std", "advantage/zero_std_all_max_frac", "advantage/zero_std_all_min_frac"), draw_zero_std),
    ("Relative update size", "update.png", ("update/rel_update",), draw_update),
    ("Gradient norm", "grad_norm.png", ("grad_norm",), draw_grad_norm),
    ("Truncation and length", "truncation.png", ("completions/clipped_ratio", "completions/mean_length"),
     draw_truncation),
)


def _render(figure_class, title: str, draw: Callable, history: History, fmt: str = "png") -> bytes:
    import io

    fig = figure_class(figsize=FIGSIZE, dpi=DPI, layout="tight")
    ax = fig.add_subplot()
    draw(ax, history)
    ax.set_title(title)
    ax.set_xlabel("step")
    buffer = io.BytesIO()
    # No date in the metadata: the same history gives the same bytes.
    fig.savefig(buffer, format=fmt, dpi=DPI, metadata={"Date": None} if fmt == "svg" else None)
    fig.clear()
    return buffer.getvalue()


def write_plots(history: History, out_dir: str | Path) -> dict[str, str]:
    """Write the PNGs whose metrics `history` holds into `out_dir`; returns {title: file name}."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("the report's plots need matplotlib: pip install matplotlib") from exc
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for title, filename, metrics, draw in PLOTS:
        if _has(history, *metrics):
            write_atomic(out_dir / filename, _render(Figure, title, draw, history))
            written[title] = filename
    return written


def svg_plots(history: History) -> list[tuple[str, str, str]]:
    """The same pictures as write_plots, as inline SVG text (`<svg ...>...</svg>`, no XML prologue) for an HTML
    page: [(title, the PNG's file name, svg)]. Text stays text (searchable, no font files); ids are fixed per
    picture, so the same history gives the same page and two pictures on one page never share an id."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("the report's plots need matplotlib: pip install matplotlib") from exc
    pictures = []
    for title, filename, metrics, draw in PLOTS:
        if _has(history, *metrics):
            with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": filename}):
                text = _render(Figure, title, draw, history, fmt="svg").decode("utf-8")
            pictures.append((title, filename, text[text.index("<svg"):].strip()))
    return pictures
