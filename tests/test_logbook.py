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
    LEGACY_MARKERS,
    MARKER,
    RunState,
    append_entry,
    entry_lines,
    file_entry,
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
    assert lines[0].startswith("<!-- flatline-entry status=unknown run=exp0.1-arithmetic-1122 -->")
    assert lines[1] == "## 2025-11-22 14:05 — exp0.1-arithmetic-1122"
    assert "- status: **UNKNOWN**" in lines  # a history without summary.json: no lifecycle status known
    assert "- diagnosis: **FAIL**" in lines
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
    assert lines[-2:] == ["3 ruled out, 1 skipped", "<!-- /flatline-entry -->"]
    assert entry.endswith("skipped\n<!-- /flatline-entry -->\n")
    assert entry.index("**Config**") < entry.index("**Key metrics**") < entry.index("**Verdicts**")


def test_entry_without_config_wandb_or_report():
    history = History(run="bare", rows=[{"step": 1, "reward": 0.1}])
    diagnosis = Diagnosis("bare", [Verdict("ok.0", "t", "pass", reason="fine")], {})
    entry = render_entry(diagnosis, history, when=WHEN)
    assert "- config: not recorded" in entry and "**Config**" not in entry
    assert "W&B" not in entry and "- report:" not in entry and "run directory" not in entry
    assert "- diagnosis: **PASS**" in entry
    assert entry.endswith("1 ruled out, 0 skipped\n<!-- /flatline-entry -->\n")


def test_wandb_argument_overrides_summary():
    entry = render_entry(make_diagnosis(), make_history(), when=WHEN, wandb="https://wandb.ai/me/flatline/runs/x")
    assert "- W&B: https://wandb.ai/me/flatline/runs/x" in entry.splitlines()


def test_malicious_strings_cannot_add_columns_headings_or_html():
    history = make_history(EVIL, config={"model": EVIL, "task": "a|b"})
    history.run_dir = Path("runs") / "a|b --> <b>x</b>\n## y"
    diagnosis = make_diagnosis(EVIL, reason=EVIL)
    diagnosis.verdicts[0].prescription = EVIL
    entry = render_entry(diagnosis, history, when=WHEN, report_dir="reports/x|y\n## z", wandb=EVIL)
    lines = entry.splitlines()
    assert lines[0].count("-->") == 1 and lines[0].endswith(" -->") and lines[-1] == "<!-- /flatline-entry -->"
    assert [line for line in lines if HEADING_LINE.match(line)] == [lines[1]]
    assert not re.search(r"(?<!\\)(?:\\\\)*[<`]", "\n".join(lines[1:-1])), "raw HTML or a code span got through"
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


# --- the lifecycle: an entry filed at the start is settled in place, every other byte untouched ---

def lifecycle_entry(run: str, state: RunState, when: datetime = WHEN) -> str:
    history = History(run=run, rows=[], config={"model": "tiny-random", "max_steps": 40})
    return render_entry(None, history, when=when, state=state, run=f"/runs/{run}")


RUNNING = RunState("running", 0, 40)


def test_a_running_entry_says_so_and_how_to_judge_it_later():
    entry = lifecycle_entry("a", RUNNING)
    lines = entry.splitlines()
    assert lines[0] == "<!-- flatline-entry status=running run=/runs/a -->"
    assert "- status: **RUNNING** (40 steps planned)" in lines and "- diagnosis:" not in entry
    assert "not judged yet (`flatline diagnose RUN_DIR --log`" in entry and lines[-1] == "<!-- /flatline-entry -->"


@pytest.mark.parametrize("state, label", [
    (RunState("completed", 40, 40), "**COMPLETED** (40 of 40 steps)"),
    (RunState("failed", 2, 40, "ValueError: boom"), "**FAILED** (during step 3 of 40: ValueError: boom)"),
    (RunState("interrupted", 7, 40, "SIGTERM"), "**INTERRUPTED** (by SIGTERM after 7 of 40 steps)"),
    (RunState("completed", 40, 40, evaluated=True), "**COMPLETED, EVALUATED** (40 of 40 steps)"),
    (RunState(None, evaluated=True), "**EVALUATED**"),
])
def test_status_lines(state, label):
    assert f"- status: {label}" in lifecycle_entry("a", state).splitlines()


def test_run_state_from_summary():
    state = RunState.from_summary({"status": "failed", "steps_completed": 3, "max_steps": 9, "error": "E: x"}, True)
    assert state == RunState("failed", 3, 9, "E: x", True) and state.statuses == ("failed", "evaluated")
    assert RunState.from_summary({"steps": 4}).status is None  # a summary from before statuses


def test_settling_replaces_only_its_own_entry_and_keeps_its_heading(tmp_path):
    path = tmp_path / "LOG.md"
    append_entry(path, entry_for("hand-judged"))  # an entry from before the lifecycle
    file_entry(path, "/runs/older", lifecycle_entry("older", RunState("completed", 40, 40)))
    file_entry(path, "/runs/mine", lifecycle_entry("mine", RUNNING, when=datetime(2025, 11, 22, 9, 0)))
    file_entry(path, "/runs/newer", lifecycle_entry("newer", RUNNING))
    path.write_bytes(path.read_bytes() + b"\nmy own note | kept\n")
    before = path.read_bytes()
    mine_start = before.index(b"<!-- flatline-entry status=running run=/runs/mine -->")
    mine_end = before.index(b"<!-- /flatline-entry -->\n", mine_start) + len(b"<!-- /flatline-entry -->\n")

    settled = lifecycle_entry("mine", RunState("interrupted", 7, 40, "SIGINT"), when=datetime(2025, 11, 23, 18, 0))
    file_entry(path, "/runs/mine", settled)
    after = path.read_bytes()
    assert after.startswith(before[:mine_start])  # the header and the newer entry: byte-identical
    tail = before[mine_end:]
    assert after.endswith(tail) and b"my own note" in tail and b"older" in tail  # older ones: byte-identical
    mine = after[mine_start:len(after) - len(tail)].decode()
    assert mine.startswith("<!-- flatline-entry status=interrupted run=/runs/mine -->\n## 2025-11-22 09:00 — mine\n")
    assert "**INTERRUPTED** (by SIGINT after 7 of 40 steps)" in mine and mine.endswith("<!-- /flatline-entry -->\n")
    assert after.count(b"run=/runs/mine ") == 1


def test_settling_a_run_with_no_entry_files_it_as_the_newest(tmp_path):
    path = tmp_path / "LOG.md"
    file_entry(path, "/runs/older", lifecycle_entry("older", RunState("completed", 40, 40)))
    before = path.read_bytes()
    file_entry(path, "/runs/new", lifecycle_entry("new", RunState("failed", 0, 40, "E: x")))
    after = path.read_bytes()
    marker_end = before.index(MARKER.encode()) + len(MARKER) + 1
    assert after.endswith(before[marker_end:]) and after.index(b"run=/runs/new") < after.index(b"run=/runs/older")


def test_a_legacy_marker_is_still_the_place_new_entries_go(tmp_path):
    path = tmp_path / "LOG.md"
    old = b"# Experiment log\n\n" + LEGACY_MARKERS[0].encode() + b"\n\n## 2025-01-01 old entry\n\nbody\n"
    path.write_bytes(old)
    file_entry(path, "/runs/a", lifecycle_entry("a", RUNNING))
    after = path.read_bytes()
    assert after.startswith(old[:old.index(b"\n\n## ")]) and after.endswith(old[old.index(b"\n## "):])
    assert MARKER.encode() not in after and after.count(LEGACY_MARKERS[0].encode()) == 1


def test_entry_lines_list_entries_by_status(tmp_path):
    path = tmp_path / "LOG.md"
    append_entry(path, entry_for("legacy"))
    file_entry(path, "/runs/done", lifecycle_entry("done", RunState("completed", 40, 40, evaluated=True)))
    file_entry(path, "/runs/a b", lifecycle_entry("a b", RunState("failed", 1, 40, "E: x")))
    file_entry(path, "/runs/live", lifecycle_entry("live", RUNNING))
    text = path.read_text()
    assert [e.run_id for e in entry_lines(text)] == ["/runs/live", "/runs/a b", "/runs/done", "legacy"]
    assert [e.run_id for e in entry_lines(text, {"failed", "running"})] == ["/runs/live", "/runs/a b"]
    assert [e.run_id for e in entry_lines(text, {"completed"})] == ["/runs/done"]
    (done,) = entry_lines(text, {"EVALUATED"})
    assert done.text() == "COMPLETED, EVALUATED   2025-11-22 14:05 — done  (/runs/done)"
