"""`flatline watch`: the pure pieces (how the file changed, which verdicts changed, rows across a rotation) and the
loop on logs written while it watches: a writer in lockstep with the loop (each look at the log finds one more row:
the fail must be printed at the first step whose prefix fails, no sooner, no later), a writer thread that runs on its
own clock, rotation, truncation, and the CLI's exit codes."""
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.watch_latency import collapse_rows, console_lines, jsonl_line  # noqa: E402
from flatline.common.errors import FlatlineError  # noqa: E402
from flatline.diagnostics import judge as judge_module  # noqa: E402
from flatline.diagnostics.history import load_history  # noqa: E402
from flatline.harness.cli import main  # noqa: E402
from flatline.harness.watch import (Change, Fingerprint, Options, change_line, continued_rows,  # noqa: E402
                                    how_changed, verdict_changes, watch)

COLLAPSE_AT = 50


# -- pure pieces ------------------------------------------------------------------------------------------------------


def test_how_changed_tells_growth_rotation_and_truncation_apart():
    before = Fingerprint("log", inode=7, size=100, mtime_ns=1)
    assert how_changed(before, before) == "same"
    assert how_changed(before, Fingerprint("log", 7, 140, 2)) == "grew"
    assert how_changed(before, Fingerprint("log", 7, 100, 2)) == "grew"  # rewritten in place, same size
    assert how_changed(before, Fingerprint("log", 8, 400, 2)) == "replaced"
    assert how_changed(before, Fingerprint("checkpoint-20/trainer_state.json", 7, 400, 2)) == "replaced"
    assert how_changed(before, Fingerprint("log", 7, 10, 2)) == "truncated"
    assert how_changed(before, None) == "gone"
    assert how_changed(None, before) == "appeared"
    assert how_changed(None, None) == "same"


def test_continued_rows_keep_the_past_of_a_resumed_run_and_drop_a_restarted_one():
    earlier = [{"step": s} for s in (1, 2, 3, 4)]
    assert continued_rows(earlier, [{"step": 5}, {"step": 6}]) == [{"step": s} for s in (1, 2, 3, 4, 5, 6)]
    assert continued_rows(earlier, [{"step": 3}, {"step": 4}]) == [{"step": s} for s in (1, 2, 3, 4)]  # resumed at 3
    assert continued_rows(earlier, [{"step": 1}]) == [{"step": 1}]  # started again
    assert continued_rows(earlier, []) == earlier


def test_verdict_changes_report_flagged_moves_once():
    before = {"a": ("pass", ""), "b": ("warn", "w"), "c": ("inconclusive", ""), "d": ("fail", "f")}
    after = {"a": ("fail", "now a"), "b": ("pass", "fine"), "c": ("pass", ""), "d": ("fail", "f again"),
             "e": ("warn", "new id")}
    assert verdict_changes(before, after) == [Change("a", "pass", "fail", "now a"), Change("b", "warn", "pass", "fine"),
                                              Change("e", "skipped", "warn", "new id")]
    assert verdict_changes(after, after) == []
    assert verdict_changes(None, after) == [Change("a", None, "fail", "now a"), Change("d", None, "fail", "f again"),
                                            Change("e", None, "warn", "new id")]


def test_change_line():
    assert change_line(40.0, Change("length.truncation", "pass", "fail", "cut")) == \
        "step 40: length.truncation pass -> fail: cut"
    assert change_line(12, Change("entropy.collapse", None, "warn", "low")) == "step 12: entropy.collapse warn: low"


# -- the loop, with a writer in lockstep ------------------------------------------------------------------------------


class Lockstep:
    """Writes the next row of `rows` each time the loop sleeps, so every look at the log finds exactly one more row;
    `then` runs after the last row (a rotation, a truncation)."""

    def __init__(self, path: Path, rows, line=jsonl_line, start: int = 1):
        self.path, self.rows, self.line = path, list(rows), line
        path.write_text("".join(line(r) for r in self.rows[:start]))
        self.next = start
        self.actions: list = []

    def sleep(self, seconds):
        if self.next < len(self.rows):
            with self.path.open("a") as handle:
                handle.write(self.line(self.rows[self.next]))
            self.next += 1
        elif self.actions:
            self.actions.pop(0)()
        else:
            raise KeyboardInterrupt  # the writer is done: stop as Ctrl-C would


def first_failing_step(path: Path, rows, line=jsonl_line) -> int:
    """The first step whose prefix fails, judged in-process (a prefix too short to be read cannot fail)."""
    for n in range(1, len(rows) + 1):
        path.write_text("".join(line(r) for r in rows[:n]))
        try:
            history = load_history(path)
        except FlatlineError:
            continue
        if judge_module.judge(history).failed:
            return rows[n - 1]["step"]
    raise AssertionError("the planted collapse never fails")


def test_lockstep_writer_fail_printed_at_the_first_failing_prefix(tmp_path):
    rows = collapse_rows(collapse_at=COLLAPSE_AT)
    expected = first_failing_step(tmp_path / "prefix.jsonl", rows)
    assert expected >= COLLAPSE_AT  # the healthy climb before the collapse never fails
    writer = Lockstep(tmp_path / "metrics.jsonl", rows, start=10)
    lines, notes = [], []
    code = watch(writer.path, Options(interval=1.0), out=lines.append, note=notes.append, sleep=writer.sleep)
    assert code == 1
    fails = [text for text in lines if text.startswith(f"step {expected}: ") and "-> fail: " in text]
    assert fails, lines
    steps = [int(text.split(":")[0].split()[1]) for text in lines]
    assert steps == sorted(steps) and steps[-1] == expected  # in order, and nothing after the fail
    assert not [text for text in lines if int(text.split(":")[0].split()[1]) < expected and " fail: " in text]
    assert lines[-1].startswith(f"step {expected}: Not learning because: ")
    assert writer.next == expected  # it stopped at that row
    assert notes[0].endswith("10 rows judged up to step 10: 0 fail, 0 warn; watching every 1 s")


def test_healthy_log_is_watched_to_the_end_quietly(tmp_path):
    rows = collapse_rows(steps=COLLAPSE_AT - 1, collapse_at=COLLAPSE_AT)  # the climb alone
    writer = Lockstep(tmp_path / "metrics.jsonl", rows, start=5)
    lines, notes = [], []
    assert watch(writer.path, Options(interval=1.0), out=lines.append, note=notes.append, sleep=writer.sleep) == 0
    assert not [text for text in lines if "fail" in text], lines
    assert notes[-1] == "stopped (Ctrl-C); no verdict at or above --fail-on"


def judged_steps(monkeypatch) -> list[list]:
    """Record the steps of every history the loop judges (the real judge still judges)."""
    seen, real = [], judge_module.judge

    def recording(history, **kwargs):
        seen.append([row["step"] for row in history.rows])
        return real(history, **kwargs)

    monkeypatch.setattr(judge_module, "judge", recording)
    return seen


def test_rotation_keeps_the_rows_before_the_new_file(tmp_path, monkeypatch):
    seen = judged_steps(monkeypatch)
    rows = collapse_rows(steps=40, collapse_at=COLLAPSE_AT)
    writer = Lockstep(tmp_path / "metrics.jsonl", rows[:20], start=18)

    def rotate():  # logrotate's create mode: the old file moves away, the trainer writes a new one
        writer.path.rename(tmp_path / "metrics.jsonl.1")
        writer.path.write_text("".join(jsonl_line(r) for r in rows[20:30]))

    writer.actions = [rotate, lambda: None]
    notes = []
    assert watch(writer.path, Options(interval=1.0), out=lambda text: None, note=notes.append,
                 sleep=writer.sleep) == 0
    assert seen == [list(range(1, 19)), list(range(1, 20)), list(range(1, 21)), list(range(1, 31))]
    assert f"{writer.path}: replaced; reading it anew" in notes


def test_truncation_by_a_restarted_run_judges_the_new_run_alone(tmp_path, monkeypatch):
    seen = judged_steps(monkeypatch)
    rows = collapse_rows(steps=30, collapse_at=COLLAPSE_AT)
    writer = Lockstep(tmp_path / "metrics.jsonl", rows, start=29)

    def restart():  # `python train.py > metrics.jsonl` again: the file is cut and a new run starts at step 1
        writer.path.write_text("".join(jsonl_line(r) for r in rows[:12]))

    writer.actions = [restart]
    notes = []
    assert watch(writer.path, Options(interval=1.0), out=lambda text: None, note=notes.append,
                 sleep=writer.sleep) == 0
    assert seen == [list(range(1, 30)), list(range(1, 31)), list(range(1, 13))]
    assert f"{writer.path}: truncated; reading it anew" in notes


def test_an_output_directory_is_followed_to_its_newest_checkpoint(tmp_path, monkeypatch):
    from bench.trl_state import write_trainer_state

    seen = judged_steps(monkeypatch)
    rows = collapse_rows(steps=30, collapse_at=COLLAPSE_AT)
    write_trainer_state(tmp_path / "checkpoint-10", rows[:10], 30, 10)
    saves = iter([lambda: write_trainer_state(tmp_path / "checkpoint-20", rows[:20], 30, 10), lambda: None])

    def sleep(seconds):
        try:
            next(saves)()
        except StopIteration:
            raise KeyboardInterrupt from None

    notes = []
    assert watch(tmp_path, Options(interval=1.0), out=lambda text: None, note=notes.append, sleep=sleep) == 0
    assert seen == [list(range(1, 11)), list(range(1, 21))]  # each checkpoint's log_history holds the whole past
    assert f"now reading {tmp_path / 'checkpoint-20' / 'trainer_state.json'}" in notes


def test_bytes_without_a_new_row_are_not_judged_again(tmp_path, monkeypatch):
    seen = judged_steps(monkeypatch)
    path = tmp_path / "metrics.jsonl"
    rows = collapse_rows(steps=12)
    path.write_text("".join(jsonl_line(r) for r in rows))
    looks = iter([lambda: path.open("a").write("\n\n"), lambda: None])

    def sleep(seconds):
        try:
            next(looks)()
        except StopIteration:
            raise KeyboardInterrupt from None

    assert watch(path, Options(interval=1.0), out=lambda text: None, note=lambda text: None, sleep=sleep) == 0
    assert len(seen) == 1


def test_an_empty_log_waits_then_is_judged(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("")
    rows = collapse_rows(steps=8)
    notes = []

    def sleep(seconds):
        if path.stat().st_size:
            raise KeyboardInterrupt
        path.write_text("".join(jsonl_line(r) for r in rows))

    assert watch(path, Options(interval=1.0), out=lambda text: None, note=notes.append, sleep=sleep) == 0
    assert notes[0] == f"waiting: {path}: is empty; the run wrote nothing yet, or the file was truncated"
    assert notes[1].endswith("8 rows judged up to step 8: 0 fail, 0 warn; watching every 1 s")


def test_max_wait_stops_an_idle_watch(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(jsonl_line(r) for r in collapse_rows(steps=8)))
    clock = iter(range(0, 100, 5))
    notes = []
    code = watch(path, Options(interval=5.0, max_wait=12), note=notes.append, out=lambda text: None,
                 clock=lambda: next(clock), sleep=lambda seconds: None)
    assert code == 0 and notes[-1] == "no change to the log for 12 s; no verdict at or above --fail-on"


# -- a writer on its own clock, through the CLI ------------------------------------------------------------------------


def write_rows_in_background(path: Path, rows, line, every: float, written: dict) -> threading.Thread:
    def writer():
        for row in rows:
            time.sleep(every)
            with path.open("a") as handle:
                handle.write(line(row))
            written[row["step"]] = time.monotonic()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    return thread


def test_watch_cli_flags_a_collapse_written_by_another_thread(tmp_path, capsys):
    rows = collapse_rows(collapse_at=COLLAPSE_AT)
    expected = first_failing_step(tmp_path / "prefix.jsonl", rows)
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(jsonl_line(r) for r in rows[:20]))
    written: dict = {}
    thread = write_rows_in_background(path, rows[20:], jsonl_line, 0.02, written)
    code = main(["watch", str(path), "--interval", "0.1", "--max-wait", "20"])
    printed = time.monotonic()
    thread.join()
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    fail_steps = [int(text.split(":")[0].split()[1]) for text in out if "fail: " in text]
    assert fail_steps and fail_steps[0] >= expected  # never before the rows that show it
    assert printed - written[expected] < 0.1 + 5.0  # one interval, plus a read and a judgement on a shared CPU


def test_watch_cli_usage_errors_exit_2(tmp_path, capsys):
    assert main(["watch", str(tmp_path / "missing.log")]) == 2
    assert "missing.log: does not exist" in capsys.readouterr().err
    path = tmp_path / "metrics.jsonl"
    path.write_text(jsonl_line(collapse_rows(steps=1)[0]))
    assert main(["watch", str(path), "--interval", "0"]) == 2
    assert capsys.readouterr().err.strip() == "flatline: error: --interval 0: must be above 0 seconds"
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\x00\x01" * 100)
    assert main(["watch", str(binary), "--once"]) == 2
    assert "is a binary file" in capsys.readouterr().err


def test_watch_process_stops_with_exit_0_on_sigterm(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(jsonl_line(r) for r in collapse_rows(steps=12)))
    process = subprocess.Popen([sys.executable, "-m", "flatline.harness.cli", "watch", str(path), "--interval", "0.2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = iter(process.stderr.readline, "")
        first = next(line for line in lines if "rows judged" in line)  # the first judgement's note: it is watching
        assert "12 rows judged up to step 12" in first
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert "stopped (SIGTERM); no verdict at or above --fail-on" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()


# -- a growing TRL console capture (`python train.py | tee train.log`) -------------------------------------------------


def console_line(row):
    return console_lines(row, total=80)


def test_lockstep_trl_console_log_fail_printed_at_the_first_failing_prefix(tmp_path):
    rows = collapse_rows(collapse_at=COLLAPSE_AT)
    expected = first_failing_step(tmp_path / "prefix.log", rows, console_line)
    assert expected >= COLLAPSE_AT
    writer = Lockstep(tmp_path / "train.log", rows, line=console_line, start=10)
    lines, notes = [], []
    code = watch(writer.path, Options(interval=1.0), out=lines.append, note=notes.append, sleep=writer.sleep)
    assert code == 1
    assert [text for text in lines if text.startswith(f"step {expected}: ") and "-> fail: " in text], lines
    assert not [text for text in lines if int(text.split(":")[0].split()[1]) < expected and " fail: " in text]
    assert writer.next == expected  # printed at the look that first saw the row: within one interval
    assert notes[0].endswith("10 rows judged up to step 10: 0 fail, 0 warn; watching every 1 s")


def test_watch_cli_flags_a_collapse_in_a_trl_console_log_within_one_interval(tmp_path, capsys):
    rows = collapse_rows(collapse_at=COLLAPSE_AT)
    expected = first_failing_step(tmp_path / "prefix.log", rows, console_line)
    path = tmp_path / "train.log"
    dataset_bar = "Map: 100%|##########| 7473/7473 [00:01<00:00, 5131.20 examples/s]\n"
    path.write_text(dataset_bar + "".join(console_line(r) for r in rows[:20]))
    written: dict = {}
    interval = 0.5
    thread = write_rows_in_background(path, rows[20:], console_line, 0.05, written)
    code = main(["watch", str(path), "--interval", f"{interval}", "--max-wait", "20"])
    printed = time.monotonic()
    thread.join()
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    fail_steps = [int(text.split(":")[0].split()[1]) for text in out if "fail: " in text]
    assert fail_steps and expected <= fail_steps[0] <= expected + int(interval / 0.05) + 2
    assert printed - written[expected] < interval + 5.0  # one interval, plus a read and a judgement on a shared CPU
