"""One training run end to end: checks, model, run directory, the loop, metrics, samples, W&B, a summary.

Run directory (never overwritten): config.toml, metrics.jsonl (a row per step), samples.jsonl, summary.json.
"""
from __future__ import annotations

import json
import math
import time
from datetime import datetime
from pathlib import Path

from flatline.common.jsonl import JsonlWriter
from flatline.trainer.config import to_dict, to_toml
from flatline.trainer.loop import build_trainer, prepare
from flatline.trainer.rundir import create_run_dir
from flatline.trainer.tracking import Tracker

# Steps averaged at each end of the run for the summary's "did reward rise" comparison.
SUMMARY_WINDOW = 5
PROGRESS_BAR_MIN_STEPS = 5


def run_name(cfg, now: datetime | None = None) -> str:
    now = now or datetime.now()
    if cfg.run_name:
        return cfg.run_name
    if cfg.exp_major >= 0:
        return f"exp{cfg.exp_major}.{cfg.exp_minor}-{cfg.task}-{now:%m%d}"
    return f"{cfg.task}-{now:%m%d-%H%M%S}"


def eval_due(step: int, cfg) -> bool:
    if cfg.eval_every <= 0:
        return False
    return step == 1 or step % cfg.eval_every == 0 or step == cfg.max_steps


def summarize(rows: list[dict], window: int = SUMMARY_WINDOW) -> dict:
    """Mean reward of the first and last `window` steps, the last eval metrics, and totals."""
    rewards = [r["reward"] for r in rows if isinstance(r.get("reward"), (int, float)) and math.isfinite(r["reward"])]
    first, last = rewards[:window], rewards[-window:]
    summary = {
        "steps": len(rows),
        "reward_first": sum(first) / len(first) if first else None,
        "reward_last": sum(last) / len(last) if last else None,
        "wall_seconds": sum(r.get("step_time", 0.0) for r in rows),
    }
    if first and last:
        summary["reward_rose"] = summary["reward_last"] > summary["reward_first"]
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    if evals:
        summary["eval_first"] = {k: v for k, v in evals[0].items() if k.startswith("eval/")}
        summary["eval_last"] = {k: v for k, v in evals[-1].items() if k.startswith("eval/")}
    return summary


def train(cfg, out: str | Path | None = None, listeners=(), log=print, make_listeners=None, on_finish=None) -> Path:
    """Train with `cfg`; returns the run directory. Bad input raises FlatlineError before anything is written.

    make_listeners(trainer) -> listeners, for listeners that need the built trainer (the CLI attaches probes so).
    on_finish(run_dir, tracker), after summary.json is written and before W&B closes (the CLI judges the run there).
    """
    started = time.perf_counter()
    prepared = prepare(cfg)
    trainer = build_trainer(cfg, listeners, prepared)
    if make_listeners is not None:
        trainer.listeners.extend(make_listeners(trainer))
    name = run_name(cfg)
    run_dir = create_run_dir(Path(out) if out else Path(cfg.output_dir) / name)
    (run_dir / "config.toml").write_text(to_toml(cfg), encoding="utf-8")
    log(f"run directory: {run_dir}")
    tracker = Tracker()
    if cfg.report_to == "wandb":
        named = cfg.run_name or cfg.exp_major >= 0
        tracker.start(cfg.wandb_project, name if named else run_dir.name, str(run_dir), to_dict(cfg))
    metrics, samples = JsonlWriter(run_dir / "metrics.jsonl"), JsonlWriter(run_dir / "samples.jsonl")
    bar = _progress_bar(cfg, name)
    rows, completed = [], False
    try:
        for _ in range(cfg.max_steps):
            row = trainer.step()
            if eval_due(row["step"], cfg):
                row.update(trainer.evaluate())
            metrics.write(row)
            for sample in trainer.logged_samples(cfg.log_completions):
                samples.write(sample)
            tracker.log(row, row["step"])
            rows.append(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(reward=f"{row['reward']:.3f}", refresh=False)
        completed = True
    finally:
        metrics.close()
        samples.close()
        if bar is not None:
            bar.close()
        summary = summarize(rows)
        summary["run"] = run_dir.name
        summary["total_seconds"] = time.perf_counter() - started
        summary["wandb"] = tracker.url_or_name
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        try:
            if on_finish is not None and completed and rows:
                on_finish(run_dir, tracker)
        finally:
            tracker.finish()
    log(summary_line(summary))
    return run_dir


def summary_line(summary: dict) -> str:
    if summary.get("reward_first") is None:
        return f"{summary['steps']} steps"
    text = (f"{summary['steps']} steps in {summary['total_seconds']:.0f} s: mean reward of the first "
            f"{SUMMARY_WINDOW} steps {summary['reward_first']:.3f}, of the last {SUMMARY_WINDOW} {summary['reward_last']:.3f}")
    if "eval_last" in summary:
        text += f"; eval/reward {summary['eval_first'].get('eval/reward', float('nan')):.3f} -> " \
                f"{summary['eval_last'].get('eval/reward', float('nan')):.3f}"
    return text


def _progress_bar(cfg, name: str):
    if not cfg.progress_bar or cfg.max_steps < PROGRESS_BAR_MIN_STEPS:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=cfg.max_steps, desc=name, unit="step", dynamic_ncols=True)
