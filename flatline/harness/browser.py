"""Headless Chromium on a local page: the DOM it renders and a screenshot (the browser test and the README's picture).

    dom = rendered_dom(Path("runs/x/report.html"))                    # the page after Chromium parsed and laid it out
    take_screenshot(Path("runs/x/report.html"), Path("shot.png"))    # a PNG of the first WINDOW of it

Chromium is the Debian package `chromium` (`apt-get install -y chromium`); `find_chromium()` is None without it.
It runs with --no-sandbox (containers and CI run as root, where Chromium's sandbox refuses to start) on local files
only, and with networking pointed at nothing, so a page that tried to fetch something would fail to.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW = (1280, 1400)  # CSS pixels of the screenshot
TIMEOUT_S = 120
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-extensions", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>")


def find_chromium() -> str | None:
    return next((path for path in map(shutil.which, NAMES) if path), None)


def _run(page: Path, *args: str) -> subprocess.CompletedProcess:
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("no Chromium on PATH: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="flatline-chromium-") as profile:
        result = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
                                capture_output=True, text=True, timeout=TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(f"chromium exited {result.returncode} on {page}: {result.stderr.strip()[-500:]}")
    return result


def rendered_dom(page: Path) -> str:
    """The page's DOM as Chromium serialises it after loading (`--dump-dom`)."""
    return _run(page, "--dump-dom").stdout


def take_screenshot(page: Path, out: Path, window: tuple[int, int] = WINDOW) -> Path:
    """A PNG of the page's first `window` CSS pixels (`--screenshot`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _run(page, f"--screenshot={out.resolve()}", f"--window-size={window[0]},{window[1]}")
    if not out.exists():
        raise RuntimeError(f"chromium wrote no screenshot for {page}")
    return out
