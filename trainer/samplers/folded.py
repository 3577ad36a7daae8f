"""`FoldedWeights`: the sampler's own copy of every LoRA-wrapped linear layer with its adapter folded in.

A peft LoRA layer computes base(x) + scaling * B(A(x)): two extra small matrix products (and their launches) per
layer per decode step, which at decode sizes cost about as much as the base layer. Here each such layer gets a
buffer holding W + scaling * B @ A, summed in float32 and rounded once to the base dtype; while `active()`, the
layer's forward reads that buffer alone (one F.linear). The trainer's parameters are never written.

The buffers keep their addresses for the model's life, so a CUDA graph captured over them stays valid: `refresh()`
rewrites them in place (StaticSampler calls it before every rollout, i.e. after every optimizer step). The rounding
is the only difference from the trainer's forward; the sync probes measure it (tests/test_device_path.py bounds it
in bf16 on the GPU). Layers peft does not compute as plain W x + s B A x (DoRA, several active adapters, an adapter
merged into the base already, a non-Linear base) keep their own forward.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class FoldedLinear:
    module: torch.nn.Module  # the peft LoRA layer
    weight: torch.Tensor  # W + scaling * B @ A in W's dtype, on W's device (the buffer the sampler reads)
    adapter: str

    def refresh(self) -> None:
        base = self.module.base_layer.weight
        A = self.module.lora_A[self.adapter].weight
        B = self.module.lora_B[self.adapter].weight
        scaling = float(self.module.scaling[self.adapter])
        summed = torch.addmm(base.detach().float(), B.detach().float(), A.detach().float(), alpha=scaling)
        self.weight.copy_(summed)

    def forward(self, x, *args, **kwargs):
        return F.linear(x, self.weight, self.module.base_layer.bias)


def foldable_adapter(module) -> str | None:
    """The one active adapter of a plain peft LoRA Linear layer, or None when it cannot be folded as W + s B A."""
    if not (hasattr(module, "lora_A") and hasattr(module, "base_layer") and hasattr(module, "scaling")):
        return None
    if not isinstance(module.base_layer, torch.nn.Linear) or getattr(module, "merged", False):
        return None
    if getattr(module, "disable_adapters", False) or getattr(module, "fan_in_fan_out", False):
        return None
    active = list(getattr(module, "active_adapters", []))
    if len(active) != 1 or active[0] not in module.lora_A or active[0] not in module.lora_B:
        return None
    if getattr(module, "use_dora", {}).get(active[0], False) or getattr(module, "lora_variant", {}).get(active[0]):
        return None
    if module.lora_A[active[0]].bias is not None or module.lora_B[active[0]].bias is not None:
        return None
    return active[0]


class FoldedWeights:
    """Folded copies of a model's LoRA linear layers; empty (and harmless) for a model without adapters."""

    def __init__(self, model):
        self.model = model
        self.layers: list[FoldedLinear] = []
        for module in model.modules():
            adapter = foldable_adapter(module)
            if adapter is not None:
                weight = module.base_layer.weight
                buffer = torch.empty_like(weight, memory_format=torch.contiguous_format).requires_grad_(False)
                self.layers.append(FoldedLinear(module, buffer, adapter))
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        for layer in self.layers:
            layer.refresh()

    @property
    def nbytes(self) -> int:
        return sum(layer.weight.numel() * layer.weight.element_size() for layer in self.layers)

    @contextmanager
    def active(self):
        """Within: each folded layer's forward is one F.linear over its buffer. Restored on the way out."""
        for layer in self.layers:
            layer.module.forward = layer.forward
        try:
            yield
        finally:
            for layer in self.layers:
                del layer.module.forward
