"""The probe contract: a probe reads one step (a flatline.common.record.StepRecord, or a model and its optimizer)
and returns named numbers.

A probe never changes training: it reads tensors, never writes them, draws no random numbers outside a forked RNG,
and a probe that raises is disabled with one warning while the run goes on (flatline.common.listeners).
Metric names are namespaced by the probe's family: the `advantage` probe's "zero_std_frac" is logged as
"advantage/zero_std_frac".
"""
from __future__ import annotations

from dataclasses import dataclass, field

from flatline.common.listeners import guarded_calls, wants_pre_step_weights
from flatline.common.record import PROBE_LEVELS, PROBE_TIERS, tiers_of

__all__ = ["PROBE_LEVELS", "PROBE_TIERS", "Probe", "ProbeContext", "ProbeSet", "tiers_of"]


@dataclass
class ProbeContext:
    """What probes may need beyond the step record (all optional: a probe skips what it lacks)."""

    task: object = None  # a flatline task: scorer and reference answers (the reward self-check)
    tokenizer: object = None
    pad_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    num_generations: int | None = None  # group size G: rows i*G .. i*G+G-1 share a prompt
    max_completion_length: int | None = None
    max_prompt_length: int | None = None
    context_length: int | None = None  # the model's max_position_embeddings
    temperature: float = 1.0
    beta: float = 0.0  # KL coefficient (the policy probe weighs the KL term's pull with it)

    @classmethod
    def from_trainer(cls, trainer) -> "ProbeContext":
        """The context of a built flatline Trainer (read through its public attributes)."""
        cfg = trainer.cfg
        return cls(task=trainer.task, tokenizer=trainer.tokenizer, pad_token_id=trainer.tokenizer.pad_token_id,
                   eos_token_ids=trainer.eos_token_ids, num_generations=cfg.num_generations,
                   max_completion_length=cfg.max_completion_length, max_prompt_length=cfg.max_prompt_length,
                   context_length=getattr(trainer.model.config, "max_position_embeddings", None),
                   temperature=cfg.temperature, beta=cfg.beta)


class Probe:
    """Base class. Subclasses set `family` (metric prefix), `tier` and `every`, and override the hooks they need.

    - `on_gradients(model, optimizer)`: after backward, before clipping and the optimizer step (gradients present).
    - `on_step(record)`: after the optimizer step, with the StepRecord (record.pre_step_weights is filled when
      `wants_pre_step_weights` is True).
    Each returns a dict of plain numbers (names without the family prefix) or None.
    """

    family: str = ""
    tier: str = "cheap"  # one of PROBE_TIERS
    every: int = 1
    wants_pre_step_weights: bool = False

    def __init__(self, context: ProbeContext | None = None, every: int | None = None):
        self.context = context or ProbeContext()
        if every is not None:
            self.every = every

    def due(self, step: int) -> bool:
        """Probes run on step 1 and every `every` steps after it."""
        return (step - 1) % self.every == 0

    def on_gradients(self, model, optimizer) -> dict | None:
        return None

    def on_step(self, record) -> dict | None:
        return None


@dataclass
class ProbeSet:
    """A training-loop listener (flatline.common.record) running several probes, each namespaced by family."""

    probes: list[Probe] = field(default_factory=list)
    name: str = "probes"

    @property
    def wants_pre_step_weights(self) -> bool:
        return wants_pre_step_weights(self.probes)

    def _run(self, hook: str, step: int, *args) -> dict:
        row = {}
        for probe, values in guarded_calls(self.probes, hook, *args, kind="probe", chosen=lambda p: p.due(step)):
            row.update({f"{probe.family}/{name}": value for name, value in values.items()})
        return row

    def on_gradients(self, model, optimizer, step: int) -> dict:
        return self._run("on_gradients", step, model, optimizer)

    def on_step(self, record) -> dict:
        return self._run("on_step", record.step, record)
