"""How soon `flatline watch` flags a collapse in a log that is still being written.

    python bench/watch_latency.py                      # TRL console log, a row every 0.5 s, --interval 2, 3 runs
    python bench/watch_latency.py --format jsonl --row-every 0.2 --interval 1

A writer appends a GRPO run's logged rows, in TRL's names, to a log (a TRL console capture: one Python-literal dict
per logged step among tqdm bars; or JSON Lines), one row every ROW_EVERY seconds; the reward climbs and then
collapses at COLLAPSE_AT the way the collapses in real runs do (completions run into max_completion_length, the
clipped ratio goes to 1, the reward falls to 0, the groups lose their variance). `flatline watch LOG --interval S`
runs beside it as its own process. Printed: the first step at which judging the log's prefix (rows up to that
step, in-process) fails, when the writer wrote that row, when watch printed its fail line, the delay between the
two against the interval (a look every S seconds plus one read and judgement: the delay should stay below S plus
the judgement's time), and watch's exit code.

Leaves out: the judges' own lead time on real runs (bench/real_logs.py), logs written by many processes at once.
"""
from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STEPS = 80
COLLAPSE_AT = 50  # the first row of the collapse
MAX_COMPLETION_LENGTH = 1024


def collapse_rows(steps: int = STEPS, collapse_at: int = COLLAPSE_AT, seed: int = 0) -> list[dict]:
    """Rows as TRL's GRPOTrainer logs them: a reward rising 0.3 -> 0.8 with completions near 300 tokens; from
    `collapse_at` the completions run to the length limit within 3 rows while the reward and its spread fall to 0."""
    rng = random.Random(seed)
    rows = []
    for step in range(1, steps + 1):
        gone = min(1.0, max(0, step - collapse_at + 1) / 4)  # 0 before the collapse, 1 four rows into it
        reward = (0.3 + 0.5 * min(step, collapse_at) / collapse_at + 0.05 * rng.random()) * (1 - gone)
        length = 300 + 10 * rng.random() + (MAX_COMPLETION_LENGTH - 300) * min(1.0, gone * 1.5)
        rows.append({"loss": round(0.01 * rng.random(), 4), "grad_norm": round(0.5 + 0.1 * rng.random(), 4),
                     "learning_rate": 1e-06, "num_tokens": 4096.0 * step,
                     "completions/mean_length": round(length, 2), "completions/max_length": MAX_COMPLETION_LENGTH,
                     "completions/clipped_ratio": round(min(1.0, 0.05 + 0.02 * rng.random() + gone), 4),
                     "rewards/correctness/mean": round(reward, 4), "reward": round(reward, 4),
                     "reward_std": round(0.3 * (1 - gone), 4),
                     "frac_reward_zero_std": round(0.2 + 0.05 * rng.random() + 0.75 * gone, 4),
                     "entropy": round(0.3 + 0.02 * rng.random(), 4), "kl": round(0.001 * step, 5),
                     "epoch": round(step / steps, 4), "step": step})
    return rows


def console_lines(row: dict, total: int) -> str:
    """What a TRL run prints for one logged step: the tqdm bar's carriage-return updates, then the dict (without
    its step: TRL prints none) as `print(logs)` writes it."""
    step = row["step"]
    bar = "".join(f"\r {100 * s // total:3d}%|{'#' * (10 * s // total):<10}| {s}/{total} [00:{s:02d}<01:00, 1.9s/it]"
                  for s in (step - 1, step))
    logs = {k: v for k, v in row.items() if k != "step"}
    return f"{bar}{logs}\n"


def jsonl_line(row: dict) -> str:
    import json

    return json.dumps(row) + "\n"


def first_failing_step(rows: list[dict], line, total: int, folder: Path) -> int | None:
    """The first step whose prefix fails, judged in-process on the same text the writer writes."""
    from flatline.common.errors import FlatlineError
    from flatline.diagnostics.history import load_history
    from flatline.diagnostics.judge import judge

    path = folder / "prefix.log"
    text = ""
    for row in rows:
        text += line(row, total)
        path.write_text(text)
        try:
            history = load_history(path)
        except FlatlineError:  # too short to be read yet: cannot fail
            continue
        if judge(history).failed:
            return row["step"]
    return None


@dataclass
class Timing:
    """One watched run: when each row was written, what watch printed when (seconds from watch's start)."""

    expected: int | None  # the first step whose prefix fails, judged in-process
    written: dict[int, float]  # step -> when the writer had appended its row
    printed: list[tuple[float, str]]  # (when, line) of watch's stdout
    code: int
    notes: list[str]

    @property
    def fail_line(self) -> tuple[float, str] | None:
        return next(((t, text) for t, text in self.printed if " fail: " in text), None)

    @property
    def delay(self) -> float | None:
        """From the row whose prefix first fails to watch's fail line."""
        if self.expected is None or self.fail_line is None or self.expected not in self.written:
            return None
        return self.fail_line[0] - self.written[self.expected]


def run(format: str, row_every: float, interval: float, steps: int, collapse_at: int, seed: int) -> Timing:
    with tempfile.TemporaryDirectory(prefix="watch-latency-") as folder:
        return _run(Path(folder), format, row_every, interval, steps, collapse_at, seed)


def _run(folder: Path, format: str, row_every: float, interval: float, steps: int, collapse_at: int,
         seed: int) -> Timing:
    rows = collapse_rows(steps, collapse_at, seed)
    line = console_lines if format == "trl-console" else (lambda row, total: jsonl_line(row))
    expected = first_failing_step(rows, line, steps, folder)
    log = folder / ("train.log" if format == "trl-console" else "metrics.jsonl")
    log.write_text(line(rows[0], steps))
    watcher = subprocess.Popen([sys.executable, "-m", "flatline.harness.cli", "watch", str(log), "--interval",
                                f"{interval:g}", "--max-wait", f"{max(10.0, 5 * interval):g}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    written: dict[int, float] = {rows[0]["step"]: 0.0}

    def writer():
        for row in rows[1:]:
            time.sleep(row_every)
            if watcher.poll() is not None:
                return
            with log.open("a") as handle:
                handle.write(line(row, steps))
            written[row["step"]] = time.monotonic() - started

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    printed = [(time.monotonic() - started, text.rstrip("\n")) for text in watcher.stdout]
    code = watcher.wait()
    thread.join()
    return Timing(expected, written, printed, code, watcher.stderr.read().strip().splitlines())


def report(timings: list[Timing], format: str, row_every: float, interval: float, collapse_at: int) -> str:
    lines = [f"flatline watch on a growing {format} log: a row every {row_every:g} s, --interval {interval:g} s, "
             f"collapse planted from step {collapse_at}, {len(timings)} runs (seeds 0..{len(timings) - 1})", "",
             f"{'seed':>4} {'first failing prefix':>20} {'row written':>11} {'fail printed':>12} {'delay':>7} "
             f"{'exit':>4}  printed"]
    for seed, t in enumerate(timings):
        if t.expected is None:
            lines.append(f"{seed:>4} {'never':>20}")
            continue
        fail = t.fail_line
        lines.append(f"{seed:>4} {'step ' + str(t.expected):>20} {t.written[t.expected]:>10.2f}s "
                     f"{(f'{fail[0]:.2f}s' if fail else 'none'):>12} "
                     f"{(f'{t.delay:.2f}s' if t.delay is not None else '-'):>7} {t.code:>4}  "
                     f"{fail[1][:90] if fail else ''}")
    delays = [t.delay for t in timings if t.delay is not None]
    if delays:
        lines += ["", f"delay from the row to the fail line: median {statistics.median(delays):.2f} s, max "
                  f"{max(delays):.2f} s, against the {interval:g} s interval (within one interval: "
                  f"{sum(d <= interval for d in delays)} of {len(delays)})"]
    first = timings[0]
    if first.expected is not None:
        shown = range(max(1, first.expected - 3), first.expected + 3)
        lines += ["", "seed 0, the rows around the first failing prefix: " + ", ".join(
            f"step {s} at {first.written[s]:.2f} s" for s in shown if s in first.written)]
        lines += ["seed 0, watch's output:"] + [f"  {t:6.2f} s  {text[:140]}" for t, text in first.printed]
        lines += [f"  stderr: {text[:140]}" for text in first.notes]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", choices=("trl-console", "jsonl"), default="trl-console")
    parser.add_argument("--row-every", type=float, default=0.5, help="seconds between rows (default 0.5)")
    parser.add_argument("--interval", type=float, default=2.0, help="watch's --interval (default 2)")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--collapse-at", type=int, default=COLLAPSE_AT)
    parser.add_argument("--repeats", type=int, default=3, help="runs, one seed each (default 3)")
    args = parser.parse_args()
    timings = [run(args.format, args.row_every, args.interval, args.steps, args.collapse_at, seed)
               for seed in range(args.repeats)]
    print(report(timings, args.format, args.row_every, args.interval, args.collapse_at))


if __name__ == "__main__":
    main()
