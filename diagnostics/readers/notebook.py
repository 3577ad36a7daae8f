"""A Jupyter notebook (.ipynb, read with nbformat) that trained a model, in the forms its outputs take:
  1. the HTML progress table HF's NotebookProgressCallback draws and redraws (`Step | Training Loss | reward |
     reward_std | ...`); the saved notebook holds its last state, one row per logged step, with the step;
  2. the same table as plain text (tab- or column-aligned), as some exports keep it;
  3. rows printed as Python dicts in stream outputs (console.py reads them, steps as it says);
  4. verl's console lines (`step:N - key:value`) printed by a verl run started from the notebook.
The table wins when there is one (it carries the step). Display names are turned back into the logged keys:
`Training Loss` -> `loss`, `Validation Loss` -> `eval_loss`, `rewards / x / mean` -> `rewards/x/mean`. When several
cells trained, the last table is read and a note says so.

    raw = read_notebook(Path("Qwen2.5_(3B)-GRPO.ipynb"))
"""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from flatline.diagnostics.readers.base import LogError, RawLog, Record, read_text
from flatline.diagnostics.readers.console import assign_steps, printed_rows, strip_ansi
from flatline.diagnostics.readers.verl_console import add_step_lines

# NotebookProgressCallback's display names of the keys it renames (transformers/utils/notebook.py).
DISPLAY_NAMES = {"Step": "step", "Epoch": "epoch", "Training Loss": "loss", "Validation Loss": "eval_loss"}


class _Tables(HTMLParser):
    """Every <table> of an HTML fragment as rows of cell texts."""

    def __init__(self):
        super().__init__()
        self.tables, self._row, self._cell = [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row:
                self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def key_name(display: str) -> str:
    display = " ".join(display.split())
    return DISPLAY_NAMES.get(display, display.replace(" / ", "/"))


def _is_progress_table(rows: list[list[str]]) -> bool:
    return len(rows) >= 2 and rows[0] and rows[0][0].strip() == "Step"


def html_tables(html: str) -> list[list[list[str]]]:
    parser = _Tables()
    try:
        parser.feed(html)
        parser.close()
    except (AssertionError, ValueError):
        return []
    return [t for t in parser.tables if _is_progress_table(t)]


def text_tables(text: str) -> list[list[list[str]]]:
    """A progress table printed as text: a header line starting with `Step`, columns split by tabs or 2+ spaces."""
    tables, current = [], None
    for line in strip_ansi(text).splitlines():
        cells = [c for c in re.split(r"\t|\s{2,}", line.strip()) if c]
        if cells and cells[0] == "Step" and len(cells) > 1:
            current = [cells]
            tables.append(current)
        elif current is not None and cells and cells[0].isdigit() and len(cells) == len(current[0]):
            current.append(cells)
        else:
            current = None
    return [t for t in tables if _is_progress_table(t)]


def _output_text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def _scan(notebook) -> tuple[list, str]:
    """The progress tables of every output (HTML first, else text) and the stream text of every output, in order."""
    tables, streams = [], []
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    for cell in cells if isinstance(cells, list) else []:
        outputs = cell.get("outputs") if isinstance(cell, dict) and cell.get("cell_type") == "code" else None
        for output in outputs if isinstance(outputs, list) else []:
            if not isinstance(output, dict):
                continue
            kind = output.get("output_type")
            if kind == "stream":
                streams.append(_output_text(output.get("text")))
            elif kind in ("display_data", "execute_result"):
                data = output.get("data") if isinstance(output.get("data"), dict) else {}
                found = html_tables(_output_text(data.get("text/html"))) if "text/html" in data else []
                if not found and "text/plain" in data:
                    found = text_tables(_output_text(data["text/plain"]))
                tables += found
            elif kind == "error":
                streams.append("\n")
    return tables, "\n".join(streams)


def _records_from_table(path: Path, table: list[list[str]], raw: RawLog) -> None:
    header = [key_name(h) for h in table[0]]
    for index, cells in enumerate(table[1:], start=1):
        row = {h: c for h, c in zip(header, cells) if c not in ("", "No log")}
        where = f"{path}: progress table row {index}"
        step = row.pop("step", None)
        raw.records.append(Record(step, row, where))


def read_notebook(path: Path, logging_steps: int | None = None) -> RawLog:
    import nbformat

    text = read_text(path, "notebook")
    try:
        notebook = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    except Exception as exc:  # nbformat raises its own, json's and validation errors alike: all mean "not this"
        raise LogError(f"{path}: not a readable Jupyter notebook ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); pass the .ipynb as saved") from None
    raw = RawLog("notebook", path, trainer="trl", null_is_nan=True, run_name=path.stem)
    tables, streams = _scan(notebook)
    if tables:
        table = tables[-1]
        if len(tables) > 1:
            raw.notes.append(f"{len(tables)} training progress tables in this notebook: read the last one "
                             f"({len(table) - 1} rows)")
        raw.notes.append("rows read from the notebook's training progress table (HF NotebookProgressCallback)")
        _records_from_table(path, table, raw)
        return raw
    rows = printed_rows(streams)
    if not rows:
        add_step_lines(streams, path, raw)  # verl run from a notebook prints its console lines
        if raw.records:
            raw.trainer, raw.restarts = "verl", True
            raw.notes.append("rows read from verl's console lines printed in the notebook's output")
            return raw
        raise LogError(f"{path}: no training progress table (Step | Training Loss | ...) and no printed log rows "
                       "in this notebook's outputs; save the notebook after training ran, with its outputs")
    assign_steps(rows, path, raw, logging_steps)
    raw.notes.append("rows read from the notebook's printed output")
    return raw
