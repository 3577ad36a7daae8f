"""One training run end to end: checks, model, run directory, the loop, metrics, samples, W&B, a summary.

Run directory (never overwritten): config.toml, metrics.jsonl (a row per step), samples.jsonl, summary.json.
summary.json says how the run ended: `status` completed | failed | interrupted, `steps_completed` of `max_steps`,
and for a failed or interrupted run the `error` (the exception's last line, or SIGINT / SIGTERM / SIGHUP). SIGTERM
and SIGHUP are handled like Ctrl-C while a run trains, so `timeout`, cluster schedulers and a dropped ssh session
leave a settled run too.

Several processes (torchrun / accelerate launch): every rank trains; rank 0 alone has listeners, the run directory,
W&B, evaluation and the hooks (log book). A rank other than 0 that raises leaves its error for rank 0
(flatline.trainer.distributed.note_failure); rank 0, stopped by the launcher's SIGTERM or a collective's error,
settles the run as failed with that rank's error, and ignores further SIGTERMs while it writes the summary.
"""
from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from flatline.common.errors import HungUp, Terminated
from flatline.common.files import write_atomic
from flatline.common.jsonl import JsonlWriter
from flatline.trainer.config import checked_toml, to_dict
from flatline.trainer.distributed import World, leave_world, note_failure, peer_failure
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


@dataclass(frozen=True)
class Outcome:
    """How a run that got a run directory ended, as summary.json and the log book say it."""

    status: str  # completed | failed | interrupted
    steps_completed: int
    max_steps: int
    error: str = ""  # failed: the exception's type and last line; interrupted: SIGINT or SIGTERM


def error_line(exc: BaseException) -> str:
    """`Type: last line of the message`: what a failed run's summary and log entry quote."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1]}" if lines else type(exc).__name__


def interruption(exc: KeyboardInterrupt) -> str:
    return getattr(exc, "signal_name", "SIGINT")


# The signals that stop a run as Ctrl-C does (timeout, schedulers; a terminal that went away), and what each raises.
STOP_SIGNALS = {signal.SIGTERM: Terminated, signal.SIGHUP: HungUp}


@contextmanager
def sigterm_as_interrupt():
    """While the block runs, SIGTERM raises Terminated and SIGHUP HungUp (both KeyboardInterrupts) in the main
    thread, once: a second one while the run writes its summary is ignored. The previous handlers are restored
    afterwards. Off the main thread (where Python cannot set handlers) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise STOP_SIGNALS[signum]()

    previous = {sig: signal.signal(sig, raise_terminated) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def interrupts_held():
    """While the block runs, SIGINT, SIGTERM and SIGHUP wait and are delivered when it ends: a step's metrics line
    (written, flushed, fsynced) and its count in summary.json stay together. Off the main thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
                for sig in (signal.SIGINT, *STOP_SIGNALS)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            signal.raise_signal(pending[0])


def train(cfg, out: str | Path | None = None, listeners=(), log=print, make_listeners=None, on_finish=None,
          on_start=None, on_end=None) -> Path:
    """Train with `cfg`; returns the run directory. Bad input raises FlatlineError before anything is written.

    make_listeners(trainer) -> listeners, for listeners that need the built trainer (the CLI attaches probes so).
    on_start(run_dir, tracker), once the run directory, config.toml and W&B exist (the CLI files a RUNNING entry).
    on_finish(run_dir, tracker), after a completed run's summary.json and before W&B closes (the cases judge there).
    on_end(run_dir, tracker, outcome), after summary.json, for every run that got a directory: completed, failed
    or interrupted (the CLI judges a completed run and settles its log book entry there).
    """
    started, started_at = time.perf_counter(), datetime.now()
    config_text = checked_toml(cfg)  # config.toml must read back as what runs, or the run could not be judged
    with sigterm_as_interrupt():
        prepared = prepare(cfg)
        trainer = build_trainer(cfg, listeners, prepared)
        if not trainer.world.is_main:
            return follow(trainer, cfg)
        if trainer.world.active:
            log(distributed_line(trainer.world))
        if make_listeners is not None:
            trainer.listeners.extend(make_listeners(trainer))
        name = run_name(cfg)
        run_dir = create_run_dir(Path(out) if out else Path(cfg.output_dir) / name)
        (run_dir / "config.toml").write_text(config_text, encoding="utf-8")
        log(f"run directory: {run_dir}")
        tracker = Tracker(log=log)
        if cfg.report_to == "wandb":
            named = cfg.run_name or cfg.exp_major >= 0
            tracker.start(cfg.wandb_project, name if named else run_dir.name, str(run_dir), to_dict(cfg))
        metrics, samples = JsonlWriter(run_dir / "metrics.jsonl"), JsonlWriter(run_dir / "samples.jsonl")
        bar = _progress_bar(cfg, name)
        rows: list[dict] = []
        trajectories, last_episodes = None, None
        outcome = Outcome("failed", 0, cfg.max_steps, "stopped before the first step")
        try:
            if on_start is not None:
                on_start(run_dir, tracker)
            for _ in range(cfg.max_steps):
                row = trainer.step()
                if trainer.world.active:
                    row["world_size"] = trainer.world.size
                if eval_due(row["step"], cfg):
                    row.update(trainer.evaluate())
                with interrupts_held():  # summary.json counts exactly the rows written
                    metrics.write(row)
                    rows.append(row)
                for sample in trainer.logged_samples(cfg.log_completions):
                    samples.write(sample)
                fresh = trainer.last_rollout
                if fresh is not None and fresh.episodes and fresh is not last_episodes:  # multi-turn: every trajectory
                    trajectories = trajectories or JsonlWriter(run_dir / "trajectories.jsonl")
                    for episode in fresh.episodes:
                        trajectories.write({"step": row["step"], **episode})
                    last_episodes = fresh
                tracker.log(row, row["step"])
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(reward=f"{row['reward']:.3f}", refresh=False)
            outcome = Outcome("completed", len(rows), cfg.max_steps)
        except KeyboardInterrupt as exc:
            outcome = stopped(trainer.world, Outcome("interrupted", len(rows), cfg.max_steps, interruption(exc)))
            raise
        except BaseException as exc:
            outcome = stopped(trainer.world, Outcome("failed", len(rows), cfg.max_steps, error_line(exc)))
            raise
        finally:
            metrics.close()
            samples.close()
            if trajectories is not None:
                trajectories.close()
            if bar is not None:
                try:
                    bar.close()
                except OSError:  # a terminal gone away (SIGHUP) must not cost the summary
                    pass
            summary = run_summary(rows, outcome, run_dir.name, started_at, time.perf_counter() - started,
                                  tracker.url_or_name)
            write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
            try:
                if on_finish is not None and outcome.status == "completed" and rows:
                    on_finish(run_dir, tracker)
            finally:
                try:
                    if on_end is not None:
                        on_end(run_dir, tracker, outcome)
                finally:
                    tracker.finish()
    log(summary_line(summary))
    leave_world(trainer.world)
    return run_dir


def follow(trainer, cfg) -> None:
    """A rank other than 0: train every step alongside rank 0 and write nothing. An error is noted for rank 0
    (which settles the run directory as failed with it) and raised."""
    try:
        for _ in range(cfg.max_steps):
            trainer.step()
    except BaseException as exc:
        note_failure(trainer.world, interruption(exc) if isinstance(exc, KeyboardInterrupt) else error_line(exc))
        raise
    leave_world(trainer.world)


def stopped(world: World, outcome: Outcome) -> Outcome:
    """How a run of several processes ended when rank 0 stopped early: failed with another rank's error when one
    noted it (the launcher's SIGTERM and the collective's error on rank 0 are its consequences), else `outcome`.
    From here on rank 0 ignores SIGTERM, so the launcher's stop cannot cut the summary short. One process: `outcome`."""
    if not world.active:
        return outcome
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    peer = peer_failure(world)
    return Outcome("failed", outcome.steps_completed, outcome.max_steps, peer) if peer else outcome


def distributed_line(world: World) -> str:
    line = f"{world.size} processes: rank 0 writes the run directory; the global batch is {world.size} x the config's"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        line += ("; the accelerate config's DeepSpeed settings are not used by flatline train (weights replicated, "
                 "gradients all-reduced)")
    return line


def run_summary(rows: list[dict], outcome: Outcome, run: str, started_at: datetime, total_seconds: float,
                wandb: str) -> dict:
    """summary.json: how the run ended (status, steps_completed of max_steps, error), when it started, and the
    reward and eval summary of the steps it took."""
    summary = {"run": run, "status": outcome.status, "steps_completed": outcome.steps_completed,
               "max_steps": outcome.max_steps}
    if outcome.error:
        summary["error"] = outcome.error
    summary.update(summarize(rows))
    summary.update({"started": started_at.isoformat(timespec="seconds"), "total_seconds": total_seconds,
                    "wandb": wandb})
    return summary


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
