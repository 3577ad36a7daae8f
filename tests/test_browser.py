"""report.html in a real browser: headless Chromium renders it, and the rows it shows are diagnosis.json's verdicts.

`make test-browser` installs Chromium (Debian package `chromium`) when it is missing and runs these; without it they
are skipped, saying so.
"""
import json
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

from flatline.harness.browser import WINDOW, find_chromium, rendered_dom, take_screenshot
from flatline.harness.cli import main

ROOT = Path(__file__).resolve().parents[1]
# A verl log whose grad_norm turns NaN at step 4: one fail, the rest pass or skipped.
LOG = ROOT / "tests/fixtures/logs/verl/v0.9.1"

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(find_chromium() is None,
                                 reason="no Chromium on PATH: `make test-browser` installs it (apt-get install -y chromium)")]


class Rows(HTMLParser):
    """(data-id, data-status, the row's visible text) of every verdict row."""

    def __init__(self, dom: str):
        super().__init__(convert_charrefs=True)
        self.rows, self._row, self._depth = [], None, 0
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-status" in attrs:
            self._row = [attrs["data-id"], attrs["data-status"], []]
            self.rows.append(self._row)

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._row is not None:
            self._row[2].append(data)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser") / "verl-run"
    assert main(["diagnose", str(LOG), "--out", str(out), "--format", "json"]) == 0
    return out


def test_the_rendered_verdict_rows_are_diagnosis_json(run_dir):
    expected = json.loads((run_dir / "diagnosis.json").read_text(encoding="utf-8"))["verdicts"]
    rows = Rows(rendered_dom(run_dir / "report.html")).rows
    assert [(ident, status) for ident, status, _ in rows] == [(v["id"], v["status"]) for v in expected]
    assert rows[0][:2] == ["gradients.non_finite", "fail"]
    symbols = {"fail": "✖", "warn": "▲", "inconclusive": "?", "pass": "✔", "skipped": "–"}
    for (ident, status, text), verdict in zip(rows, expected):
        shown = " ".join(" ".join(text).split())
        assert shown.startswith(f"{symbols[status]} {status} {ident}"), shown  # a symbol and a word, not colour alone
        assert " ".join(verdict["reason"].split()) in shown


def test_the_screenshot_is_the_window_chromium_was_given(run_dir, tmp_path):
    shot = take_screenshot(run_dir / "report.html", tmp_path / "report.png")
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == WINDOW
