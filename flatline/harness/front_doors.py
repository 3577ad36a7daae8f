"""The README's three front doors: each command it shows, how to run it, and the part of its output it quotes.

    text = regenerate(README.read_text())        # the README with every front-door block refreshed
    differing(README.read_text())                # names of the blocks whose quoted output is stale

A README block is a marker line and a fenced block holding `$ COMMAND` and then the quoted output:

    <!-- front-door: diagnose -->
    ```text
    $ flatline diagnose tests/fixtures/logs/verl/v0.9.1
    ...
    ```

Every door's command is run, by `make docs` (regenerate) and by tests/test_docs.py (differing), through the same
`run`: in a scratch folder (the log book there too), with `flatline`, `python` and `pytest` taken from this Python's
environment and the repository's files passed by their full path, at a terminal width of 80 columns. What is compared
is `normalised`: only what varies from run to run of the same command is rewritten, namely timings (`N s`; pytest's
`(H:MM:SS)`, and the `=` fill of its last line, which narrows as the time grows), the date and time in run names
(`bandit-1207-173611`), and the scratch folder's path (written relative to it). The `trl` door needs the [trl] extra.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "img" / "report.png"
BLOCK = re.compile(r"(<!-- front-door: (?P<name>[\w-]+) -->\n```text\n)(?P<body>.*?)(\n```)", re.S)
TIMING = re.compile(r"\b\d+(\.\d+)? ?(s|s/step)\b")
CLOCK = re.compile(r" \(\d+:\d\d:\d\d\)")  # pytest's duration after the seconds from a minute on: (0:01:06)
RUN_STAMP = re.compile(r"\b([a-z][\w.]*)-\d{4}-\d{6}\b")  # a run name's month-day-time: bandit-1207-173611
FILLED = re.compile(r"^=+ (.*?) =+$")  # a pytest rule line; its fill widens or narrows with the text
# Other libraries' lines in the bench's stdout, there or not depending on what is installed and set: DeepSpeed's
# accelerator notice (when DeepSpeed is installed), transformers' notice on import when WANDB_MODE=offline.
FOREIGN_LOG = re.compile(r"^(\[\d{4}-\d\d-\d\d [\d:,]+\] \[[A-Z]+\] |\[INFO\] Running in WANDB offline mode$)")
TIMEOUT_S = 3600  # a door takes about a minute on 2 free cores; far longer on a loaded machine


@dataclass(frozen=True)
class FrontDoor:
    name: str
    command: str  # as the README shows it, run from the repository root
    quote: Callable[[str], str]  # the part of the output the README quotes
    run_dir: str = ""  # the run directory the command writes, relative to where it runs (its report.html)


def _through_counts(output: str) -> str:
    """A diagnosis report down to its counts line (`1 fail, 0 warn, ...`)."""
    lines = output.splitlines()
    end = next(i for i, line in enumerate(lines) if re.match(r"\d+ fail, \d+ warn, ", line))
    return "\n".join(lines[:end + 1])


def _from_judgement(output: str) -> str:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("diagnosis of "))
    return "\n".join(lines[start:])


def _trl_table(output: str) -> str:
    """The bench's whole table, from its title to its last line (TRL's warnings on stderr, and other libraries'
    log lines, left out)."""
    lines = [line for line in output.splitlines() if not FOREIGN_LOG.match(line)]
    start = next(i for i, line in enumerate(lines) if line.startswith("Planted faults in real TRL"))
    end = next(i for i in range(start + 1, len(lines)) if re.match(r"(all flagged|healthy quiet|\d+ row)", lines[i]))
    return "\n".join(lines[start:end + 1])


def _cases_excerpt(output: str) -> str:
    """pytest's `flatline diagnosis` section (a line and a report per run) and its last line."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"=+ flatline diagnosis =+$", line))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("="))
    return "\n".join(lines[start:end] + ["...", lines[-1]])


DOORS = (
    FrontDoor("diagnose", "flatline diagnose data/real_runs/grpodyn-qwen2.5-7b-gsm8k-rho0.30-s42/train.log",
              _through_counts),
    FrontDoor("trl", "python bench/trl_faults.py --only frozen_adapter --steps 4", _trl_table),
    FrontDoor("train", "flatline train configs/bandit.toml --set learning_rate=1e-7 --set max_steps=12 "
                       "--set progress_bar=false --out runs/lr-1e-7", _from_judgement, run_dir="runs/lr-1e-7"),
    FrontDoor("cases", "pytest cases/ --flatline-config configs/bandit.toml --flatline-set learning_rate=1e-7 "
                       "--flatline-set max_steps=12", _cases_excerpt),
)
BY_NAME = {door.name: door for door in DOORS}


def program(word: str) -> list[str]:
    """The command line's first word, from this Python's environment (`.venv` for `make docs` and the tests)."""
    if word == "flatline":
        return [str(Path(sys.executable).with_name("flatline"))]
    if word == "python":
        return [sys.executable]
    if word == "pytest":
        return [sys.executable, "-m", "pytest"]
    return [word]


def run(door: FrontDoor, scratch: Path) -> str:
    """The door's output as the README quotes it: its command run in `scratch`, paths under it and the
    repository's written relative to them."""
    words = door.command.split()
    args = [str(ROOT / w) if (ROOT / w).exists() and "/" in w else w for w in words[1:]]
    env = dict(os.environ, FLATLINE_LOG=str(scratch / "reports" / "EXPERIMENT_LOG.md"), WANDB_MODE="offline",
               COLUMNS="80")
    result = subprocess.run(program(words[0]) + args, cwd=scratch, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    if result.returncode not in (0, 1):
        raise RuntimeError(f"{door.command} exited {result.returncode}: {result.stderr.strip()[-800:]}")
    output = result.stdout + result.stderr
    # pytest writes the repository's files relative to the folder it runs in (../../work/repo/cases/...): that
    # prefix goes first, as it holds the repository's full path
    for prefix in (os.path.relpath(ROOT, scratch) + "/", str(scratch) + "/", str(ROOT) + "/"):
        output = output.replace(prefix, "")
    return door.quote(output)


def block(door: FrontDoor, output: str) -> str:
    return f"$ {door.command}\n{output}"


def normalised(text: str) -> str:
    """What varies between two runs of the same command rewritten: timings as `N s` (pytest's `(H:MM:SS)`, shown
    from a minute on, dropped), the date and time in run names as `MMDD-HHMMSS`, a pytest rule's `=` fill as `==`;
    trailing spaces gone. Everything else (every count, number, id and word) must be the same."""
    out = []
    for line in text.splitlines():
        line = TIMING.sub(lambda m: "N " + m.group(2), line)
        line = CLOCK.sub("", RUN_STAMP.sub(r"\1-MMDD-HHMMSS", line)).rstrip()
        out.append(FILLED.sub(r"== \1 ==", line))
    return "\n".join(out)


def blocks(readme: str) -> dict[str, str]:
    return {m.group("name"): m.group("body") for m in BLOCK.finditer(readme)}


def differing(readme: str, names=None) -> list[str]:
    shown = blocks(readme)
    out = []
    with tempfile.TemporaryDirectory(prefix="flatline-front-door-") as scratch:
        for door in DOORS:
            if names is not None and door.name not in names:
                continue
            fresh = block(door, run(door, Path(scratch)))
            if door.name not in shown or normalised(shown[door.name]) != normalised(fresh):
                out.append(door.name)
    return out


def regenerate(readme: str, screenshot: bool = True, names=None) -> str:
    """The README with every front-door block (or those `names`) holding its command's output now; with
    `screenshot`, the train door's report.html photographed into docs/img/report.png (when Chromium is there)."""
    from flatline.harness.browser import find_chromium, take_screenshot

    fresh = {}
    with tempfile.TemporaryDirectory(prefix="flatline-front-door-") as scratch:
        for door in DOORS:
            if names is not None and door.name not in names:
                continue
            fresh[door.name] = block(door, run(door, Path(scratch)))
            if screenshot and door.run_dir:
                if find_chromium() is None:
                    print("no Chromium on PATH: docs/img/report.png left as it is (apt-get install -y chromium)")
                else:
                    take_screenshot(Path(scratch) / door.run_dir / "report.html", SCREENSHOT)
    missing = set(fresh) - set(blocks(readme))
    if missing:
        raise ValueError(f"README.md has no front-door block for {sorted(missing)}")
    return BLOCK.sub(lambda m: m.group(1) + fresh.get(m.group("name"), m.group("body")) + m.group(4), readme)
