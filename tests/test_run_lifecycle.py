"""Every run's fate in the log book and in summary.json: RUNNING from the start, then COMPLETED (with the verdict),
FAILED (the error's last line and the step) or INTERRUPTED (Ctrl-C, SIGTERM); `flatline diagnose RUN --log` adds
EVALUATED; the neighbouring entries stay byte-identical throughout. Real `flatline train` runs of the bandit config
on the tiny random model; the signals go to a real subprocess once its first step is in metrics.jsonl."""
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from flatline.diagnostics.history import History
from flatline.diagnostics.logbook import MARKER, RunState, entry_lines, file_entry, render_entry
from flatline.harness.cli import DEBUG_ENV, EXIT_INTERNAL, main

REPO = Path(__file__).resolve().parents[1]
BANDIT = str(REPO / "configs" / "bandit.toml")
ENTRY_END = b"<!-- /flatline-entry -->\n"


def seeded_log_book(path: Path) -> bytes:
    """A log book with a hand-written note and another run's settled entry; returns its bytes."""
    path.write_text(f"# My experiments\n\n{MARKER}\n\n2025-01-02: lr 1e-5 did nothing | by hand\n")
    older = History(run="older", rows=[], config={"model": "tiny-random"})
    file_entry(path, "/elsewhere/older", render_entry(None, older, when=datetime(2025, 1, 3),
                                                      state=RunState("completed", 40, 40), run="/elsewhere/older"))
    return path.read_bytes()


def own_entry(book: bytes, run_dir: Path) -> tuple[int, int]:
    """(start, end) of the entry filed for run_dir."""
    start = book.index(f"run={os.path.realpath(run_dir)} -->".encode())
    start = book.rindex(b"<!-- flatline-entry ", 0, start)
    return start, book.index(ENTRY_END, start) + len(ENTRY_END)


def assert_only_own_entry_was_added(before: bytes, after: bytes, run_dir: Path) -> str:
    """The book is `before` with one entry inserted after the marker: every older byte identical. Returns the entry."""
    start, end = own_entry(after, run_dir)
    marker_end = before.index(MARKER.encode()) + len(MARKER) + 1
    assert after == before[:marker_end] + b"\n" + after[start:end] + before[marker_end:]
    return after[start:end].decode()


def wait_for_first_step(process: subprocess.Popen, metrics: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run took no step in time"
        time.sleep(0.1)


@pytest.mark.parametrize("sent, name", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")])
def test_a_signal_mid_run_settles_interrupted_and_leaves_older_entries_byte_identical(tmp_path, sent, name):
    book, run = tmp_path / "LOG.md", tmp_path / "run"
    before = seeded_log_book(book)
    process = subprocess.Popen(
        [sys.executable, "-m", "flatline.harness.cli", "train", BANDIT, "--set", "max_steps=1000",
         "--set", "progress_bar=false", "--out", str(run)],
        cwd=REPO, env={**os.environ, "FLATLINE_LOG": str(book)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a shell may have SIGINT ignored
    try:
        wait_for_first_step(process, run / "metrics.jsonl")
        running = assert_only_own_entry_was_added(before, book.read_bytes(), run)
        assert running.startswith(f"<!-- flatline-entry status=running run={os.path.realpath(run)} -->\n")
        assert "- status: **RUNNING** (1000 steps planned)" in running
        process.send_signal(sent)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130 and err.strip().endswith("flatline: interrupted")
    summary = json.loads((run / "summary.json").read_text())
    steps = summary["steps_completed"]
    assert (summary["status"], summary["max_steps"], summary["error"]) == ("interrupted", 1000, name) and steps >= 1
    assert steps == len((run / "metrics.jsonl").read_text().splitlines())
    settled = assert_only_own_entry_was_added(before, book.read_bytes(), run)
    assert settled.startswith(f"<!-- flatline-entry status=interrupted run={os.path.realpath(run)} -->\n")
    assert settled.splitlines()[1] == running.splitlines()[1]  # still filed under the time it started
    assert f"- status: **INTERRUPTED** (by {name} after {steps} of 1000 steps)" in settled


CRASHING_LOSS = '''
import os
from datetime import datetime
from pathlib import Path

from flatline.diagnostics.history import History
from flatline.diagnostics.logbook import RunState, file_entry, render_entry
from flatline.trainer.algorithm import policy_loss

calls = 0


def loss(logps, old_logps, advantages, mask, **kwargs):
    """Files another run's entry during step 1 (a run started meanwhile), then fails in step 2."""
    global calls
    calls += 1
    if calls == 1:
        newer = History(run="newer", rows=[], config={})
        file_entry(os.environ["FLATLINE_LOG"], "/elsewhere/newer",
                   render_entry(None, newer, when=datetime.now(), state=RunState("running", 0, 9), run="/elsewhere/newer"))
        Path(os.environ["FLATLINE_LOG"] + ".newer").write_bytes(Path(os.environ["FLATLINE_LOG"]).read_bytes())
    if calls == 2:
        raise RuntimeError("the loss went to pieces\\nin step 2")
    return policy_loss(logps, old_logps, advantages, mask, **kwargs)
'''


def test_a_crash_settles_failed_with_its_last_line_and_step_and_neighbours_stay_byte_identical(tmp_path, monkeypatch,
                                                                                               capsys):
    (tmp_path / "crashing_loss.py").write_text(CRASHING_LOSS)
    monkeypatch.chdir(tmp_path)
    book, run = tmp_path / "LOG.md", tmp_path / "run"
    monkeypatch.setenv("FLATLINE_LOG", str(book))
    before = seeded_log_book(book)
    assert main(["train", BANDIT, "--set", "loss_fn=crashing_loss:loss", "--set", "max_steps=5", "--set",
                 "progress_bar=false", "--out", str(run)]) == EXIT_INTERNAL
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("flatline: error in your code at crashing_loss.py:") and "the loss went to pieces" in error
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["steps_completed"], summary["max_steps"]) == ("failed", 1, 5)
    assert summary["error"] == "RuntimeError: in step 2"
    during, after = Path(f"{book}.newer").read_bytes(), book.read_bytes()
    newer_start = during.index(b"<!-- flatline-entry status=running run=/elsewhere/newer")
    newer_end = during.index(ENTRY_END, newer_start) + len(ENTRY_END)
    mine_start, mine_end = own_entry(after, run)
    assert after[:mine_start] == during[:own_entry(during, run)[0]]  # header and the newer entry: byte-identical
    assert after[mine_end:] == during[own_entry(during, run)[1]:]  # the older entries: byte-identical
    assert during[newer_start:newer_end] in after[:mine_start]
    mine = after[mine_start:mine_end].decode()
    assert mine.startswith("<!-- flatline-entry status=failed run=")
    assert "- status: **FAILED** (during step 2 of 5: RuntimeError: in step 2)" in mine


def test_completed_then_evaluated_and_listed_by_status(tmp_path, monkeypatch, capsys):
    book, run = tmp_path / "LOG.md", tmp_path / "run"
    monkeypatch.setenv("FLATLINE_LOG", str(book))
    before = seeded_log_book(book)
    assert main(["train", BANDIT, "--set", "max_steps=3", "--set", "progress_bar=false", "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["steps_completed"], summary["max_steps"]) == ("completed", 3, 3)
    completed = assert_only_own_entry_was_added(before, book.read_bytes(), run)
    assert completed.startswith("<!-- flatline-entry status=completed run=")
    assert "- status: **COMPLETED** (3 of 3 steps)" in completed and "- diagnosis: **" in completed

    capsys.readouterr()
    assert main(["diagnose", str(run), "--log", "--format", "json"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out)["run"] == "run" and printed.err.strip() == f"log book: {os.path.realpath(book)}"
    evaluated = assert_only_own_entry_was_added(before, book.read_bytes(), run)
    assert evaluated.startswith("<!-- flatline-entry status=completed,evaluated run=")
    assert "- status: **COMPLETED, EVALUATED** (3 of 3 steps)" in evaluated
    assert evaluated.splitlines()[1] == completed.splitlines()[1]

    assert main(["log", "--status", "evaluated"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("COMPLETED, EVALUATED ") and line.endswith(f"— run  ({os.path.realpath(run)})")
    assert main(["log", "--status", "failed", "interrupted"]) == 0 and capsys.readouterr().out == ""
    assert main(["log", "--status", "COMPLETED"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2  # this run and the older one
    assert [e.run_id for e in entry_lines(book.read_text(), {"completed"})] == [os.path.realpath(run), "/elsewhere/older"]


def test_a_judgement_that_fails_still_leaves_the_run_completed_in_the_log_book(tmp_path, monkeypatch):
    from flatline.diagnostics import judge

    book, run = tmp_path / "LOG.md", tmp_path / "run"
    monkeypatch.setenv("FLATLINE_LOG", str(book))
    monkeypatch.setattr(judge, "judge", lambda history: 1 / 0)
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(ZeroDivisionError):
        main(["train", BANDIT, "--set", "max_steps=1", "--set", "progress_bar=false", "--out", str(run)])
    (entry,) = entry_lines(book.read_text())
    assert entry.statuses == ("completed",) and "- status: **COMPLETED** (1 of 1 steps)" in book.read_text()
