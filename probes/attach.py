"""attach(): the gradient and update probes on a training loop flatline did not write.

Any nn.Module trained by a torch optimizer (a language model or not), one process:

    monitor = attach(model, optimizer, max_grad_norm=1.0)
    for batch in loader:
        train_step(batch)               # your backward, clip_grad_norm_, optimizer.step(), zero_grad()
        log(monitor.metrics())          # {"gradients/global_norm": ..., "update/rel_update": ..., ...}

How: optimizer step hooks (torch >= 2.0). The pre-hook runs the gradient probe and copies the trainable weights;
the post-hook runs the update probe (coverage, precision, base drift, relative update). `monitor.metrics()` returns
the namespaced numbers of the last optimizer step ({} before the first, or when that step was not due under
`every`); `monitor.detach()` removes every hook. The hooks only read: training is bit-identical with or without
them. A probe that raises is disabled with one warning (flatline.common.listeners), and so is the monitor itself.

Gradient norms must be pre-clip, but a loop clips before optimizer.step(). With max_grad_norm given, each
parameter's squared gradient norm is also noted as backward finishes accumulating it
(register_post_accumulate_grad_hook, torch >= 2.1), and those pre-clip norms are reported when the gradients the
optimizer sees sit at the threshold (the loop clipped); otherwise the optimizer's gradients are the pre-clip ones.
Left out: an fp16 GradScaler multiplies gradients during backward, so on clipped steps the noted norms are of
the scaled gradients; under DDP the noted norms of a clipped step are this rank's, before the all-reduce (unclipped
steps read the reduced gradients the optimizer sees); DeepSpeed's optimizer has no torch hooks: use
flatline.probes.sharded.engine_monitor; FSDP is not supported.
"""
from __future__ import annotations

import torch

from flatline.common.listeners import warn_disabled
from flatline.common.record import StepRecord
from flatline.common.snapshot import pre_step_weights
from flatline.probes.base import ProbeSet
from flatline.probes.gradients import (
    GradientProbe,
    clip_coefficient,
    gradient_metrics,
    group_names,
    norm_metrics,
    squared_grad_norms,
    to_numbers,
    trainable,
)
from flatline.probes.update import UpdateProbe

# The loop clipped when the optimizer's gradient norm is within 1% of max_grad_norm: clip_grad_norm_ leaves
# max_norm * n / (n + 1e-6), and bf16 gradients carry ~2**-8 relative rounding (torch/nn/utils/clip_grad.py).
CLIPPED_RTOL = 1e-2


class PreClipGradientProbe(GradientProbe):
    """GradientProbe whose norms are those backward left, before a loop's clip_grad_norm_ (see the module doc)."""

    def __init__(self, model: torch.nn.Module, max_grad_norm: float | None = None, every: int | None = None):
        super().__init__(every=every, max_grad_norm=max_grad_norm)
        self.squares: dict[str, torch.Tensor] = {}  # name -> squared norm of the accumulated gradient
        self.handles = []
        if max_grad_norm and max_grad_norm > 0:
            for name, p in trainable(model):
                if hasattr(p, "register_post_accumulate_grad_hook"):
                    self.handles.append(p.register_post_accumulate_grad_hook(self._tap(name)))

    def _tap(self, name: str):
        def hook(param: torch.Tensor) -> None:
            self.squares[name] = param.grad.detach().float().pow(2).sum(dtype=torch.float64)
        return hook

    def on_gradients(self, model, optimizer) -> dict:
        named = trainable(model)
        row = gradient_metrics(named, self.max_grad_norm)
        if self.squares and row["global_norm"] >= self.max_grad_norm * (1 - CLIPPED_RTOL):
            seen = squared_grad_norms(named)
            tapped = {name: self.squares.get(name, square) for name, square in seen.items()}
            row.update(norm_metrics(to_numbers(tapped), group_names(name for name, _ in named)))
            row["clip_coef"] = clip_coefficient(row["global_norm"], self.max_grad_norm)
        return row

    def clear(self) -> None:
        self.squares = {}

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


class Monitor:
    """Gradient and update probes hooked onto one optimizer; read them with metrics() after each step."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, max_grad_norm: float | None = None,
                 every: int = 1):
        if not hasattr(optimizer, "register_step_pre_hook"):
            raise RuntimeError("attach() needs torch >= 2.0 (Optimizer.register_step_pre_hook)")
        self.model, self.optimizer = model, optimizer
        self.gradients = PreClipGradientProbe(model, max_grad_norm, every)
        self.probes = ProbeSet([self.gradients, UpdateProbe(every=every)])
        self.step = 0  # optimizer steps seen
        self._row: dict = {}
        self._pending: dict | None = None
        self._before: dict[str, torch.Tensor] | None = None
        self._handles = [optimizer.register_step_pre_hook(self._guarded(self._pre)),
                         optimizer.register_step_post_hook(self._guarded(self._post))]

    def metrics(self) -> dict:
        """Namespaced numbers of the last optimizer step ({} before the first step or when it was not probed)."""
        return dict(self._row)

    def detach(self) -> None:
        """Remove every hook; metrics() keeps returning the last step's numbers."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.gradients.remove()

    def _guarded(self, hook):
        def run(optimizer, args, kwargs) -> None:  # returns None: the step's arguments are left alone
            try:
                with torch.no_grad():
                    hook()
            except Exception as exc:  # the monitor must never stop or change training
                warn_disabled("monitor", "flatline.probes.attach", exc)
                self.detach()
        return run

    def _pre(self) -> None:
        self.step += 1
        self._row, self._pending, self._before = {}, None, None
        due = [p for p in self.probes.probes if p.due(self.step)]
        if not due:
            return
        self._pending = self.probes.on_gradients(self.model, self.optimizer, self.step)
        if any(p.wants_pre_step_weights for p in due):
            self._before = pre_step_weights(trainable(self.model))

    def _post(self) -> None:
        self.gradients.clear()
        if self.gradients not in self.probes.probes:  # disabled after raising: stop its taps too
            self.gradients.remove()
        if self._pending is None:
            return
        record = StepRecord(self.step, model=self.model, optimizer=self.optimizer, pre_step_weights=self._before,
                            metrics=dict(self._pending))
        self._row = {**self._pending, **self.probes.on_step(record)}
        self._pending, self._before = None, None


def attach(model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, max_grad_norm: float | None = None,
           every: int = 1) -> Monitor:
    """Hook the gradient and update probes onto `optimizer`; see the module docstring for the usage."""
    return Monitor(model, optimizer, max_grad_norm=max_grad_norm, every=every)
