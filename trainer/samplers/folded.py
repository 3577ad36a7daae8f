"""`FoldedWeights`: the sampler's own copy of every LoRA-wrapped linear layer with its adapter folded in.

A peft LoRA layer computes base(x) + scaling * B(A(x)): two extra small matrix products (and their launches) per
layer per decode step, which at decode sizes cost about as much as the base layer. Here each such layer gets a
buffer holding W + scaling * B @ A, summed in float32 and rounded once to the base dtype; while `active()`, the
layer's forward reads that buffer alone (one F.linear). The trainer's parameters are never written.

Linear layers that read the same input (q, k and v of an attention block; gate and up of an MLP) share one buffer,
their folded weights stacked by rows: the first of them runs one matrix product for all (one kernel instead of
three or two, the layer count of a decode step being what bounds it at these sizes) and the others return their
slices of it, when they are called with that same input (as transformers' layers do); otherwise each runs its own
rows alone.

The buffers keep their addresses for the model's life, so a CUDA graph captured over them stays valid: `refresh()`
rewrites them in place (StaticSampler calls it before every rollout, i.e. after every optimizer step). The rounding
is the only difference from the trainer's forward; the sync probes measure it (tests/test_device_path.py bounds it
in bf16 on the GPU). Layers peft does not compute as plain W x + s B A x (DoRA, several active adapters, an adapter
merged into the base already, a non-Linear base) keep their own forward.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


# Sibling layers that read one input and are computed as one product: (the module's attribute names), leader first.
GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


@dataclass
class Stacked:
    """One product for several layers that read the same input: their folded weights (and biases) stacked by rows."""

    weight: torch.Tensor  # [sum of out, in]
    bias: torch.Tensor | None  # [sum of out] or None
    last_input: torch.Tensor | None = None
    last_output: torch.Tensor | None = None

    def output(self, x, leader: bool) -> torch.Tensor | None:
        """The stacked product for x: computed by the leader, reused by the others when x is the leader's input."""
        if leader:
            self.last_input, self.last_output = x, F.linear(x, self.weight, self.bias)
        return self.last_output if x is self.last_input else None


@dataclass
class FoldedLinear:
    module: torch.nn.Module  # the peft LoRA layer
    weight: torch.Tensor  # W + scaling * B @ A in W's dtype, on W's device (the buffer the sampler reads)
    adapter: str
    stacked: Stacked | None = None  # the shared product, when the layer is one of a group (GROUPS)
    rows: slice = field(default_factory=lambda: slice(None))  # this layer's rows of it
    bias: torch.Tensor | None = None  # a view of the stacked bias, when there is one

    def refresh(self) -> None:
        base = self.module.base_layer.weight
        A = self.module.lora_A[self.adapter].weight
        B = self.module.lora_B[self.adapter].weight
        scaling = float(self.module.scaling[self.adapter])
        summed = torch.addmm(base.detach().float(), B.detach().float(), A.detach().float(), alpha=scaling)
        self.weight.copy_(summed)

    def forward(self, x, *args, **kwargs):
        if self.stacked is not None:
            shared = self.stacked.output(x, leader=self.rows.start == 0)
            if shared is not None:
                return shared[..., self.rows]
        return F.linear(x, self.weight, self.module.base_layer.bias)

    def refresh_bias(self) -> None:
        if self.bias is not None:
            self.bias.copy_(self.module.base_layer.bias.detach())


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


def stackable(members) -> bool:
    """Layers whose weights can be stacked: one input size, dtype and device, all with a bias or none."""
    weights = [m.base_layer.weight for m in members]
    biases = [m.base_layer.bias is not None for m in members]
    return len({(w.size(1), w.dtype, w.device) for w in weights}) == 1 and len(set(biases)) == 1


def stacked_layers(members) -> list[FoldedLinear]:
    """FoldedLinear layers for `members` (leader first) over one stacked buffer."""
    weights = [m.base_layer.weight for m in members]
    sizes = [w.size(0) for w in weights]
    weight = weights[0].new_empty(sum(sizes), weights[0].size(1)).requires_grad_(False)
    bias = weights[0].new_empty(sum(sizes)) if members[0].base_layer.bias is not None else None
    shared = Stacked(weight, bias)
    layers, start = [], 0
    for module, size in zip(members, sizes):
        rows = slice(start, start + size)
        layers.append(FoldedLinear(module, weight[rows], foldable_adapter(module), shared, rows,
                                   None if bias is None else bias[rows]))
        start += size
    return layers


class FoldedWeights:
    """Folded copies of a model's LoRA linear layers; empty (and harmless) for a model without adapters."""

    def __init__(self, model):
        self.model = model
        self.layers: list[FoldedLinear] = []
        grouped = set()
        for parent in model.modules():
            for names in GROUPS:
                members = [getattr(parent, name, None) for name in names]
                if all(m is not None and foldable_adapter(m) for m in members) and stackable(members):
                    self.layers.extend(stacked_layers(members))
                    grouped.update(id(m) for m in members)
        for module in model.modules():
            adapter = foldable_adapter(module)
            if adapter is not None and id(module) not in grouped:
                weight = module.base_layer.weight
                buffer = torch.empty_like(weight, memory_format=torch.contiguous_format).requires_grad_(False)
                self.layers.append(FoldedLinear(module, buffer, adapter))
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        for layer in self.layers:
            layer.refresh()
            layer.refresh_bias()

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
                if layer.stacked is not None:
                    layer.stacked.last_input = layer.stacked.last_output = None
