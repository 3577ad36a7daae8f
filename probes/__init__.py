"""Probes: instruments that read one training step and return named numbers, namespaced by family.

    from flatline import probes
    trainer.listeners += probes.for_trainer(trainer)          # flatline's trainer, at the config's `probes` level

or, for a loop flatline did not write (any nn.Module with a torch optimizer):

    monitor = probes.attach(model, optimizer)
    ...  loss.backward(); optimizer.step(); optimizer.zero_grad()
    row = monitor.metrics()

A loop that can fill a flatline.common.record.StepRecord gets every probe: `build_probes(level, context)` is a
listener with `on_gradients(model, optimizer, step)` and `on_step(record)`.

Tiers: cheap probes read tensors the step already has; full probes may run extra forwards (under no_grad, with the
RNG forked). A level runs its own tier and every cheaper one. No probe changes training; one that raises is
disabled with one warning.
"""
from __future__ import annotations

from flatline.probes.advantage import AdvantageProbe
from flatline.probes.attach import attach
from flatline.probes.episodes import EpisodeProbe
from flatline.probes.dropout import DropoutModulesProbe, RepeatedForwardProbe
from flatline.probes.base import PROBE_LEVELS, Probe, ProbeContext, ProbeSet, tiers_of
from flatline.probes.gradients import GradientProbe
from flatline.probes.length import LengthProbe
from flatline.probes.masks import MaskAlignmentProbe, MaskProbe
from flatline.probes.policy import PolicyProbe
from flatline.probes.reward import RewardProbe
from flatline.probes.staleness import StaleWeightsProbe
from flatline.probes.sync import SyncProbe
from flatline.probes.update import UpdateProbe

__all__ = ["PROBE_LEVELS", "ALL_PROBES", "Probe", "ProbeContext", "ProbeSet", "attach", "build_probes", "for_trainer"]

# Every probe, in the order its numbers join the metrics row; each declares its own tier.
ALL_PROBES = (AdvantageProbe, RewardProbe, MaskProbe, GradientProbe, UpdateProbe, SyncProbe, StaleWeightsProbe,
              LengthProbe, PolicyProbe, DropoutModulesProbe, MaskAlignmentProbe, RepeatedForwardProbe, EpisodeProbe)


def build_probes(level: str, context: ProbeContext, max_grad_norm: float | None = None) -> ProbeSet:
    """Every probe whose tier the level runs: none (empty), cheap, or full (cheap + the extra-forward ones)."""
    tiers = tiers_of(level)
    chosen = []
    for probe_class in ALL_PROBES:
        if probe_class.tier in tiers:
            kwargs = {"max_grad_norm": max_grad_norm} if probe_class is GradientProbe else {}
            chosen.append(probe_class(context, **kwargs))
    return ProbeSet(chosen)


def for_trainer(trainer) -> list[ProbeSet]:
    """The probes of a built flatline Trainer's `probes` level, as listeners to add to trainer.listeners."""
    level = trainer.cfg.probes
    if level == "none":
        return []
    return [build_probes(level, ProbeContext.from_trainer(trainer), trainer.cfg.max_grad_norm)]
