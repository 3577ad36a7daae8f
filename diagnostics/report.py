"""The diagnosis report: diagnosis.md for people, diagnosis.json for tools (the docs/DESIGN.md contract).

    diagnosis = judge(history)
    write_report(diagnosis, history, "runs/x")      # runs/x/diagnosis.md, diagnosis.json, report.html, PNG curves

render_markdown and render_json return the text and the object without writing anything. Every string that
came from the run (reasons, evidence, prescriptions, names, completions) is escaped or fenced, so a model's
output cannot break or inject into the markdown. Files are written atomically; a failing plot step costs the
pictures (one warning), never the report.
"""
from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from urllib.parse import quote

from flatline.common.files import write_atomic
from flatline.diagnostics.history import History
from flatline.diagnostics.judge import Diagnosis
from flatline.diagnostics.markdown import escape_inline, fenced, table
from flatline.diagnostics.readers import TRAINER_LABELS
from flatline.diagnostics.verdict import Verdict, format_number

FAMILY_ORDER = ("advantage", "reward", "masking", "gradients", "update", "sync", "length", "kl", "entropy",
                "control", "progress")
STATUS_LABEL = {"fail": "❌ fail", "warn": "🔶 warn", "pass": "✅ pass", "inconclusive": "⚠️ inconclusive",
                "skipped": "⏭ skipped"}
# The hypothesis families each picture speaks to: the pictures of the failed families come first.
PLOT_FAMILIES = {
    "reward.png": ("reward", "progress", "control"),
    "zero_std.png": ("advantage", "reward"),
    "update.png": ("update", "gradients"),
    "grad_norm.png": ("gradients",),
    "truncation.png": ("length",),
}
# Completions quoted at the end of the report (from the last logged step).
MAX_SAMPLES = 4
_URL = re.compile(r"https?://[A-Za-z0-9\-._~:/?#@!$&'*+,;=%]+[A-Za-z0-9/#=_~-]")


def _evidence(verdict: Verdict) -> str:
    return ", ".join(f"{escape_inline(k)}={escape_inline(format_number(v))}" for k, v in verdict.evidence.items())


def _clause(text: str) -> str:
    return escape_inline(str(text).strip().rstrip("."))


def _headline_item(number: int, verdict: Verdict) -> str:
    text = f"{number}. **{escape_inline(verdict.id)}**: {_clause(verdict.reason)}"
    if verdict.evidence:
        text += f" ({_evidence(verdict)})"
    text += "."
    if verdict.prescription:
        text += f" Try: {escape_inline(verdict.prescription)}"
    return text


def _counts_line(diagnosis: Diagnosis) -> str:
    return ", ".join(f"{n} {status}" for status, n in diagnosis.counts().items()) + "."


def _headline(diagnosis: Diagnosis) -> list[str]:
    if diagnosis.nothing_to_judge:
        return [f"**⚠️ {escape_inline(diagnosis.nothing_to_judge)}**", "", _counts_line(diagnosis)]
    if not diagnosis.failed and not diagnosis.warned:
        return [escape_inline(diagnosis.headline()), "", _counts_line(diagnosis)]
    lines = []
    if diagnosis.failed:
        lines += ["## Why it is not learning", "", "Likeliest cause first:", ""]
        lines += [_headline_item(i, v) for i, v in enumerate(diagnosis.failed, 1)]
    if diagnosis.warned:
        lines += ([""] if lines else []) + ["## Learning now, but this will stop it", ""]
        lines += [_headline_item(i, v) for i, v in enumerate(diagnosis.warned, 1)]
    return lines + ["", _counts_line(diagnosis)]


def _run_section(diagnosis: Diagnosis) -> list[str]:
    rows = [[escape_inline(k), escape_inline("n/a" if v is None else format_number(v))]
            for k, v in diagnosis.key_metrics.items()]
    lines = ["## Run", ""]
    if rows:
        lines += [table(["metric", "value"], rows), ""]
    if diagnosis.control_run:
        lines += [f"Control run: {escape_inline(diagnosis.control_run)}", ""]
    return lines[:-1] if lines[-1] == "" else lines


# Entries of a long list shown in the report (the JSON has them all).
SHOWN_KEYS = 40
SHOWN_DROPPED = 10
TRAINER_NAMES = TRAINER_LABELS  # one table: the dialects' labels (readers/aliases.py)


def _name_list(names: list[str], limit: int) -> str:
    shown = ", ".join(escape_inline(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _log_section(history: History) -> list[str]:
    """How the log was read: format, where each judged metric came from, what was not recognised or left out."""
    log = history.log
    if not log.format or (log.format == "flatline" and not (log.dropped or log.notes or log.unrecognised)):
        return []
    names = f" ({TRAINER_NAMES.get(log.trainer, log.trainer)}'s names)" if log.trainer not in ("", log.format) else ""
    lines = ["## Log", "",
             f"Read as {escape_inline(log.format)}{escape_inline(names)}: {escape_inline(log.source)}; "
             f"{history.steps} training steps, {log.eval_points} held-out evaluations, {log.keys} keys."]
    if log.config_source:
        lines += ["", f"Settings from {escape_inline(log.config_source)}."]
    renamed = [[escape_inline(ours), escape_inline(theirs)] for ours, theirs in log.mapping.items() if ours != theirs]
    same = [ours for ours, theirs in log.mapping.items() if ours == theirs]
    if renamed:
        lines += ["", table(["flatline reads", "from the log's key"], renamed)]
    if same:
        lines += ["", f"Read under their own names ({len(same)}): {_name_list(same, SHOWN_KEYS)}."]
    if log.unrecognised:
        lines += ["", f"**Not recognised ({len(log.unrecognised)})**, so not judged: "
                      f"{_name_list(log.unrecognised, SHOWN_KEYS)}."]
    if log.ignored:
        lines += ["", f"{len(log.ignored)} known keys flatline does not judge (timing, memory, breakdowns, duplicates) "
                      "were left aside."]
    if log.dropped:
        shown = [f"- {escape_inline(where)}: {escape_inline(why)}" for where, why in log.dropped[:SHOWN_DROPPED]]
        more = [f"- and {len(log.dropped) - SHOWN_DROPPED} more"] if len(log.dropped) > SHOWN_DROPPED else []
        lines += ["", f"**{len(log.dropped)} row(s) left out**, the valid rows were judged:", ""] + shown + more
    if log.notes:
        lines += ["", "Notes:", ""] + [f"- {escape_inline(note)}" for note in log.notes]
    return lines


def _plot_order(diagnosis: Diagnosis, plots: dict[str, str]) -> list[tuple[str, str]]:
    failed = [v.family for v in diagnosis.failed]

    def rank(item: tuple[str, str]) -> int:
        families = PLOT_FAMILIES.get(Path(item[1]).name, ())
        return min((failed.index(f) for f in families if f in failed), default=len(failed))

    return sorted(plots.items(), key=rank)


def _plots_section(diagnosis: Diagnosis, plots: dict[str, str] | None) -> list[str]:
    if not plots:
        return []
    lines = ["## Curves", ""]
    for title, filename in _plot_order(diagnosis, plots):
        lines += [f"![{escape_inline(title)}]({quote(str(filename))})", ""]
    return lines[:-1]


def _verdict_row(verdict: Verdict) -> list[str]:
    evidence = _clause(verdict.reason)
    if verdict.evidence:
        evidence = f"{evidence} ({_evidence(verdict)})" if evidence else _evidence(verdict)
    hypothesis = f"**{escape_inline(verdict.id)}** {escape_inline(verdict.title)}"
    status = STATUS_LABEL.get(verdict.status, escape_inline(verdict.status))
    return [hypothesis, status, evidence, escape_inline(verdict.prescription)]


def _families(verdicts: list[Verdict]) -> list[str]:
    seen = list(dict.fromkeys(v.family for v in verdicts))
    return [f for f in FAMILY_ORDER if f in seen] + [f for f in seen if f not in FAMILY_ORDER]


def _family_section(diagnosis: Diagnosis) -> list[str]:
    lines = ["## Verdicts by family"]
    for family in _families(diagnosis.verdicts):
        rows = [_verdict_row(v) for v in diagnosis.verdicts if v.family == family]
        lines += ["", f"### {escape_inline(family)}", "",
                  table(["hypothesis", "status", "evidence", "prescription"], rows)]
    return lines


def _reference_text(reference: str) -> str:
    """Escaped text with its URLs as autolinks (they stay clickable; the rest cannot form markdown)."""
    parts, last = [], 0
    for match in _URL.finditer(reference):
        parts += [escape_inline(reference[last:match.start()]), f"<{match.group()}>"]
        last = match.end()
    return "".join(parts) + escape_inline(reference[last:])


def _references_section(diagnosis: Diagnosis) -> list[str]:
    refs = dict.fromkeys(r for v in diagnosis.verdicts if v.status in ("fail", "warn", "inconclusive") for r in v.references)
    if not refs:
        return []
    return ["## References", ""] + [f"{i}. {_reference_text(r)}" for i, r in enumerate(refs, 1)]


def last_step_samples(samples: list[dict], count: int = MAX_SAMPLES) -> list[dict]:
    """Up to `count` samples of the last logged step (the last `count` when no sample names its step)."""
    steps = [s.get("step") for s in samples
             if isinstance(s.get("step"), (int, float)) and not isinstance(s.get("step"), bool)]
    if not steps:
        return samples[-count:]
    last = max(steps)
    return [s for s in samples if s.get("step") == last][:count]


def _sample(number: int, sample: dict) -> list[str]:
    facts = [f"step {escape_inline(format_number(sample.get('step', '?')))}"]
    for key in ("reward", "advantage"):
        if key in sample:
            facts.append(f"{key}={escape_inline(format_number(sample[key]))}")
    if sample.get("truncated"):
        facts.append("truncated at the length limit")
    if sample.get("example") is not None:
        facts.append(f"example {escape_inline(sample['example'])}")
    lines = [f"**Sample {number}**: " + ", ".join(facts), "", fenced(sample.get("completion", ""))]
    masked = sample.get("masked_text")
    if masked is not None and masked != sample.get("completion"):
        lines += ["", "What the loss trained on (completion mask applied):", "", fenced(masked)]
    return lines


def _samples_section(history: History) -> list[str]:
    chosen = last_step_samples(history.samples)
    if not chosen:
        return ["## Sample completions", "", "No samples were logged (samples.jsonl)."]
    lines = ["## Sample completions"]
    for i, sample in enumerate(chosen, 1):
        lines += [""] + _sample(i, sample)
    return lines


def render_markdown(diagnosis: Diagnosis, history: History, plots: dict[str, str] | None = None) -> str:
    """diagnosis.md: headline, run, how the log was read, curves (`plots`: title -> file name next to the report),
    verdicts by family, references, sample completions."""
    caveat = [f"**⚠️ How the log was read: {escape_inline(history.log.caveat)}**"] if history.log.caveat else []
    sections = [[f"# Diagnosis: {escape_inline(diagnosis.run)}"], caveat, _headline(diagnosis), _run_section(diagnosis),
                _log_section(history), _plots_section(diagnosis, plots), _family_section(diagnosis), _references_section(diagnosis),
                _samples_section(history)]
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def render_json(diagnosis: Diagnosis, history: History | None = None) -> dict:
    """diagnosis.json: the DESIGN contract (run, verdicts) plus status, headline, counts and key metrics, and with
    `history`, how its log was read ("log"); safe for json.dumps(allow_nan=False) (non-finite numbers as strings)."""
    out = diagnosis.to_json()
    if history is not None and history.log.format:
        out["log"] = history.log.to_json()
    return _jsonable(out)


def _try_plots(history: History, out_dir: Path) -> dict[str, str]:
    from flatline.diagnostics import plots

    try:
        return plots.write_plots(history, out_dir)
    except Exception as exc:  # pictures are optional; the verdicts are the report
        warnings.warn(f"diagnosis report written without plots: {type(exc).__name__}: {exc}", stacklevel=3)
        return {}


def html_page(diagnosis: Diagnosis, history: History) -> str:
    """report.html's text (diagnostics/html_report.py), with the curves inline when they can be drawn."""
    from flatline.diagnostics import plots
    from flatline.diagnostics.html_report import render_html

    try:
        pictures = plots.svg_plots(history)
    except Exception as exc:  # pictures are optional; the verdicts are the report
        warnings.warn(f"report.html written without plots: {type(exc).__name__}: {exc}", stacklevel=3)
        pictures = []
    return render_html(diagnosis, history, pictures)


def write_report(diagnosis: Diagnosis, history: History, out_dir: str | Path) -> Path:
    """Write diagnosis.json, the PNG curves, diagnosis.md and report.html into `out_dir`; returns the diagnosis.md
    path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "diagnosis.json", json.dumps(render_json(diagnosis, history), indent=2, allow_nan=False)
                 + "\n")
    plots = _try_plots(history, out_dir)
    path = out_dir / "diagnosis.md"
    write_atomic(path, render_markdown(diagnosis, history, plots))
    write_atomic(out_dir / "report.html", html_page(diagnosis, history))
    return path
