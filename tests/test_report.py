"""diagnosis.md / diagnosis.json: headline order, table shape, escaping of model output, atomic files, plots."""
import json
import re
import warnings

from flatline.diagnostics import plots as plots_module
from flatline.diagnostics.history import History
from flatline.diagnostics.judge import Diagnosis
from flatline.diagnostics.markdown import escape_inline
from flatline.diagnostics.report import render_json, render_markdown, write_report
from flatline.diagnostics.verdict import Verdict

MALICIOUS = "ok ```\n</details>\n# Injected\n| a | b |\n````\n~~~\n<script>alert(1)</script>"
ALL_PLOTS = {"reward.png", "zero_std.png", "update.png", "grad_norm.png", "truncation.png"}


def make_history(samples=None) -> History:
    rows = []
    for step in range(1, 21):
        row = {"step": step, "reward": 0.2 + 0.001 * step, "reward_std": 0.05, "frac_reward_zero_std": 0.9,
               "advantage/zero_std_all_min_frac": 0.7, "advantage/zero_std_all_max_frac": 0.2,
               "update/rel_update": "inf" if step == 7 else 1e-7 * step, "grad_norm": 0.5 + step % 3,
               "completions/clipped_ratio": 0.3, "completions/mean_length": 100 + step}
        if step % 5 == 0:
            row["eval/reward"] = 0.25
        rows.append(row)
    if samples is None:
        samples = [{"step": 19, "prompt": "old", "completion": "older step", "reward": 1.0, "advantage": 0.5}]
        samples += [{"step": 20, "example": f"ex{i}", "prompt": "What is 2+2?", "completion": c,
                     "masked_text": c, "reward": 0.0, "advantage": float("nan"), "truncated": False}
                    for i, c in enumerate([MALICIOUS, "4", "four", "IV", "not shown"])]
    return History(run="r", rows=rows, config={"max_grad_norm": 1.0}, samples=samples)


def make_diagnosis(fails: bool = True) -> Diagnosis:
    failed = [
        Verdict("update.too_small", "Update too small", "fail", {"rel_update_median": 1e-7, "lr": 1e-6},
                "raise learning_rate to 1e-5", ["TRL 'LoRA Without Regret' (https://huggingface.co/docs/trl/x)"],
                "the median relative update is 1e-7."),
        Verdict("reward.no_signal", "No reward signal", "fail", {"zero_std_frac": 0.9, "note": "a|b"},
                "use an easier task | more generations", ["TRL #3857 (https://github.com/huggingface/trl/issues/3857)"],
                "90% of groups have zero std\n# Injected reason"),
    ] if fails else []
    others = [
        Verdict("length.truncation", "Truncation", "inconclusive", {"clipped_ratio": 0.3}, "raise max length",
                ["TRL #3857 (https://github.com/huggingface/trl/issues/3857)", "verl clip ratio"], "30% cut"),
        Verdict("advantage.numerics", "Advantage numerics", "pass", {"max_abs": float("inf"), "nan": float("nan")},
                "", [], "all finite | sums ~0"),
        Verdict("sync.sampler_mismatch", "Sampler mismatch", "skipped", {}, "", [], "needs probe `sync/logprob_diff`"),
        Verdict("custom.thing", "A user's own check", "pass", {"x": 1}, "", [], "fine"),
    ]
    return Diagnosis("r", failed + others, {"steps": 20, "reward_first": 0.2, "eval_last": None},
                     control_run="control|run")


def fenced_regions(markdown: str) -> tuple[set[int], list[str]]:
    """Indices of lines inside fenced code blocks and each block's content (CommonMark: a closing fence uses the
    opening fence's character, is at least as long, and carries nothing but spaces after it)."""
    inside, blocks, fence, content = set(), [], None, []
    for index, line in enumerate(markdown.split("\n")):
        indent = len(line) - len(line.lstrip(" "))
        stripped = line[indent:] if indent <= 3 else ""
        if fence is None:
            match = re.match(r"(`{3,}|~{3,})(.*)$", stripped)
            if match and not (match.group(1)[0] == "`" and "`" in match.group(2)):
                fence, content = match.group(1), []
            continue
        match = re.match(r"(`{3,}|~{3,})\s*$", stripped)
        if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
            blocks.append("\n".join(content))
            fence = None
            continue
        inside.add(index)
        content.append(line)
    assert fence is None, "a fenced block is never closed"
    return inside, blocks


def unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)(?:\\\\)*\|", line))


def section(markdown: str, heading: str) -> str:
    start = markdown.index(heading)
    end = markdown.find("\n## ", start + 1)
    return markdown[start:end if end >= 0 else None]


def test_failed_verdicts_lead_in_given_order():
    md = render_markdown(make_diagnosis(), make_history())
    assert md.startswith("# Diagnosis: r\n")
    first, second = escape_inline("update.too_small"), escape_inline("reward.no_signal")
    headline = md.index("## Why it is not learning")
    assert headline < md.index(f"1. **{first}**") < md.index(f"2. **{second}**") < md.index("## Verdicts by family")
    assert "Try: raise learning_rate to 1e-5" in md
    assert "rel_update_median=1e-07" in md
    assert md.index("## Run") < md.index("## Verdicts by family") < md.index("## References") \
        < md.index("## Sample completions")
    assert "control\\|run" in md


def test_no_fail_says_nothing_is_confirmed():
    diagnosis = make_diagnosis(fails=False)
    md = render_markdown(diagnosis, make_history())
    assert "## Why it is not learning" not in md
    assert escape_inline(diagnosis.headline()) in md


def test_family_tables_keep_their_shape_and_order():
    md = render_markdown(make_diagnosis(), make_history())
    families = section(md, "## Verdicts by family")
    headings = re.findall(r"^### (.+)$", families, flags=re.M)
    assert headings == ["advantage", "reward", "update", "sync", "length", "custom"]
    for table in re.findall(r"(?:^\|.*\n?)+", families, flags=re.M):
        lines = table.strip("\n").split("\n")
        assert len(lines) >= 3
        assert {unescaped_pipes(line) for line in lines} == {5}, table
    assert all(label in families for label in ("❌ fail", "✅ pass", "⚠️ inconclusive", "⏭ skipped"))
    assert "max_abs=inf" in families


def test_references_are_unique_and_numbered():
    refs = section(render_markdown(make_diagnosis(), make_history()), "## References")
    items = re.findall(r"^\d+\. (.*)$", refs, flags=re.M)
    assert len(items) == 3
    assert sum("<https://github.com/huggingface/trl/issues/3857>" in item for item in items) == 1


def test_completions_stay_inside_their_code_block():
    md = render_markdown(make_diagnosis(), make_history())
    inside, blocks = fenced_regions(md)
    lines = md.split("\n")
    for marker in ("# Injected", "</details>", "| a | b |", "<script>alert(1)</script>"):
        hits = [i for i, line in enumerate(lines) if line == marker]
        assert hits and all(i in inside for i in hits), marker
    assert MALICIOUS in blocks
    outside_headings = [line for i, line in enumerate(lines) if i not in inside and line.startswith("# ")]
    assert outside_headings == ["# Diagnosis: r"]
    samples = section(md, "## Sample completions")
    assert samples.count("**Sample ") == 4 and "older step" not in samples and "not shown" not in samples


def test_json_round_trips_strictly():
    data = render_json(make_diagnosis())
    back = json.loads(json.dumps(data, allow_nan=False))
    assert back["run"] == "r"
    assert [v["id"] for v in back["verdicts"]][:2] == ["update.too_small", "reward.no_signal"]
    for verdict in back["verdicts"]:
        assert {"id", "title", "status", "evidence", "prescription", "references"} <= set(verdict)
    numerics = next(v for v in back["verdicts"] if v["id"] == "advantage.numerics")
    assert numerics["evidence"] == {"max_abs": "inf", "nan": "nan"}


def test_write_report_writes_everything_it_references(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = write_report(make_diagnosis(), make_history(), tmp_path / "run")
    assert path == tmp_path / "run" / "diagnosis.md"
    md = path.read_text(encoding="utf-8")
    referenced = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert set(referenced) == ALL_PLOTS
    for name in referenced:
        assert (path.parent / name).read_bytes().startswith(b"\x89PNG")
    assert md.index("## Why it is not learning") < md.index("## Curves") < md.index("## Verdicts by family")
    assert md.index("(update.png)") < md.index("(reward.png)")  # the first failed family's picture leads
    json.loads((path.parent / "diagnosis.json").read_text(encoding="utf-8"))
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(ALL_PLOTS | {"diagnosis.md", "diagnosis.json",
                                                                               "report.html"})


def test_plots_only_for_logged_metrics(tmp_path):
    history = History(run="r", rows=[{"step": s, "reward": 0.1 * s} for s in range(1, 6)])
    assert plots_module.write_plots(history, tmp_path) == {"Reward": "reward.png"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reward.png"]


def test_report_survives_failing_plots(tmp_path, monkeypatch):
    def broken(history, out_dir):
        raise ImportError("no matplotlib here")

    monkeypatch.setattr(plots_module, "write_plots", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = write_report(make_diagnosis(), make_history(), tmp_path)
    assert len(caught) == 1 and "no matplotlib here" in str(caught[0].message)
    md = path.read_text(encoding="utf-8")
    assert "![" not in md and "## Curves" not in md and "## Verdicts by family" in md
    assert (tmp_path / "diagnosis.json").exists()
