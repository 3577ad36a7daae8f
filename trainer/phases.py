"""Seconds per phase of a training step (time/<phase> in metrics.jsonl).

On a GPU, work is queued and runs later: each reading first waits for the queue, or the time of one phase would be
counted in whichever later phase happens to wait. On the CPU the readings cost nothing extra.
"""
from __future__ import annotations

import time

import torch

PHASES = ("sample", "score", "logprobs", "backward", "optimizer", "probes")


class PhaseClock:
    def __init__(self, device: torch.device):
        self.synchronize = device.type == "cuda"
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, phase: str) -> None:
        """The time since the last mark belongs to `phase` (added to what it already has)."""
        if self.synchronize:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
        self._last = now

    def metrics(self) -> dict[str, float]:
        return {f"time/{phase}": self.seconds[phase] for phase in PHASES if phase in self.seconds}
