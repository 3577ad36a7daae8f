"""report.html: the diagnosis as one self-contained page people look at (the docs/DESIGN.md contract).

    page = render_html(diagnosis, history, svg_plots(history))   # a str; nothing is written or fetched

One file with nothing to load: styles inline, the curves as inline SVG, and a Content-Security-Policy that forbids
any request, so the page reads the same offline, attached to an issue or opened years later. Every status is
shown by a symbol and a word as well as a colour (a grey-scale print or a colour-blind reader loses nothing). Every
string that came from the run (ids, reasons, evidence, prescriptions, references, metric names, completions) goes
through html.escape; a reference's URL becomes a link only when it is plain http(s).
"""
from __future__ import annotations

import html
import re

from flatline.diagnostics.history import History
from flatline.diagnostics.judge import Diagnosis
from flatline.diagnostics.report import PLOT_FAMILIES, TRAINER_NAMES, _URL, last_step_samples
from flatline.diagnostics.verdict import Verdict, format_number

# (symbol, word) per status; the word is the diagnosis.json status, so a reader can match the two.
STATUS_MARK = {"fail": ("✖", "fail"), "warn": ("▲", "warn"), "inconclusive": ("?", "inconclusive"),
               "pass": ("✔", "pass"), "skipped": ("–", "skipped")}
# Nothing may be fetched: no scripts, fonts, images or frames from anywhere; inline styles and inline SVG only.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d1d1f;margin:0 auto;max-width:1180px;
padding:24px}
h1{font-size:1.6em;margin:0 0 .3em}h2{font-size:1.25em;margin:1.6em 0 .5em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;font-size:.92em}th,td{border:1px solid #ddd;padding:5px 8px;
vertical-align:top;text-align:left}th{background:#f4f4f6}
.status{display:inline-block;font-weight:700;text-transform:uppercase;letter-spacing:.02em;white-space:nowrap;
padding:1px 7px;border-radius:4px;border:2px solid}
.status-fail{color:#a4000f;border-color:#a4000f;background:#fde7e9}
.status-warn{color:#8a4b00;border-color:#8a4b00;background:#fff1dc;border-style:dashed}
.status-inconclusive{color:#4a4a8a;border-color:#4a4a8a;background:#ececfa;border-style:dotted}
.status-pass{color:#1f6b2a;border-color:#1f6b2a;background:#e6f4e8}
.status-skipped{color:#666;border-color:#aaa;background:#f6f6f6;font-weight:400}
tr.verdict-fail{background:#fff7f8}tr.verdict-warn{background:#fffaf2}
.headline{font-size:1.1em}.count{margin-right:16px;white-space:nowrap}
.finding{border:1px solid #ddd;border-left:6px solid #a4000f;border-radius:6px;padding:10px 14px;margin:12px 0}
.finding.warn{border-left-color:#8a4b00}.finding h3{margin:.2em 0}
.evidence{font-family:ui-monospace,monospace;font-size:.88em}
figure{display:inline-block;margin:6px 12px 6px 0}figure svg{max-width:100%;height:auto}
figcaption{font-size:.85em;color:#555}pre{background:#f6f6f8;padding:8px;overflow-x:auto;white-space:pre-wrap}
.muted{color:#666}
"""


def esc(value) -> str:
    """Text from the run, safe in an element or a quoted attribute (control characters dropped)."""
    return html.escape(_CONTROL.sub("", str(value)), quote=True)


def status_badge(status: str) -> str:
    symbol, word = STATUS_MARK.get(status, ("•", status))
    return (f'<span class="status status-{esc(status)}"><span aria-hidden="true">{symbol}</span> '
            f'<span class="status-word">{esc(word)}</span></span>')


def _linked(reference: str) -> str:
    """A reference's text, escaped, with each http(s) URL in it as a link."""
    parts, last = [], 0
    for match in _URL.finditer(reference):
        url = match.group()
        parts += [esc(reference[last:match.start()]), f'<a href="{esc(url)}" rel="noreferrer">{esc(url)}</a>']
        last = match.end()
    return "".join(parts) + esc(reference[last:])


def _evidence_list(verdict: Verdict) -> str:
    return ", ".join(f"{esc(k)}={esc(format_number(v))}" for k, v in verdict.evidence.items())


def _plot_anchor(filename: str) -> str:
    return "plot-" + re.sub(r"[^A-Za-z0-9_-]", "-", filename)


def _verdict_plots(verdict: Verdict, pictures: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [p for p in pictures if verdict.family in PLOT_FAMILIES.get(p[1], ())]


def _figure(title: str, filename: str, svg: str, with_id: bool) -> str:
    ident = f' id="{_plot_anchor(filename)}"' if with_id else ""
    return f'<figure{ident}>{svg}<figcaption>{esc(title)}</figcaption></figure>'


def _head(diagnosis: Diagnosis) -> list[str]:
    return ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>flatline diagnosis: {esc(diagnosis.run)}</title>", f"<style>{STYLE}</style>", "</head>"]


def _summary(diagnosis: Diagnosis) -> list[str]:
    counts = " ".join(f'<span class="count" data-status="{s}">{status_badge(s)} {n}</span>'
                      for s, n in diagnosis.counts().items())
    lines = [f"<h1>Diagnosis: {esc(diagnosis.run)}</h1>", f'<p class="headline">{esc(diagnosis.headline())}</p>',
             f'<p class="counts">{counts}</p>']
    if diagnosis.control_run:
        lines.append(f'<p>Control run: {esc(diagnosis.control_run)}</p>')
    if diagnosis.key_metrics:
        rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc('n/a' if v is None else format_number(v))}</td></tr>"
                       for k, v in diagnosis.key_metrics.items())
        lines += ["<h2>Run</h2>", f'<table class="key-metrics" style="width:auto">{rows}</table>']
    return lines


def _finding(verdict: Verdict, pictures) -> str:
    parts = [f'<section class="finding {esc(verdict.status)}" data-id="{esc(verdict.id)}">',
             f"<h3>{status_badge(verdict.status)} {esc(verdict.id)}</h3>", f"<p><em>{esc(verdict.title)}</em></p>",
             f"<p>{esc(verdict.reason)}</p>"]
    if verdict.evidence:
        rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(format_number(v))}</td></tr>"
                       for k, v in verdict.evidence.items())
        parts.append(f'<table class="evidence" style="width:auto">{rows}</table>')
    if verdict.prescription:
        parts.append(f"<p><strong>Try:</strong> {esc(verdict.prescription)}</p>")
    if verdict.references:
        parts.append("<p>Sources:</p><ul>" + "".join(f"<li>{_linked(r)}</li>" for r in verdict.references) + "</ul>")
    parts += [_figure(t, f, svg, with_id=False) for t, f, svg in _verdict_plots(verdict, pictures)]
    return "\n".join(parts + ["</section>"])


def _findings(diagnosis: Diagnosis, pictures) -> list[str]:
    lines = []
    if diagnosis.failed:
        lines += ["<h2>Why it is not learning (likeliest cause first)</h2>"]
        lines += [_finding(v, pictures) for v in diagnosis.failed]
    if diagnosis.warned:
        lines += ["<h2>Learning now, but this will stop it</h2>"]
        lines += [_finding(v, pictures) for v in diagnosis.warned]
    return lines


def _verdict_row(verdict: Verdict, pictures) -> str:
    links = ", ".join(f'<a href="#{_plot_anchor(f)}">{esc(t)}</a>' for t, f, _ in _verdict_plots(verdict, pictures))
    cells = [status_badge(verdict.status),
             f'<strong class="verdict-id">{esc(verdict.id)}</strong><br><span class="muted">{esc(verdict.title)}</span>',
             esc(verdict.reason), f'<span class="evidence">{_evidence_list(verdict)}</span>',
             esc(verdict.prescription), links]
    return (f'<tr class="verdict verdict-{esc(verdict.status)}" data-id="{esc(verdict.id)}" '
            f'data-status="{esc(verdict.status)}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")


def _verdict_table(diagnosis: Diagnosis, pictures) -> list[str]:
    header = "".join(f"<th>{h}</th>" for h in ("status", "hypothesis", "why", "evidence", "prescription", "plot"))
    return ["<h2>Verdicts</h2>", f'<table class="verdicts"><thead><tr>{header}</tr></thead><tbody>',
            *(_verdict_row(v, pictures) for v in diagnosis.verdicts), "</tbody></table>"]


def _curves(pictures) -> list[str]:
    if not pictures:
        return []
    return ["<h2>Curves</h2>", "<div>", *(_figure(t, f, svg, with_id=True) for t, f, svg in pictures), "</div>"]


def _references(diagnosis: Diagnosis) -> list[str]:
    refs = dict.fromkeys(r for v in diagnosis.verdicts if v.status in ("fail", "warn", "inconclusive")
                         for r in v.references)
    if not refs:
        return []
    return ["<h2>References</h2>", "<ol>", *(f"<li>{_linked(r)}</li>" for r in refs), "</ol>"]


def _log(history: History | None) -> list[str]:
    if history is None or not history.log.format:
        return []
    log = history.log
    trainer = TRAINER_NAMES.get(log.trainer, log.trainer) if log.trainer not in ("", log.format) else ""
    lines = ["<h2>Log</h2>", f"<p>Read as {esc(log.format)}" + (f" ({esc(trainer)}'s names)" if trainer else "")
             + f": {esc(log.source)}; {history.steps} training steps, {log.eval_points} held-out evaluations, "
             f"{log.keys} keys.</p>"]
    if log.config_source:
        lines.append(f"<p>Settings from {esc(log.config_source)}.</p>")
    if log.unrecognised:
        lines.append(f"<p><strong>Not recognised ({len(log.unrecognised)})</strong>, so not judged: "
                     + esc(", ".join(log.unrecognised)) + "</p>")
    if log.dropped:
        lines.append(f"<p><strong>{len(log.dropped)} row(s) left out</strong>, the valid rows were judged:</p><ul>"
                     + "".join(f"<li>{esc(where)}: {esc(why)}</li>" for where, why in log.dropped) + "</ul>")
    if log.notes:
        lines.append("<p>Notes:</p><ul>" + "".join(f"<li>{esc(n)}</li>" for n in log.notes) + "</ul>")
    return lines


def _samples(history: History | None) -> list[str]:
    chosen = last_step_samples(history.samples) if history is not None else []
    if not chosen:
        return []
    lines = ["<h2>Sample completions</h2>"]
    for number, sample in enumerate(chosen, 1):
        facts = [f"step {esc(format_number(sample.get('step', '?')))}"]
        facts += [f"{key}={esc(format_number(sample[key]))}" for key in ("reward", "advantage") if key in sample]
        lines += [f"<p><strong>Sample {number}</strong>: {', '.join(facts)}</p>",
                  f"<pre>{esc(sample.get('completion', ''))}</pre>"]
    return lines


def render_html(diagnosis: Diagnosis, history: History | None = None,
                pictures: list[tuple[str, str, str]] | None = None) -> str:
    """report.html: summary, findings (fail, warn) with evidence, prescription, sources and their plots, every
    verdict in one table, the curves, references, how the log was read and sample completions. `pictures` is
    plots.svg_plots(history): [(title, PNG file name, inline svg)]."""
    pictures = pictures or []
    body = (_summary(diagnosis) + _findings(diagnosis, pictures) + _verdict_table(diagnosis, pictures)
            + _curves(pictures) + _references(diagnosis) + _log(history) + _samples(history))
    return "\n".join(_head(diagnosis) + ["<body>", *body, "</body>", "</html>"]) + "\n"
