"""W&B: real wandb in offline mode inside the run directory; a missing wandb never stops a run."""
import json
import time
from datetime import datetime

import pytest

from flatline.trainer.run import run_name, train
from flatline.trainer.tracking import REACH_TIMEOUT_S, reachable, wandb_mode
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


# --- a W&B key but no network: offline within seconds, said at once, the key never shown ---

FAKE_KEY = "f" * 40


def test_a_key_without_network_logs_offline_within_seconds_and_says_so(tmp_path, monkeypatch):
    """The sandbox has no network: before, wandb.init stalled ~90 s (its init_timeout) and then dropped W&B."""
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", "https://api.wandb.invalid")  # never resolves, network or not
    said = []
    started = time.perf_counter()
    run_dir = train(tiny_config("report_to=wandb", "max_steps=1"), out=tmp_path / "run",
                    log=lambda line: said.append((time.perf_counter() - started, line)))
    notices = [(t, line) for t, line in said if line.startswith("W&B:")]
    assert len(notices) == 1
    at, line = notices[0]
    run_directory_at = next(t for t, text in said if text.startswith("run directory:"))
    assert at - run_directory_at < REACH_TIMEOUT_S + 2  # W&B set-up starts right after the run directory exists
    assert line == (f"W&B: no network (api.wandb.invalid not reachable within 3 s); logging offline to {run_dir}/wandb, "
                    f"sync later with `wandb sync {run_dir}/wandb/offline-run-*`")
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert FAKE_KEY not in "".join(line for _, line in said) + (run_dir / "summary.json").read_text()


def test_the_reachability_check_gives_up_after_its_timeout(monkeypatch):
    from flatline.trainer import tracking

    monkeypatch.setattr(tracking.socket, "create_connection", lambda *args, **kwargs: time.sleep(30))
    started = time.perf_counter()
    assert reachable("https://api.example.com", timeout=0.3) is False
    assert time.perf_counter() - started < 2


def test_the_reachability_check_answers_true_for_a_listening_host():
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert reachable(f"http://127.0.0.1:{server.getsockname()[1]}", timeout=2) is True
    assert reachable("no scheme or host") is False


def test_an_online_set_up_that_fails_falls_back_to_offline(tmp_path, monkeypatch):
    """A host that answers but refuses the run (a rejected key, an outage): offline, said in one line."""
    wandb = pytest.importorskip("wandb")
    from flatline.trainer import tracking

    monkeypatch.setattr(tracking, "wandb_mode", lambda: "online")
    monkeypatch.setattr(tracking, "reachable", lambda url, timeout=0: True)
    real_init = wandb.init

    def init(**kwargs):
        if kwargs["mode"] == "online":
            raise wandb.errors.CommError("401 unauthorized")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    said = []
    tracker = tracking.Tracker(log=said.append)
    tracker.start("p", "n", str(tmp_path), {})
    try:
        assert tracker.run is not None and tracker.run.offline
        assert said == [f"W&B: online set-up failed (CommError); logging offline to {tmp_path}/wandb, sync later with "
                        f"`wandb sync {tmp_path}/wandb/offline-run-*`"]
    finally:
        tracker.finish()
