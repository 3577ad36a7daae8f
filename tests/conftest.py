"""Shared fixtures: a small, fast config on the tiny random model, and a clean environment for W&B."""
import builtins
import os

import pytest

from flatline.trainer.config import load_config

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("WANDB_API_KEY", None)


def tiny_config(*overrides: str, task: str = "bandit"):
    """A tiny-random config that trains in about a second per step."""
    base = [f"task={task}", "model=tiny-random", "lora_r=0", "learning_rate=1e-2", "num_generations=4",
            "per_device_train_batch_size=8", "max_completion_length=4", "max_steps=3", "report_to=none",
            "progress_bar=false", "eval_every=0", "train_size=16", "eval_size=4"]
    return load_config(None, base + list(overrides))


class Recorder:
    """A trainer listener that keeps every StepRecord (and asks for the pre-step weights)."""

    wants_pre_step_weights = True

    def __init__(self):
        self.records = []

    def on_step(self, record):
        self.records.append(record)
        return {}


def step_once(cfg):
    """Build a trainer for `cfg`, take one step; returns (trainer, that step's record)."""
    from flatline.trainer.loop import build_trainer

    recorder = Recorder()
    trainer = build_trainer(cfg, listeners=[recorder])
    trainer.step()
    return trainer, recorder.records[0]


@pytest.fixture
def hide_module(monkeypatch):
    """hide_module("wandb") makes `import wandb` raise ImportError for the rest of the test."""
    real_import = builtins.__import__

    def hide(hidden: str) -> None:
        def guarded(name, *args, **kwargs):
            if name == hidden:
                raise ImportError(f"No module named '{hidden}'")
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", guarded)

    return hide


@pytest.fixture(autouse=True)
def private_log_book(tmp_path_factory, monkeypatch):
    """Runs judged inside a test write their log book entry to a temporary file, never to reports/ in the repo."""
    monkeypatch.setenv("FLATLINE_LOG", str(tmp_path_factory.mktemp("log") / "EXPERIMENT_LOG.md"))
