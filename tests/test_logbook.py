"""The experiment log book: where it lives, what an entry says, and that appends never lose or alter bytes."""
import os
import re
import stat
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from filelock import FileLock

from flatline.common.errors import FlatlineError
from flatline.diagnostics import logbook
from flatline.diagnostics.history import History
from flatline.diagnostics.judge import Diagnosis
from flatline.diagnostics.logbook import (
    MARKER,
    append_entry,
    log_book_path,
    read_log_book,
    render_entry,
)
from flatline.diagnostics.verdict import Verdict

REPO = Path(__file__).resolve().parents[1]
WHEN = datetime(2025, 11, 22, 14, 5)
EVIL = "evil | ## x\n<script>alert(1)</script> `tick`"
# A pipe that splits a table cell: one preceded by an even number (possibly zero) of backslashes.
UNESCAPED_PIPE = re.compile(r"(?<!\\)(?:\\\\)*\|")
HEADING_LINE = re.compile(r"^ {0,3}#")


def make_diagnosis(run: str = "exp0.1-arithmetic-1122", reason: str = "every group had identical rewards") -> Diagnosis:
    verdicts = [
        Verdict("advantage.degenerate_groups", "Degenerate groups", "fail", {"zero_std_frac": 0.9},
                "raise num_generations or temperature", [], reason),
        Verdict("entropy.collapse", "Entropy collapse", "inconclusive", {}, "log entropy every step", [],
                "entropy fell but only over 4 steps"),
        *[Verdict(f"ok.{i}", "Ruled out", "pass", {}, "", [], "fine") for i in range(3)],
        Verdict("kl.drift", "KL drift", "skipped", {}, "", [], "no kl metric"),
    ]
    metrics = {"steps": 1, "reward_first": 0.1, "reward_last": 0.1234567, "kl_last": None}
    return Diagnosis(run, verdicts, metrics)


def make_history(run: str = "exp0.1-arithmetic-1122", config: dict | None = None) -> History:
    config = {"model": "smollm2-135m", "task": "arithmetic", "learning_rate": 1e-5, "beta": 0.04,
              "num_generations": 8, "run_name": "not shown"} if config is None else config
    return History(run=run, rows=[{"step": 1, "reward": 0.1}], config=config, summary={"wandb": "offline-run-7"})


def entry_for(run: str, reason: str = "every group had identical rewards") -> str:
    return render_entry(make_diagnosis(run, reason), make_history(run), when=WHEN, report_dir=f"reports/{run}")


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


# --- where the log book lives ---

def test_path_precedence_config_then_env_then_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLATLINE_LOG", raising=False)
    assert log_book_path().resolve() == (tmp_path / "reports" / "EXPERIMENT_LOG.md").resolve()
    monkeypatch.setenv("FLATLINE_LOG", "")
    assert log_book_path().resolve() == (tmp_path / "reports" / "EXPERIMENT_LOG.md").resolve()
    monkeypatch.setenv("FLATLINE_LOG", str(tmp_path / "env.md"))
    assert log_book_path() == tmp_path / "env.md"
    assert log_book_path("") == tmp_path / "env.md"
    assert log_book_path(str(tmp_path / "config.md")) == tmp_path / "config.md"
    assert log_book_path("~/book.md") == Path.home() / "book.md"
    monkeypatch.setenv("FLATLINE_LOG", "~/env-book.md")
    assert log_book_path() == Path.home() / "env-book.md"


# --- what an entry says ---

def test_entry_lists_facts_config_metrics_and_open_verdicts():
    entry = entry_for("exp0.1-arithmetic-1122")
    lines = entry.splitlines()
    assert lines[0] == "## 2025-11-22 14:05 — exp0.1-arithmetic-1122"
    assert "- status: **FAIL**" in lines
    assert any(line.startswith("- headline: Not learning because: advantage.degenerate_groups") for line in lines)
    assert "- W&B: offline-run-7" in lines
    assert "- report: reports/exp0.1-arithmetic-1122/diagnosis.md" in lines
    assert "- run directory: reports/exp0.1-arithmetic-1122" in lines
    assert "| learning_rate | 1e-05 |" in lines and "| num_generations | 8 |" in lines
    assert "run_name" not in entry and "lora_r" not in entry
    assert "| reward_last | 0.1235 |" in lines and "| kl_last | — |" in lines
    assert "| advantage.degenerate_groups | fail | every group had identical rewards | " \
           "raise num_generations or temperature |" in lines
    assert any(line.startswith("| entropy.collapse | inconclusive |") for line in lines)
    assert "ok.0" not in entry and "kl.drift" not in entry
    assert lines[-1] == "3 ruled out, 1 skipped"
    assert entry.endswith("skipped\n") and not entry.endswith("\n\n")
    assert entry.index("**Config**") < entry.index("**Key metrics**") < entry.index("**Verdicts**")


def test_entry_without_config_wandb_or_report():
    history = History(run="bare", rows=[{"step": 1, "reward": 0.1}])
    diagnosis = Diagnosis("bare", [Verdict("ok.0", "t", "pass", reason="fine")], {})
    entry = render_entry(diagnosis, history, when=WHEN)
    assert "- config: not recorded" in entry and "**Config**" not in entry
    assert "W&B" not in entry and "- report:" not in entry and "run directory" not in entry
    assert "- status: **PASS**" in entry
    assert entry.endswith("1 ruled out, 0 skipped\n")


def test_wandb_argument_overrides_summary():
    entry = render_entry(make_diagnosis(), make_history(), when=WHEN, wandb="https://wandb.ai/me/flatline/runs/x")
    assert "- W&B: https://wandb.ai/me/flatline/runs/x" in entry.splitlines()


def test_malicious_strings_cannot_add_columns_headings_or_html():
    history = make_history(EVIL, config={"model": EVIL, "task": "a|b"})
    history.run_dir = Path("runs") / "a|b"
    diagnosis = make_diagnosis(EVIL, reason=EVIL)
    diagnosis.verdicts[0].prescription = EVIL
    entry = render_entry(diagnosis, history, when=WHEN, report_dir="reports/x|y\n## z", wandb=EVIL)
    assert [line for line in entry.splitlines() if HEADING_LINE.match(line)] == [entry.splitlines()[0]]
    assert not re.search(r"(?<!\\)(?:\\\\)*[<`]", entry), "raw HTML or a code span got through"
    for block in entry.split("\n\n"):
        rows = table_rows(block)
        if rows:
            assert len({len(UNESCAPED_PIPE.findall(row)) for row in rows}) == 1, rows
    verdict_rows = table_rows(entry.split("**Verdicts**")[1])
    assert len(UNESCAPED_PIPE.findall(verdict_rows[0])) == 5


# --- appending ---

def test_first_append_creates_folder_header_and_marker(tmp_path):
    path = tmp_path / "deep" / "reports" / "LOG.md"
    entry = entry_for("first")
    append_entry(path, entry)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Experiment log\n")
    assert text.count(MARKER) == 1
    assert text.endswith(MARKER + "\n\n" + entry)
    assert read_log_book(path) == text


def test_second_append_goes_first_and_keeps_older_bytes(tmp_path):
    path = tmp_path / "LOG.md"
    append_entry(path, entry_for("older"))
    before = path.read_bytes()
    after_marker = before[before.index(MARKER.encode()) + len(MARKER) + 1:]
    append_entry(path, entry_for("newer"))
    after = path.read_bytes()
    assert after.endswith(after_marker)
    assert after.startswith(before[:before.index(MARKER.encode()) + len(MARKER) + 1])
    text = after.decode()
    assert text.index("— newer") < text.index("— older")
    assert entry_for("newer") + "\n" + entry_for("older") in text


def test_hand_edits_below_the_marker_survive(tmp_path):
    path = tmp_path / "LOG.md"
    append_entry(path, entry_for("one"))
    path.write_bytes(path.read_bytes() + b"\r\nmy note \xff with odd bytes | and CRLF\r\n")
    before = path.read_bytes()
    append_entry(path, entry_for("two"))
    assert path.read_bytes().endswith(before[before.index(MARKER.encode()) + len(MARKER) + 1:])


@pytest.mark.parametrize("old, kept_prefix", [
    (b"# My experiments\r\n\r\n2025-01-02: lr 1e-5 did nothing\r\n| a | b |\n", b"# My experiments\r\n"),
    (b"notes without a title\nline two", b""),
    (b"# Only a title", b"# Only a title"),
])
def test_hand_written_log_without_marker_keeps_every_byte(tmp_path, old, kept_prefix):
    path = tmp_path / "LOG.md"
    path.write_bytes(old)
    entry = entry_for("run")
    append_entry(path, entry)
    new = path.read_bytes()
    assert new.startswith(kept_prefix)
    assert new.endswith(old[len(kept_prefix):])
    assert new.count(MARKER.encode()) == 1
    assert entry.encode() in new
    assert new.index(MARKER.encode()) < new.index(entry.encode())
    append_entry(path, entry_for("again"))
    assert path.read_bytes().count(MARKER.encode()) == 1
    assert path.read_bytes().endswith(new[new.index(MARKER.encode()) + len(MARKER) + 1:])


def test_file_permissions_are_preserved(tmp_path):
    path = tmp_path / "LOG.md"
    append_entry(path, entry_for("one"))
    os.chmod(path, 0o640)
    append_entry(path, entry_for("two"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_crash_mid_write_leaves_old_file_and_no_temp_file(tmp_path, monkeypatch, failing):
    path = tmp_path / "LOG.md"
    append_entry(path, entry_for("one"))
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(logbook.os, failing, crash)
    with pytest.raises(OSError, match="disk on fire"):
        append_entry(path, entry_for("two"))
    assert path.read_bytes() == before
    assert {p.name for p in tmp_path.iterdir()} <= {"LOG.md", "LOG.md.lock"}


def test_lock_timeout_names_the_lock_file(tmp_path):
    path = tmp_path / "LOG.md"
    with FileLock(f"{path}.lock"):
        with pytest.raises(FlatlineError, match=re.escape(f"{path}.lock")):
            append_entry(path, entry_for("blocked"), timeout=0.05)
    assert not path.exists()


CHILD = """
import sys, time
from pathlib import Path
from flatline.diagnostics.logbook import append_entry
path, tag, folder = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
(folder / f"ready-{tag}").touch()
while not (folder / "go").exists():
    time.sleep(0.002)
for i in range(10):
    append_entry(path, f"## {tag}-{i:02d}\\n\\nbody of {tag} {i}\\n")
"""


def test_two_processes_appending_at_once_lose_nothing(tmp_path):
    path = tmp_path / "LOG.md"
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(path), tag, str(tmp_path)], cwd=REPO)
                for tag in ("a", "b")]
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"ready-{tag}").exists() for tag in ("a", "b")):
        assert time.monotonic() < deadline and all(c.poll() is None for c in children), "children did not start"
        time.sleep(0.005)
    (tmp_path / "go").touch()
    assert [c.wait(timeout=60) for c in children] == [0, 0]
    text = path.read_text(encoding="utf-8")
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert len(headings) == 20
    assert text.count(MARKER) == 1 and text.count("# Experiment log") == 1
    for tag in ("a", "b"):
        mine = [h for h in headings if h.startswith(f"## {tag}-")]
        assert mine == [f"## {tag}-{i:02d}" for i in reversed(range(10))]
        assert all(text.count(f"body of {tag} {i}\n") == 1 for i in range(10))
    assert not list(tmp_path.glob(".LOG.md.*.tmp"))


def test_read_missing_log_book_says_how_to_create_one(tmp_path):
    missing = tmp_path / "nope.md"
    with pytest.raises(FlatlineError) as info:
        read_log_book(missing)
    assert str(missing) in str(info.value)
    assert "flatline train" in str(info.value) and "pytest cases/" in str(info.value)
