"""W&B: real wandb in offline mode inside the run directory; a missing wandb never stops a run."""
import json
from datetime import datetime

import pytest

from flatline.trainer.run import run_name, train
from flatline.trainer.tracking import wandb_mode
from tests.conftest import tiny_config


def test_offline_wandb_run_lands_in_the_run_directory(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = tiny_config("report_to=wandb", "max_steps=2", "exp_major=3", "exp_minor=1")
    run_dir = train(cfg, out=tmp_path / "run", log=lambda *_: None)
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
    today = datetime.now().strftime("%m%d")
    assert json.loads((run_dir / "summary.json").read_text())["wandb"] == f"exp3.1-bandit-{today}"  # not "run"


def test_missing_wandb_does_not_stop_the_run(tmp_path, hide_module):
    hide_module("wandb")
    with pytest.warns(UserWarning, match="wandb is not installed"):
        run_dir = train(tiny_config("report_to=wandb", "max_steps=1"), out=tmp_path / "run", log=lambda *_: None)
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1


def test_mode_follows_the_environment(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"


def test_run_names():
    now = datetime(2026, 11, 22, 9, 5, 7)
    assert run_name(tiny_config("exp_major=4", "exp_minor=2", task="musique"), now) == "exp4.2-musique-1122"
    assert run_name(tiny_config(), now) == "bandit-1122-090507"
    assert run_name(tiny_config("run_name=mine"), now) == "mine"


def test_train_hands_the_live_tracker_to_on_finish_and_verdicts_reach_the_wandb_summary(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    from flatline.diagnostics.conclude import wandb_summary
    from flatline.diagnostics.history import load_history
    from flatline.diagnostics.judge import judge

    seen = {}

    def on_finish(run_dir, tracker):
        summary, tables = wandb_summary(judge(load_history(run_dir)))
        tracker.summarize(summary, tables)
        seen.update(tracker.run.summary)  # still open: W&B closes after on_finish

    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a failing W&B call would warn
        train(tiny_config("report_to=wandb", "max_steps=2"), out=tmp_path / "run", log=lambda *_: None,
              on_finish=on_finish)
    assert seen["flatline/status"] in ("pass", "fail", "inconclusive")
    assert seen["flatline/gradients.non_finite"] == "pass" and "flatline/key/reward_last" in seen
