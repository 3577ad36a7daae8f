"""Read what the user gives, all of it, or say why not (issue 26): standard input and pipes read once, .gz read
directly, the search around a log bounded and blind to broken links, a byte-order mark, a logger stuck at step 0,
a size bound, and a config with settings of the wrong type. Every bad input: exit 2, one line, the file unchanged."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from flatline.diagnostics.readers import read_log, source
from flatline.harness.cli import EXIT_USAGE, main

STEPS = 20


def metrics_text(steps: int = STEPS) -> str:
    return "".join(json.dumps({"step": s, "reward": round(0.05 * s, 3), "reward_std": 0.3, "grad_norm": 0.4,
                               "frac_reward_zero_std": 0.1}) + "\n" for s in range(1, steps + 1))


def flatline(*args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flatline.harness.cli", *args], input=stdin, capture_output=True,
                          timeout=120)


def read_steps(result: subprocess.CompletedProcess) -> int:
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)["key_metrics"]["steps"]


def error_line(capsys, *args) -> str:
    assert main(["diagnose", *map(str, args)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("flatline: error: "), err
    return err.strip()


def snapshot(path: Path) -> tuple:
    info = path.lstat()
    return path.read_bytes() if path.is_file() else None, info.st_mode, info.st_size


# ---------------------------------------------------------------- standard input, pipes, .gz


def test_standard_input_is_read_whole_with_a_dash():
    result = flatline("diagnose", "-", "--format", "json", stdin=metrics_text().encode())
    assert read_steps(result) == STEPS
    report = json.loads(result.stdout)
    assert report["run"] == "stdin" and report["log"]["source"] == "standard input"


@pytest.mark.parametrize("forced", [[], ["--format-in", "jsonl"]])
def test_dev_stdin_pipe_is_not_cut_by_the_format_sniff(forced):
    """`cat metrics.jsonl | flatline diagnose /dev/stdin`: the sniff used to eat the pipe's first 64 KiB."""
    text = metrics_text(2000)  # well over the 64 KiB the sniff reads
    assert len(text) > 2 * 64 * 1024
    result = flatline("diagnose", "/dev/stdin", "--format", "json", *forced, stdin=text.encode())
    assert read_steps(result) == 2000


def test_a_fifo_as_from_process_substitution(tmp_path):
    """`flatline diagnose <(zcat m.jsonl.gz)` hands flatline a pipe: read once, every step."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(metrics_text()))
    writer.start()
    log = read_log(fifo)
    writer.join(timeout=10)
    assert [r["step"] for r in log.rows] == list(range(1, STEPS + 1))
    assert log.rows[9]["reward"] == 0.5
    assert fifo.exists() and not fifo.is_file()  # still the user's FIFO


def test_a_gz_log_is_read_directly_and_left_as_it_was(tmp_path):
    path = tmp_path / "metrics.jsonl.gz"
    path.write_bytes(gzip.compress(metrics_text().encode()))
    before = snapshot(path)
    log = read_log(path)
    assert [r["step"] for r in log.rows] == list(range(1, STEPS + 1)) and log.rows[-1]["reward"] == 1.0
    assert log.info.source == str(path) and log.run == "metrics.jsonl"
    assert any(n.startswith("decompressed from") for n in log.info.notes)
    assert snapshot(path) == before


def test_a_damaged_gz_is_bad_input(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl.gz"
    path.write_bytes(gzip.compress(metrics_text().encode())[:40])
    before = snapshot(path)
    assert error_line(capsys, path).startswith(f"flatline: error: {path}: ")
    assert snapshot(path) == before


def test_empty_standard_input_is_bad_input():
    result = flatline("diagnose", "-", stdin=b"")
    assert result.returncode == EXIT_USAGE
    assert result.stderr.decode().strip() == ("flatline: error: standard input: is empty; the run wrote nothing yet, "
                                              "or the file was truncated")


# ---------------------------------------------------------------- where flatline looks around a log


def test_a_symlink_loop_beside_the_log_is_absent(tmp_path, capsys):
    """A trainer_state.json saved in a folder with a link loop: read, no internal error."""
    state = {"log_history": [{"step": s, "reward": 0.1 * s, "loss": 0.0, "epoch": s / 10} for s in range(1, 6)],
             "global_step": 5, "max_steps": 5}
    (tmp_path / "trainer_state.json").write_text(json.dumps(state))
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "runs").symlink_to(tmp_path / "runs")
    assert main(["diagnose", str(tmp_path / "trainer_state.json"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["key_metrics"]["steps"] == 5
    assert main(["diagnose", str(tmp_path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["key_metrics"]["steps"] == 5


def test_the_search_around_a_log_stays_where_trainers_write(tmp_path, monkeypatch):
    """A log in a big folder: only the output directory's own runs/ and wandb/ are looked at, never a walk."""
    from flatline.diagnostics.readers import configs

    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 1, "reward": 0.5}]}))
    deep = tmp_path / "projects" / "other" / "runs" / "x"
    deep.mkdir(parents=True)
    (deep / "events.out.tfevents.1.host").write_bytes(b"")
    looked = configs.trainer_side_files(tmp_path)
    assert looked == []  # projects/other/runs/... is another run's, not this one's
    mine = tmp_path / "runs" / "Nov23_host"
    mine.mkdir(parents=True)
    (mine / "events.out.tfevents.2.host").write_bytes(b"")
    assert configs.trainer_side_files(tmp_path) == [mine / "events.out.tfevents.2.host"]


# ---------------------------------------------------------------- what a file holds


def test_a_byte_order_mark_keeps_the_first_row(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + metrics_text(5).encode())
    log = read_log(path)
    assert [r["step"] for r in log.rows] == [1, 2, 3, 4, 5] and log.rows[0]["reward"] == 0.05
    assert not log.info.dropped


def test_step_zero_on_every_row_falls_back_to_file_order(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": 0, "reward": 0.01 * i, "grad_norm": 0.3}) + "\n" for i in range(30)))
    before = snapshot(path)
    log = read_log(path)
    assert [r["step"] for r in log.rows] == list(range(1, 31)) and log.rows[29]["reward"] == 0.29
    assert main(["diagnose", str(path)]) == 0
    report = capsys.readouterr().out.splitlines()
    assert report[2].startswith("**⚠️ How the log was read: every row logs step = 0") and "1..30" in report[2]
    assert snapshot(path) == before


def test_a_half_written_last_line_is_not_an_error(tmp_path):
    """A log still being written (flatline watch reads it again and again): the torn last line is left out."""
    path = tmp_path / "metrics.jsonl"
    path.write_text(metrics_text(5) + '{"step": 6, "rew')
    log = read_log(path)
    assert [r["step"] for r in log.rows] == [1, 2, 3, 4, 5]
    console = tmp_path / "train.log"
    console.write_text("{'loss': 0.1, 'reward': 0.5, 'epoch': 0.1}\n{'loss': 0.2, 'rew")
    assert [r["reward"] for r in read_log(console).rows] == [0.5]


def test_a_log_above_the_size_bound_is_refused_with_the_reason(tmp_path, capsys, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    path.write_text(metrics_text())
    before = snapshot(path)
    monkeypatch.setattr(source, "MAX_LOG_BYTES", 1024)
    err = error_line(capsys, path)
    assert err.startswith(f"flatline: error: {path}: is 0 MiB, above the 0 MiB flatline reads from a text log; "
                          "pass a trimmed copy")
    assert snapshot(path) == before


def test_standard_input_above_the_size_bound_is_refused(monkeypatch, capsys):
    import io

    monkeypatch.setattr(source, "MAX_LOG_BYTES", 1024)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(metrics_text().encode())))
    assert error_line(capsys, "-").startswith("flatline: error: standard input: holds more than")


def test_a_config_toml_with_wrong_types_names_the_bad_settings(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text(metrics_text())
    (tmp_path / "config.toml").write_text('max_grad_norm = "abc"\nbeta = 0.04\nnum_generations = "eight"\n')
    before = snapshot(tmp_path / "config.toml")
    log = read_log(tmp_path)
    assert log.config["beta"] == 0.04 and "max_grad_norm" not in log.config and "num_generations" not in log.config
    note = next(n for n in log.info.notes if "max_grad_norm" in n)
    assert "num_generations = 'eight' (not a whole number)" in note and "max_grad_norm = 'abc' (not a number)" in note
    assert main(["diagnose", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "no config.toml" not in text and "max_grad_norm = 'abc' (not a number)" in text
    assert snapshot(tmp_path / "config.toml") == before


def test_a_byte_order_mark_alone_is_an_empty_file(tmp_path, capsys):
    path = tmp_path / "export.csv"
    path.write_bytes(b"\xef\xbb\xbf")
    assert error_line(capsys, path) == (f"flatline: error: {path}: is empty; the run wrote nothing yet, or the file was "
                                        "truncated")
