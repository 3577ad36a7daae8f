"""The gradient and update probes on a DeepSpeed engine, ZeRO-3's sharded parameters included.

    monitor = engine_monitor(engine, max_grad_norm=1.0)     # every rank: the gathers are collectives
    ...  engine.backward(loss); engine.step()              # or accelerate's backward, which calls both
    row = monitor.metrics()                                 # the same names as probes.attach's

Under ZeRO-3 a parameter holds a shard (`ds_id`, `ds_numel`, `ds_shape`; `p.data` is empty) and its gradient lives in
the optimizer's partitions, so torch's optimizer hooks (probes.attach) see nothing. DeepSpeed steps inside
`engine.step()` (accelerate calls it from `accelerator.backward`, before any Trainer callback), so this wraps that
call, reading only: before the step, at a gradient-accumulation boundary, each trainable parameter's whole gradient
(`deepspeed.utils.safe_get_full_grad`: reduced over the ranks, before clipping, as the optimizer sees it) and a whole
copy of it (`deepspeed.zero.GatheredParameters`; LoRA adapters are small); after it, the whole weights again.
Every rank computes the same numbers (the gathers are collectives, so every rank must run them).

Reports gradients/* (norms per group, clip coefficient, flow, non-finite) and update/rel_update (per group),
update/changed_frac, update/trainable_params. Left out under ZeRO-3: the effective LoRA update (it needs the base
weights gathered), precision kept, base drift and optimizer coverage (DeepSpeed's optimizer holds every trainable
parameter by construction).
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

from flatline.common.listeners import warn_disabled
from flatline.common.snapshot import pre_step_weights
from flatline.probes.gradients import full_numel, gradient_metrics, trainable
from flatline.probes.update import update_sizes


def is_sharded(p: torch.Tensor) -> bool:
    """A DeepSpeed ZeRO-3 parameter (its data is a shard)."""
    return hasattr(p, "ds_id")


def gathered(params: list[torch.Tensor]):
    """A context in which ZeRO-3 parameters hold their whole value (read-only; every rank must enter it)."""
    sharded = [p for p in params if is_sharded(p)]
    if not sharded:
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(sharded, modifier_rank=None)


def whole_weights(named: list[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """name -> a detached copy of the whole parameter, gathered where it is sharded."""
    with gathered([p for _, p in named]):
        return pre_step_weights(named)


def whole_grads(named: list[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor | None]:
    """name -> the whole gradient as the optimizer will use it (reduced over ranks; DeepSpeed's safe_get_full_grad
    for its parameters, .grad otherwise), None where there is none."""
    if not any(is_sharded(p) or hasattr(p, "_hp_mapping") for _, p in named):
        return {name: p.grad for name, p in named}
    from deepspeed.utils import safe_get_full_grad

    return {name: safe_get_full_grad(p) for name, p in named}


def sharded_step_metrics(named: list[tuple[str, torch.Tensor]], max_grad_norm: float | None) -> dict:
    """gradients/* of the step about to be taken, from the whole gradients."""
    row = gradient_metrics(named, max_grad_norm, grads=whole_grads(named))
    return {f"gradients/{k}": v for k, v in row.items()}


def sharded_update_metrics(named: list[tuple[str, torch.Tensor]], before: dict[str, torch.Tensor]) -> dict:
    """update/* from the whole weights before the step and now."""
    after = whole_weights(named)
    row = update_sizes(list(after.items()), before)
    row["trainable_params"] = sum(full_numel(p) for _, p in named)
    return {f"update/{k}": v for k, v in row.items()}


class EngineMonitor:
    """gradients/* and update/* of each DeepSpeed optimizer step, by wrapping engine.step (see the module doc)."""

    def __init__(self, engine, max_grad_norm: float | None = None, every: int = 1):
        self.engine, self.max_grad_norm, self.every = engine, max_grad_norm, every
        self.model = getattr(engine, "module", engine)
        self.step = 0
        self._row: dict = {}
        self._real_step = engine.step
        engine.step = self._step  # an instance attribute: engine.step() now runs through the monitor
        self.attached = True

    def metrics(self) -> dict:
        return dict(self._row)

    def detach(self) -> None:
        if self.attached:
            self.engine.step = self._real_step
            self.attached = False

    def _boundary(self) -> bool:
        check = getattr(self.engine, "is_gradient_accumulation_boundary", None)
        return bool(check()) if check is not None else True

    def _step(self, *args, **kwargs):
        if not self.attached or not self._boundary():
            return self._real_step(*args, **kwargs)
        self.step += 1
        due = (self.step - 1) % self.every == 0
        named, before, row = None, None, {}
        if due:
            try:
                with torch.no_grad():
                    named = trainable(self.model)
                    row = sharded_step_metrics(named, self.max_grad_norm)
                    before = whole_weights(named)
            except Exception as exc:  # never stop or change training
                warn_disabled("monitor", "flatline.probes.sharded", exc)
                self.detach()
                named = None
        result = self._real_step(*args, **kwargs)
        if named is not None:
            try:
                with torch.no_grad():
                    row.update(sharded_update_metrics(named, before))
                self._row = row
            except Exception as exc:
                warn_disabled("monitor", "flatline.probes.sharded", exc)
                self.detach()
        elif due:
            self._row = {}
        return result


def engine_monitor(engine, *, max_grad_norm: float | None = None, every: int = 1) -> EngineMonitor:
    """Hook the gradient and update probes onto a DeepSpeed engine; see the module docstring."""
    return EngineMonitor(engine, max_grad_norm=max_grad_norm, every=every)
