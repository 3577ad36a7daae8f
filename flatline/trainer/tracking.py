"""W&B logging: offline unless WANDB_API_KEY or WANDB_MODE say otherwise; a missing wandb never stops a run."""
from __future__ import annotations

import os
import warnings


def wandb_mode() -> str:
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class Tracker:
    """Wraps a wandb run; every call is a no-op when wandb is off, missing or failing."""

    def __init__(self):
        self.run = None

    def start(self, project: str, name: str, directory: str, config: dict) -> None:
        try:
            import wandb
        except ImportError:
            warnings.warn("report_to = 'wandb' but wandb is not installed (pip install wandb); logging locally only")
            return
        try:
            self.run = wandb.init(project=project, name=name, dir=directory, config=config, mode=wandb_mode(),
                                  settings=wandb.Settings(silent=True, console="off"))
        except Exception as exc:  # no key, no network, bad settings: the run goes on without W&B
            warnings.warn(f"W&B is off for this run: {type(exc).__name__}: {exc}")
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
