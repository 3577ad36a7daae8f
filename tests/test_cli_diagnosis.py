"""`flatline train` ends with the judgement, a report and a log entry; `flatline diagnose` re-judges from the
metrics alone; `flatline log` prints the log book. Runs the real bandit config (tiny model, a few seconds)."""
import json

import pytest

from flatline.diagnostics.judge import hypothesis_ids
from flatline.diagnostics.logbook import MARKER
from flatline.harness.cli import main

BANDIT = ["configs/bandit.toml", "--set", "max_steps=30", "--probes", "full"]


@pytest.fixture(scope="module")
def log_book(tmp_path_factory):
    return tmp_path_factory.mktemp("book") / "EXPERIMENT_LOG.md"


@pytest.fixture(scope="module")
def bandit_runs(tmp_path_factory, log_book):
    """Two bandit runs (seeds 0 and 1) into one log book, with the log book read after each."""
    root = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("FLATLINE_LOG", str(log_book))
    books = []
    for seed in (0, 1):
        assert main(["train", *BANDIT, "--set", f"seed={seed}", "--out", str(root / f"seed{seed}")]) == 0
        books.append(log_book.read_bytes())
    mp.undo()
    return [root / "seed0", root / "seed1"], books


def test_train_ends_with_the_judgement_report_and_log_entry(bandit_runs, capsys):
    (run, _), (book_after_first, _) = bandit_runs
    diagnosis = json.loads((run / "diagnosis.json").read_text())
    assert diagnosis["run"] == "seed0" and {v["id"] for v in diagnosis["verdicts"]} == set(hypothesis_ids())
    assert [v["id"] for v in diagnosis["verdicts"] if v["status"] == "fail"] == []  # the bandit learns: no fail
    assert diagnosis["key_metrics"]["reward_last"] == 1.0
    md = (run / "diagnosis.md").read_text()
    assert md.startswith("# Diagnosis: seed0") and "![" in md and (run / "reward.png").exists()
    assert book_after_first.count(b"\n## ") == 1 and b"seed0" in book_after_first


def test_a_second_run_lands_newest_first_and_leaves_the_older_entry_byte_identical(bandit_runs):
    _, (first, second) = bandit_runs
    marker = MARKER.encode()
    old_entries = first.split(marker, 1)[1]
    assert second.endswith(old_entries)  # every byte of the older entry is still there, unchanged, at the end
    headings = [line for line in second.decode().splitlines() if line.startswith("## ")]
    assert len(headings) == 2 and "seed1" in headings[0] and "seed0" in headings[1]


def test_diagnose_rejudges_from_metrics_alone(bandit_runs, capsys, tmp_path):
    (run, _), _ = bandit_runs
    capsys.readouterr()
    assert main(["diagnose", str(run), "--format", "json", "--fail-on", "fail"]) == 0
    printed = json.loads(capsys.readouterr().out)
    stored = json.loads((run / "diagnosis.json").read_text())
    assert [(v["id"], v["status"]) for v in printed["verdicts"]] == [(v["id"], v["status"]) for v in stored["verdicts"]]
    metrics_only = tmp_path / "metrics.jsonl"
    metrics_only.write_bytes((run / "metrics.jsonl").read_bytes())
    assert main(["diagnose", str(metrics_only), "--format", "md"]) == 0
    assert capsys.readouterr().out.startswith("# Diagnosis: metrics")


def test_diagnose_fail_on_exits_1_for_a_confirmed_hypothesis(bandit_runs, capsys, tmp_path):
    (run, _), _ = bandit_runs
    broken = tmp_path / "broken"
    broken.mkdir()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for row in rows[5:]:
        row["grad_norm"] = "nan"
    (broken / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["diagnose", str(broken), "--fail-on", "fail"]) == 1
    assert "gradients.non_finite" in capsys.readouterr().out
    assert main(["diagnose", str(broken)]) == 0  # without --fail-on the verdict is printed, not enforced


def test_diagnose_out_writes_a_report_and_never_overwrites_one(bandit_runs, capsys, tmp_path):
    (run, _), _ = bandit_runs
    out = tmp_path / "again"
    assert main(["diagnose", str(run), "--out", str(out)]) == 0
    assert (out / "diagnosis.md").exists() and (out / "diagnosis.json").exists()
    before = (out / "diagnosis.md").read_bytes()
    assert main(["diagnose", str(run), "--out", str(out)]) == 2
    assert "already holds files (diagnosis.json, diagnosis.md" in capsys.readouterr().err
    assert (out / "diagnosis.md").read_bytes() == before


def test_diagnose_a_missing_run_is_a_clear_error(capsys, tmp_path):
    assert main(["diagnose", str(tmp_path / "nope")]) == 2
    assert "no such run directory or log file" in capsys.readouterr().err


def test_log_prints_the_log_book(bandit_runs, log_book, capsys, monkeypatch):
    capsys.readouterr()
    monkeypatch.setenv("FLATLINE_LOG", str(log_book))
    assert main(["log"]) == 0
    assert capsys.readouterr().out == log_book.read_text()
    monkeypatch.setenv("FLATLINE_LOG", str(log_book.parent / "missing.md"))
    assert main(["log"]) == 2
