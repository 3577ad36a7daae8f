"""W&B logging: offline unless WANDB_API_KEY or WANDB_MODE say otherwise; a missing wandb never stops a run.

Online W&B with no network would stall set-up for wandb's init_timeout (90 s) before carrying on. So before going
online the W&B host is tried with a short connect (REACH_TIMEOUT_S, in a thread so a slow DNS lookup cannot hold
it up); when it does not answer, the run logs offline at once and says so in one line, with how to sync later.
"""
from __future__ import annotations

import os
import socket
import threading
import warnings
from urllib.parse import urlsplit

# Seconds the W&B host has to accept a TCP connection before the run logs offline instead.
REACH_TIMEOUT_S = 3.0
# Seconds wandb.init may take when the host did answer (wandb's own default is 90).
INIT_TIMEOUT_S = 30.0


def wandb_mode() -> str:
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def reachable(url: str, timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether `url`'s host accepts a TCP connection within `timeout` seconds (DNS lookup included); a lookup or
    connection that fails answers False at once."""
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    port = parts.port or (80 if parts.scheme == "http" else 443)
    done, answered = threading.Event(), []

    def connect() -> None:
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            answered.append(True)
        except (OSError, ValueError):
            pass
        finally:
            done.set()

    threading.Thread(target=connect, daemon=True, name="flatline-wandb-reach").start()
    done.wait(timeout)
    return bool(answered)


class Tracker:
    """Wraps a wandb run; every call is a no-op when wandb is off, missing or failing."""

    def __init__(self, log=print):
        self.run = None
        self.say = log  # one-line notices (the W&B fallback), printed at once

    def start(self, project: str, name: str, directory: str, config: dict) -> None:
        try:
            import wandb
        except ImportError:
            warnings.warn("report_to = 'wandb' but wandb is not installed (pip install wandb); logging locally only")
            return
        mode = wandb_mode()
        offline_line = (f"logging offline to {directory}/wandb, sync later with "
                        f"`wandb sync {directory}/wandb/offline-run-*`")
        if mode == "online":
            host = os.environ.get("WANDB_BASE_URL") or wandb.Settings().base_url
            if not reachable(host):
                mode = "offline"
                self.say(f"W&B: no network ({urlsplit(host).hostname} not reachable within {REACH_TIMEOUT_S:g} s); "
                         f"{offline_line}")

        def init(chosen: str):
            return wandb.init(project=project, name=name, dir=directory, config=config, mode=chosen,
                              settings=wandb.Settings(silent=True, console="off", init_timeout=INIT_TIMEOUT_S))

        try:
            self.run = init(mode)
        except Exception as exc:  # a rejected key, a W&B outage: offline still keeps the run's W&B record
            if mode != "online":
                warnings.warn(f"W&B is off for this run: {type(exc).__name__}: {exc}")
                return
            self.say(f"W&B: online set-up failed ({type(exc).__name__}); {offline_line}")
            try:
                self.run = init("offline")
            except Exception as again:
                warnings.warn(f"W&B is off for this run: {type(again).__name__}: {again}")
                self.run = None

    @property
    def url_or_name(self) -> str:
        if self.run is None:
            return ""
        if getattr(self.run, "offline", False):
            return self.run.name  # an offline run has no URL (asking for it prints a warning)
        return getattr(self.run, "url", None) or self.run.name

    def log(self, row: dict, step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log({k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}, step=step)
        except Exception as exc:
            warnings.warn(f"W&B logging stopped: {type(exc).__name__}: {exc}")
            self.run = None

    def summarize(self, summary: dict, tables: dict[str, tuple[list[str], list[list]]] = ()) -> None:
        """Set run-summary values and log tables ({name: (columns, rows)}), e.g. a run's verdicts."""
        if self.run is None:
            return
        try:
            import wandb

            for key, value in summary.items():
                self.run.summary[key] = value
            for name, (columns, rows) in dict(tables).items():
                self.run.log({name: wandb.Table(columns=columns, data=rows)})
        except Exception as exc:
            warnings.warn(f"W&B summary failed: {type(exc).__name__}: {exc}")

    def finish(self) -> None:
        if self.run is not None:
            try:
                self.run.finish()
            except Exception as exc:
                warnings.warn(f"W&B finish failed: {type(exc).__name__}: {exc}")
            self.run = None
