"""CSV and TSV: a plain table (a header, one row per step) or a W&B panel export ("Export CSV").

A W&B export's first column is the panel's x axis (`Step`, a custom step metric such as `train/global_step`, or a
time axis), then per run and metric `"<run> - <metric>"` with `__MIN` and `__MAX` bands (dropped: for one run they
equal the value; for a group, `"Group: <name> - <metric>"`, the value is the group's mean). Run names may contain
" - ", so headers split on the last one. An export may hold several runs: read_table_runs gives one RawLog each
(`flatline diagnose` and `compare` judge each), read_table the first. W&B line plots sample a line to about 1500
points, so an export may be down-sampled. Cells: empty = not logged at that step, `nan`/`inf` kept, anything else not a number is
left out and counted.

    log = read_table(Path("wandb_export_2026-11-23T19_14_00.123+00_00.csv"), "csv")
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

from flatline.diagnostics.readers.base import LogError, RawLog, Record, read_text
from flatline.diagnostics.readers.jsonl import records_from_rows

WANDB_BAND = re.compile(r"__(MIN|MAX)$")
# x axes of a W&B panel that are times, not steps (W&B "Export CSV"; see the module docstring)
TIME_AXES = ("Relative Time (Process)", "Relative Time (Wall)", "Wall Time")
# W&B line plots sample each line to this many points (W&B line-plot reference docs).
WANDB_PLOT_POINTS = 1500


def is_wandb_export(header: list[str]) -> bool:
    return any(WANDB_BAND.search(h) for h in header) and any(" - " in h for h in header)


def _cells(path: Path, text: str, delimiter: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    rows = []
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                rows.append((reader.line_num, cells))
    except csv.Error as exc:
        raise LogError(f"{path}:{reader.line_num}: not readable as {'TSV' if delimiter == chr(9) else 'CSV'} "
                       f"({exc})") from None
    if not rows:
        raise LogError(f"{path}: is empty; the run wrote nothing yet, or the file was truncated")
    return [h.strip() for h in rows[0][1]], rows[1:]


def _whole_rows(path: Path, header: list[str], body, raw: RawLog) -> list[tuple[int, list[str]]]:
    kept = []
    for line, cells in body:
        if len(cells) != len(header):
            raw.dropped.append((f"{path}:{line}", f"{len(cells)} cells for {len(header)} columns (a torn line?)"))
        else:
            kept.append((line, cells))
    return kept


def _plain(path: Path, header: list[str], body, raw: RawLog) -> None:
    rows = []
    for line, cells in _whole_rows(path, header, body, raw):
        row = {h: c.strip() for h, c in zip(header, cells) if h and c.strip() != ""}  # "": a pandas index column
        rows.append((f"{path}:{line}", row))
    records_from_rows(rows, raw)


def _wandb_export(path: Path, header: list[str], body, raw: RawLog) -> list[RawLog]:
    """One RawLog per run of the export (the first fills `raw`)."""
    x_axis = header[0]
    runs: dict[str, dict[str, int]] = {}
    for index, column in enumerate(header[1:], start=1):
        if WANDB_BAND.search(column) or " - " not in column:
            continue
        run, metric = column.rsplit(" - ", 1)
        runs.setdefault(run, {})[metric] = index
    if not runs:
        raise LogError(f"{path}: a W&B export without any '<run> - <metric>' column")
    body = _whole_rows(path, header, body, raw)
    out = []
    for number, (run, columns) in enumerate(runs.items()):
        one = raw if number == 0 else RawLog(raw.format, path, run_name=run, restarts=False)
        one.run_name = run
        if len(runs) > 1:
            one.notes.append(f"run {number + 1} of {len(runs)} in this W&B export ({', '.join(map(repr, runs))})")
        _wandb_run(path, x_axis, columns, body, one)
        out.append(one)
    return out


def _wandb_run(path: Path, x_axis: str, columns: dict[str, int], body, raw: RawLog) -> None:
    run = raw.run_name
    if run.startswith("Group: "):
        raw.notes.append(f"{run!r} is a W&B group: each value is the mean over its runs")
    raw.notes.append(f"a W&B panel export may be down-sampled (line plots keep about {WANDB_PLOT_POINTS} points)")
    time_axis = x_axis in TIME_AXES
    if time_axis and "_step" not in columns:
        raw.notes.append(f"the export's x axis is {x_axis!r}, a time: rows are numbered in file order")
    records = []
    for line, cells in body:
        values = {m: cells[i].strip() for m, i in columns.items() if cells[i].strip() != ""}
        if not any(m != "_step" for m in values):
            continue  # this run has no point at this x
        if time_axis:
            step = values.pop("_step", None) if "_step" in columns else len(records) + 1
        else:
            step = cells[0].strip()
            values.pop("_step", None)
            if x_axis != "Step":
                values[x_axis] = step  # a custom x metric such as train/global_step
        records.append(Record(step, values, f"{path}:{line}"))
    raw.records = records


def read_table_runs(path: Path, fmt: str) -> list[RawLog]:
    """Every run of a table: one for a plain table, one per run of a W&B export."""
    text = read_text(path, "table")
    first = next(iter(text.lstrip().splitlines()), "")  # "\x1c" alone is whitespace to lstrip
    delimiter = "\t" if fmt == "tsv" or ("\t" in first and "," not in first) else ","
    header, body = _cells(path, text, delimiter)
    if not body:
        raise LogError(f"{path}: has a header but no rows")
    raw = RawLog("tsv" if delimiter == "\t" else "csv", path, run_name=path.stem, restarts=False)
    if is_wandb_export(header):
        return _wandb_export(path, header, body, raw)
    _plain(path, header, body, raw)
    return [raw]


def read_table(path: Path, fmt: str) -> RawLog:
    """The table's first run (read_table_runs gives them all)."""
    return read_table_runs(path, fmt)[0]
