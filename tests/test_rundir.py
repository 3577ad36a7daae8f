"""flatline.common.rundir: the run directory's one writer (flatline train, the TRL callback, diagnose --out)."""
import json
import os
import signal

import pytest

from flatline.common.errors import FlatlineError
from flatline.common.rundir import METRICS, SAMPLES, RunDir, new_report_dir


def test_a_new_run_directory_never_overwrites_one_and_holds_its_config(tmp_path):
    first = RunDir.create(tmp_path / "run", 'task = "bandit"\n').open(METRICS, SAMPLES)
    second = RunDir.create(tmp_path / "run", 'task = "gsm8k"\n')
    assert (first.name, second.name) == ("run", "run-2")
    assert (first.path / "config.toml").read_text() == 'task = "bandit"\n'
    assert sorted(p.name for p in first.path.iterdir()) == ["config.toml", "metrics.jsonl", "samples.jsonl"]
    assert sorted(p.name for p in second.path.iterdir()) == ["config.toml"]  # logs appear when opened or written


def test_a_signal_during_the_metrics_write_waits_until_the_row_is_on_disk_and_counted(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path / "run", "").open(METRICS)
    real_fsync = os.fsync

    def fsync_then_interrupted(fd):
        signal.raise_signal(signal.SIGINT)  # Ctrl-C lands in the middle of the write
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        run.add_row({"step": 1, "reward": 0.5})
    monkeypatch.setattr(os, "fsync", real_fsync)
    run.close()
    assert run.rows == [{"step": 1, "reward": 0.5}]
    assert [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()] == run.rows
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back


def test_summary_and_report_addendum_are_whole_files(tmp_path):
    run = RunDir.create(tmp_path / "run", "")
    run.write_summary({"status": "completed", "steps_completed": 2})
    assert (run.path / "summary.json").read_text() == '{\n  "status": "completed",\n  "steps_completed": 2\n}\n'
    run.write_file("diagnosis.md", "# Diagnosis\n")
    run.add_to_report("\n## Live monitor\n")
    assert (run.path / "diagnosis.md").read_text() == "# Diagnosis\n\n## Live monitor\n"
    assert sorted(p.name for p in run.path.iterdir()) == ["config.toml", "diagnosis.md", "summary.json"]  # no temp files


def test_a_report_directory_is_made_unless_it_already_holds_a_report(tmp_path):
    assert new_report_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()
    (tmp_path / "a" / "b" / "diagnosis.md").write_text("mine")
    with pytest.raises(FlatlineError, match="already holds a diagnosis.md; choose a new directory"):
        new_report_dir(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b" / "diagnosis.md").read_text() == "mine"
