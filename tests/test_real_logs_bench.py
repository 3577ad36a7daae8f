"""bench/real_logs.py: its pure pieces (the class of a run, whether the first fail names the reported cause, the
lead time, the totals) and one pass over a small corpus written here (a collapsed run, a healthy run, an unreadable
log, a source.toml without an outcome)."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import real_logs  # noqa: E402
from bench.real_logs import Lead, Run, classify, find_runs, judge_run, lead_time, names_cause, totals  # noqa: E402
from bench.watch_latency import collapse_rows  # noqa: E402


def test_classify():
    assert classify("broken", True, ["length.truncation"]) == "caught"
    assert classify("broken", True, []) == "missed"
    assert classify("healthy", True, ["progress.plateau"]) == "false alarm"
    assert classify("healthy", True, []) == "correct pass"
    assert classify("healthy", False, []) == "unreadable"
    assert classify("broken", False, []) == "unreadable"
    # read, but every hypothesis skipped: neither a pass nor a miss
    assert classify("healthy", True, [], judged=False) == "not judged"
    assert classify("broken", True, [], judged=False) == "not judged"


def test_names_cause_reads_the_first_fail_only():
    assert names_cause("truncation", ["length.truncation", "progress.plateau"]) is True
    assert names_cause("collapse", ["advantage.degenerate_groups", "length.truncation"]) is False
    assert names_cause("collapse", ["length.collapse"]) is True
    assert names_cause("flat", ["progress.plateau"]) is None  # any fail names a cause of a flat run
    assert names_cause("truncation", []) is None
    assert names_cause("length collapse", ["length.collapse"]) is True  # the failure is free text: read by its words
    assert names_cause("nan gradients", ["progress.plateau"]) is False


def test_lead_time_is_the_first_failing_prefix_against_the_collapse_step():
    steps = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    judged = []

    def first_fail_at(step):
        judged.append(step)
        return "length.truncation" if step >= 30 else ""

    lead = lead_time(steps, first_fail_at, collapse_step=50)
    assert lead == Lead(50, 30.0, "length.truncation", rows_before=2, first_fail_row=3)
    assert lead.steps == 20
    assert judged == [10.0, 20.0, 30.0]  # a short log: every prefix in turn, up to the first failing one
    late = lead_time(steps, lambda step: "progress.plateau" if step >= 60 else "", collapse_step=50)
    assert late.steps == -10 and late.rows_before == 0
    never = lead_time(steps, lambda step: "", collapse_step=50)
    assert never.first_fail_step is None and never.steps is None


def test_lead_time_on_a_long_log_judges_few_prefixes_and_finds_the_same_step():
    steps = [float(s) for s in range(5, 5001, 5)]  # 1,000 logged rows, logging_steps 5
    for first in (5, 10, 1235, 2500, 4995, 5000):
        judged = []

        def first_fail_at(step):
            judged.append(step)
            return "length.truncation" if step >= first else ""

        lead = lead_time(steps, first_fail_at, collapse_step=3000)
        assert lead.first_fail_step == first
        assert lead.rows_before == max(0, (3000 - first) // 5)
        assert len(judged) <= 50 + 5 + 1, first  # the coarse pass, then a bisection of one block of 20


def _run(outcome, read, fails, warns=(), failure="", judged=True):
    run = Run("r", Path("."), {"outcome": outcome, "failure": failure, "log": "x"})
    run.read, run.fails, run.warns, run.judged = read, list(fails), list(warns), judged
    return run


def test_totals():
    runs = [_run("broken", True, ["length.truncation"], failure="truncation"),
            _run("broken", True, ["progress.plateau"], failure="collapse"),
            _run("broken", True, []), _run("healthy", True, ["entropy.collapse"]),
            _run("healthy", True, [], ["length.growth"]), _run("healthy", True, []), _run("healthy", False, []),
            _run("healthy", True, [], judged=False), _run("broken", True, [], judged=False)]
    assert totals(runs) == {"runs": 9, "read": 8, "unreadable": 1, "not_judged": 2, "broken": 3, "caught": 2,
                            "missed": 1,
                            "healthy": 3, "false_alarms": 1, "correct_passes": 2, "healthy_warned": 1,
                            "cause_mapped": 2, "cause_first": 1}


def _write_run(corpus: Path, name: str, log_name: str, text: str | bytes, **source):
    folder = corpus / name
    folder.mkdir(parents=True)
    (folder / log_name).write_bytes(text if isinstance(text, bytes) else text.encode())
    fields = {"log": log_name, "format": "jsonl", **source}
    (folder / "source.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items()))


def test_a_small_corpus_end_to_end(tmp_path):
    rows = collapse_rows(steps=80, collapse_at=50)
    jsonl = "".join(json.dumps(r) + "\n" for r in rows)
    _write_run(tmp_path, "a_collapse", "metrics.jsonl", jsonl, outcome="broken", failure="collapse", collapse_step=52)
    _write_run(tmp_path, "b_climb", "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows[:49]),
               outcome="healthy", collapse_step=0)
    _write_run(tmp_path, "c_binary", "run.log", b"\x00\x01" * 50, outcome="healthy")
    _write_run(tmp_path, "d_no_outcome", "metrics.jsonl", jsonl)
    _write_run(tmp_path, "e_unknown_names", "log.jsonl", "".join(json.dumps({"step": s, "my/score": 0.1 * s}) + "\n"
                                                                 for s in range(1, 31)), outcome="healthy")
    runs = [judge_run(r, with_lead=True, watch_healthy=True) for r in find_runs([tmp_path])]
    assert [r.run_id for r in runs] == ["a_collapse", "b_climb", "c_binary", "d_no_outcome", "e_unknown_names"]
    collapse, climb, binary, no_outcome, unknown = runs
    assert unknown.verdict_class == "not judged" and unknown.headline.startswith("Nothing judged: no metric")
    assert collapse.verdict_class == "caught" and collapse.rows == 80 and collapse.headline.startswith("Not learning")
    assert climb.verdict_class == "correct pass"
    assert binary.verdict_class == "unreadable" and binary.error.startswith("run.log: is a binary file")
    assert no_outcome.error == "source.toml lacks outcome" and no_outcome.verdict_class == "unreadable"
    # the lead: the first prefix that fails, found by judging each prefix in turn
    from flatline.diagnostics.history import load_history
    from flatline.diagnostics.judge import judge

    history = load_history(tmp_path / "a_collapse" / "metrics.jsonl")
    first = next(s for s in range(1, 81) if judge(real_logs.prefix(history, s)).failed)
    assert collapse.lead.first_fail_step == first and collapse.lead.steps == 52 - first
    assert climb.lead is None  # no collapse step: no lead time
    assert climb.watched == Lead(0, None)  # quiet at every prefix, as `flatline watch` would judge it
    assert collapse.watched is None  # only healthy runs are watched for false alarms
    table = real_logs.render(runs, [tmp_path], 1.0)
    assert "Totals: 5 runs, 3 read, 1 read but not judged, 2 unreadable" in table
    assert "Not judged (read, every hypothesis skipped; counted neither broken nor healthy):\n  e_unknown_names" in table
    assert "healthy 1: false alarms with a fail 0, correct passes 1" in table
    assert f"a_collapse{' ' * 28}       52 {first:>10} {52 - first:>12}" in table
