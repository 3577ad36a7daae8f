"""Probes: instruments that read one training step and return named numbers, namespaced by family.

    from flatline.probes import build_probes, ProbeContext
    trainer.listeners.append(build_probes("cheap", ProbeContext.from_trainer(trainer), max_grad_norm=1.0))

or, for a loop flatline did not write (any nn.Module with a torch optimizer):

    monitor = probes.attach(model, optimizer)
    ...  loss.backward(); optimizer.step(); optimizer.zero_grad()
    row = monitor.metrics()

Tiers: cheap probes read tensors the step already has; full probes may run extra forwards (under no_grad,
with the RNG forked). No probe changes training; one that raises is disabled with one warning.
"""
from __future__ import annotations

from flatline.probes.advantage import AdvantageProbe
from flatline.probes.attach import attach
from flatline.probes.base import LEVELS, Probe, ProbeContext, ProbeSet
from flatline.probes.gradients import GradientProbe
from flatline.probes.length import LengthProbe
from flatline.probes.masks import MaskAlignmentProbe, MaskProbe
from flatline.probes.policy import PolicyProbe
from flatline.probes.reward import RewardProbe
from flatline.probes.sync import SyncProbe
from flatline.probes.update import UpdateProbe

__all__ = ["LEVELS", "Probe", "ProbeContext", "ProbeSet", "attach", "build_probes"]


def build_probes(level: str, context: ProbeContext, max_grad_norm: float | None = None) -> ProbeSet:
    """Every probe of `level`'s tiers: none (empty), cheap, or full (cheap + the extra-forward ones)."""
    if level not in LEVELS:
        raise ValueError(f"probes level must be one of {', '.join(LEVELS)}, got {level!r}")
    if level == "none":
        return ProbeSet([])
    probes: list[Probe] = [
        AdvantageProbe(context), RewardProbe(context), MaskProbe(context), GradientProbe(context, max_grad_norm=max_grad_norm),
        UpdateProbe(context), SyncProbe(context), LengthProbe(context), PolicyProbe(context),
    ]
    if level == "full":
        probes.append(MaskAlignmentProbe(context))
    return ProbeSet(probes)
