"""FlatlineCallback on real TRL GRPOTrainer runs (CPU): training unchanged, a full run directory, live verdicts.

    pip install -e '.[trl]' && .venv/bin/python -m pytest -q tests/test_trl_callback.py
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")
pytestmark = pytest.mark.trl

from trl_runs import FreezeAdapterAtStart, trl_trainer  # noqa: E402

from flatline.harness.cli import main  # noqa: E402
from flatline.integrations.trl import FlatlineCallback, completion_extent  # noqa: E402


def losses_and_weights(trainer) -> tuple[list, dict]:
    """(loss and grad_norm of each step, the weights after training)."""
    trainer.train()
    logged = [(row["loss"], row["grad_norm"]) for row in trainer.state.log_history if "loss" in row]
    return logged, {name: p.detach().clone() for name, p in trainer.model.named_parameters()}


@pytest.mark.parametrize("level", ["cheap", "full"])
def test_the_callback_leaves_training_bit_identical(tmp_path, level):
    bare_losses, bare_weights = losses_and_weights(trl_trainer(tmp_path / "bare"))
    callback = FlatlineCallback(run_dir=tmp_path / "run", probes=level, judge_every=2, log_book=str(tmp_path / "LOG.md"))
    losses, weights = losses_and_weights(trl_trainer(tmp_path / "probed", callbacks=[callback]))
    assert losses == bare_losses and len(losses) == 4 and all(norm > 0 for _, norm in losses)  # it trains
    assert weights.keys() == bare_weights.keys()
    assert all(torch.equal(weights[name], bare_weights[name]) for name in weights)
    rows = [json.loads(line) for line in (callback.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert all("gradients/global_norm" in row and "advantage/zero_std_frac" in row and "reward" in row for row in rows)


class RowsOnDisk:
    """After FlatlineCallback in `callbacks`: the steps in metrics.jsonl as each step begins."""

    def __init__(self, flatline: FlatlineCallback):
        self.flatline, self.seen = flatline, []

    def __getattr__(self, event):
        if event.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(event)

    def on_step_begin(self, args, state, control, **kwargs):
        metrics = self.flatline.run_dir / "metrics.jsonl"
        self.seen.append((int(state.global_step), [json.loads(line)["step"] for line in metrics.read_text().splitlines()]))


def test_each_row_holds_its_own_steps_numbers_and_is_written_before_the_next_step(tmp_path):
    callback = FlatlineCallback(run_dir=tmp_path / "run", log_book=str(tmp_path / "LOG.md"), log=lambda *a: None)
    spy = RowsOnDisk(callback)
    trainer = trl_trainer(tmp_path, callbacks=[callback, spy], max_steps=3)
    trainer.train()
    assert spy.seen == [(0, []), (1, [1]), (2, [1, 2])]  # step k's row is on disk as step k + 1 begins
    rows = [json.loads(line) for line in (callback.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = {entry["step"]: entry for entry in trainer.state.log_history if "loss" in entry}
    assert [row["step"] for row in rows] == sorted(logged) == [1, 2, 3]
    for row in rows:
        trl_row = logged[row["step"]]
        assert (row["loss"], row["grad_norm"], row["reward"]) == (trl_row["loss"], trl_row["grad_norm"],
                                                                   trl_row["reward"])
        # the probes read the same step's batch as TRL's own statistics
        assert row["reward/text_length/mean"] == pytest.approx(trl_row["rewards/text_length/mean"], rel=1e-5)
        assert row["advantage/zero_std_frac"] == pytest.approx(trl_row["frac_reward_zero_std"])
    assert len({row["reward"] for row in rows}) == 3  # the steps differ, so a row off by one would show


@pytest.mark.slow
def test_a_real_smollm2_lora_run_gets_a_full_run_directory_and_diagnosis(tmp_path, capsys):
    book = tmp_path / "LOG.md"
    callback = FlatlineCallback(run_dir=tmp_path / "run", probes="cheap", judge_every=2, log_book=str(book))
    trl_trainer(tmp_path, model="smollm2", callbacks=[callback], max_steps=3).train()
    run = callback.run_dir
    for name in ("config.toml", "metrics.jsonl", "samples.jsonl", "summary.json", "diagnosis.md", "diagnosis.json"):
        assert (run / name).stat().st_size > 0, name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_completed"] == 3 and summary["trainer"].startswith("trl")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    assert last["update/trainable_not_in_optimizer"] == 0 and last["update/rel_update"] > 0
    assert "gradients/norm/lora_B" in " ".join(last) or any(k.startswith("gradients/norm/") for k in last)
    assert "rewards/correct_sum/mean" in last and "advantage/zero_std_frac" in last
    diagnosis = json.loads((run / "diagnosis.json").read_text())
    statuses = {v["id"]: v["status"] for v in diagnosis["verdicts"]}
    assert statuses["update.optimizer_coverage"] == "pass" and statuses["gradients.no_flow"] == "pass"
    assert "status=completed" in book.read_text()
    capsys.readouterr()
    assert main(["diagnose", str(run), "--format", "json"]) in (0, 1)
    rejudged = json.loads(capsys.readouterr().out)
    assert {v["id"]: v["status"] for v in rejudged["verdicts"]} == statuses


def test_an_adapter_frozen_after_wrapping_is_flagged_live_and_stops_the_run_cleanly(tmp_path):
    callback = FlatlineCallback(run_dir=tmp_path / "run", judge_every=2, stop_on="fail",
                                log_book=str(tmp_path / "LOG.md"), log=lambda *a: None)
    trainer = trl_trainer(tmp_path, lora=True, max_steps=8, callbacks=[FreezeAdapterAtStart(), callback])
    trainer.train()
    # judged every 2 steps; a persisting fault needs 3 logged rows (judge.MIN_EVIDENCE_ROWS), so step 4 flags it
    assert callback.flagged is not None and callback.flagged["step"] == 4
    summary = json.loads((callback.run_dir / "summary.json").read_text())
    assert summary["steps_completed"] == 4 and summary["stopped_by_flatline"] is True
    assert "## Live monitor" in (callback.run_dir / "diagnosis.md").read_text()


def test_a_reward_function_that_raises_leaves_a_failed_run_directory(tmp_path):
    def broken(completions, **kwargs):
        raise ValueError("no answer tag")

    callback = FlatlineCallback(run_dir=tmp_path / "run", log_book=str(tmp_path / "LOG.md"), log=lambda *a: None)
    with pytest.raises(ValueError, match="no answer tag"):
        trl_trainer(tmp_path, reward_funcs=[broken], callbacks=[callback]).train()
    summary = json.loads((callback.run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "ValueError: no answer tag"
    diagnosis = json.loads((callback.run_dir / "diagnosis.json").read_text())
    assert {v["id"]: v["status"] for v in diagnosis["verdicts"]}["reward.parse_failures"] == "fail"
    assert "status=failed" in (tmp_path / "LOG.md").read_text()


def test_two_processes_probe_the_global_batch_and_only_rank_0_writes(tmp_path):
    """accelerate under torch.distributed.run, gloo on CPU, each group of 4 split over the 2 ranks: the batch probes
    read the global batch (rank 0 gathers it), so they agree with TRL's own global reward statistics."""
    script = Path(__file__).with_name("trl_two_processes.py")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(29500 + os.getpid() % 400), str(script), str(tmp_path)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == 2 and ranks[1]["run_dir"] == "None"  # rank 1 made no run directory
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["run", "trl"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        assert row["advantage/num_groups"] == 1  # one group of 4 over both ranks, whole again
        assert row["advantage/zero_std_frac"] == pytest.approx(row["frac_reward_zero_std"])
        assert row["reward/text_length/mean"] == pytest.approx(row["rewards/text_length/mean"], rel=1e-5)
        assert row["advantage/reward_std_mean"] == pytest.approx(row["reward_std"], rel=1e-4)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"


def test_a_trl_without_the_wrapped_methods_gets_one_warning_and_the_model_level_probes(tmp_path, monkeypatch):
    import flatline.integrations.trl as integration

    monkeypatch.setattr(integration, "WRAPPED", integration.WRAPPED + ("_scored_in_a_later_trl",))
    callback = FlatlineCallback(run_dir=tmp_path / "run", log_book=str(tmp_path / "LOG.md"), log=lambda *a: None)
    with pytest.warns(UserWarning, match="has no GRPOTrainer._scored_in_a_later_trl"):
        trl_trainer(tmp_path, callbacks=[callback], max_steps=2).train()
    rows = [json.loads(line) for line in (callback.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert "gradients/global_norm" in rows[-1] and not any(k.startswith("advantage/") for k in rows[-1])
    assert "reward" in rows[-1]  # TRL's own logged numbers still arrive


def test_tensors_unlike_the_covered_trl_disable_the_batch_probes_with_one_warning(tmp_path, monkeypatch):
    def unexpected(self, output):
        raise KeyError("advantages")

    from flatline.integrations.trl_capture import BatchCapture

    monkeypatch.setattr(BatchCapture, "generation", unexpected)
    callback = FlatlineCallback(run_dir=tmp_path / "run", log_book=str(tmp_path / "LOG.md"), log=lambda *a: None)
    with pytest.warns(UserWarning, match="batch capture .* disabled"):
        trl_trainer(tmp_path, callbacks=[callback], max_steps=2).train()
    rows = [json.loads(line) for line in (callback.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and "gradients/global_norm" in rows[-1]


def test_completion_extent_counts_to_the_first_eos_and_marks_rows_without_one():
    ids = torch.tensor([[5, 6, 2, 0], [5, 6, 7, 8], [2, 0, 0, 0]])
    lengths, truncated = completion_extent(ids, (2,))
    assert lengths.tolist() == [3, 4, 1] and truncated.tolist() == [False, True, False]


def test_bad_arguments_are_refused_before_training():
    with pytest.raises(ValueError, match="probe level"):
        FlatlineCallback(probes="all")
    with pytest.raises(ValueError, match="stop_on"):
        FlatlineCallback(stop_on="warn")
