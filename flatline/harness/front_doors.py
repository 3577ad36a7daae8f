"""The README's three front doors: each command it shows, how to run it, and the part of its output it quotes.

    text = regenerate(README.read_text())        # the README with every front-door block refreshed
    differing(README.read_text())                # names of the blocks whose quoted output is stale

A README block is a marker line and a fenced block holding `$ COMMAND` and then the quoted output:

    <!-- front-door: diagnose -->
    ```text
    $ flatline diagnose tests/fixtures/logs/verl/v0.9.1
    ...
    ```

Commands run in a scratch folder (the log book there too); paths under it are written relative to it, and
timings are compared as `N s`. Two doors quote committed outputs of runs too long for a test (real TRL runs,
`pytest cases/` on the embedded model): their blocks must be excerpts of those files.
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
TIMEOUT_S = 1200


@dataclass(frozen=True)
class FrontDoor:
    name: str
    command: str  # as the README shows it, run from the repository root
    quote: Callable[[str], str]  # the part of the output the README quotes
    committed: str = ""  # a file holding the output of a run too long for a test (the command wrote it)
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


def _trl_excerpt(output: str) -> str:
    lines = output.splitlines()
    keep = [lines[0], ""]
    for name in ("healthy", "frozen_adapter", "lr_1e-7", "raising_reward"):
        start = next(i for i, line in enumerate(lines) if line.startswith(name + " "))
        end = next((i for i in range(start + 1, len(lines)) if lines[i] and not lines[i].startswith(" ")), len(lines))
        keep += lines[start:end]
    return "\n".join(keep + ["", lines[-1]])


def _cases_excerpt(output: str) -> str:
    lines = output.splitlines()
    summary = [line for line in lines if re.match(r"=+ .* in [\d.]+s", line)][-1:]
    return "\n".join(lines[:5] + ["..."] + summary)


DOORS = (
    FrontDoor("diagnose", "flatline diagnose data/real_runs/grpodyn-qwen2.5-7b-gsm8k-rho0.30-s42/train.log",
              _through_counts),
    FrontDoor("trl", "python bench/trl_faults.py", _trl_excerpt, committed="reports/examples/trl_faults.txt"),
    FrontDoor("train", "flatline train configs/bandit.toml --set learning_rate=1e-7 --set max_steps=12 "
                       "--set progress_bar=false --out runs/lr-1e-7", _from_judgement, run_dir="runs/lr-1e-7"),
    FrontDoor("cases", "pytest cases/", _cases_excerpt, committed="reports/examples/cases-embedded/pytest-cases.txt"),
)
BY_NAME = {door.name: door for door in DOORS}


def run(door: FrontDoor, scratch: Path) -> str:
    """The door's output as the README quotes it: its command run in `scratch` (paths under it made relative),
    or the committed file its command wrote."""
    if door.committed:
        return door.quote((ROOT / door.committed).read_text(encoding="utf-8"))
    words = door.command.split()
    program = [str(Path(sys.executable).with_name(words[0]))] if words[0] == "flatline" else [words[0]]
    args = [str(ROOT / w) if (ROOT / w).exists() and "/" in w else w for w in words[1:]]
    env = dict(os.environ, FLATLINE_LOG=str(scratch / "reports" / "EXPERIMENT_LOG.md"), WANDB_MODE="offline")
    result = subprocess.run(program + args, cwd=scratch, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    if result.returncode not in (0, 1):
        raise RuntimeError(f"{door.command} exited {result.returncode}: {result.stderr.strip()[-800:]}")
    output = (result.stdout + result.stderr).replace(str(scratch) + "/", "").replace(str(ROOT) + "/", "")
    return door.quote(output)


def block(door: FrontDoor, output: str) -> str:
    return f"$ {door.command}\n{output}"


def normalised(text: str) -> str:
    """Timings as `N s`; trailing spaces gone."""
    return "\n".join(TIMING.sub(lambda m: "N " + m.group(2), line).rstrip() for line in text.splitlines())


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


def regenerate(readme: str, screenshot: bool = True) -> str:
    """The README with every front-door block holding its command's output now; with `screenshot`, the train
    door's report.html photographed into docs/img/report.png (when Chromium is there)."""
    from flatline.harness.browser import find_chromium, take_screenshot

    fresh = {}
    with tempfile.TemporaryDirectory(prefix="flatline-front-door-") as scratch:
        for door in DOORS:
            fresh[door.name] = block(door, run(door, Path(scratch)))
            if screenshot and door.run_dir:
                if find_chromium() is None:
                    print("no Chromium on PATH: docs/img/report.png left as it is (apt-get install -y chromium)")
                else:
                    take_screenshot(Path(scratch) / door.run_dir / "report.html", SCREENSHOT)
    missing = set(fresh) - set(blocks(readme))
    if missing:
        raise ValueError(f"README.md has no front-door block for {sorted(missing)}")
    return BLOCK.sub(lambda m: m.group(1) + fresh[m.group("name")] + m.group(4), readme)
