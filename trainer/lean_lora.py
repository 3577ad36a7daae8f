"""`LeanLoraLinear`: peft's LoRA Linear layer whose backward keeps the layer's input in the base dtype.

A bf16 base with float32 adapters (what flatline trains on a GPU) runs each adapter as B(A(x.float())) * s: peft
casts x to float32 for every adapter, and autograd keeps that float32 copy for A's gradient. q, k and v cast the
same x three times, so the copies weigh about as much as the base model's own activations (Qwen2.5-0.5B, 64 x 256
tokens: about 15 GiB of a 35 GiB step). Here the same products run in a `torch.autograd.Function` that keeps x as
it came (the base layer keeps that tensor anyway) and casts it again in the backward pass: the forward is the same
operations on the same values, and the gradients are the same products.

Only layers peft computes as plain base(x) + s * B(A(x)) with a dtype cast (one active adapter, no dropout, no
DoRA or other variant, not merged) take this path; anything else, and every float32 model (the CPU path), runs
peft's own forward unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from peft.tuners.lora.layer import Linear


class LoraDelta(torch.autograd.Function):
    """scaling * B(A(x.to(A.dtype))), keeping x in its own dtype for the backward pass. x [.., in] -> [.., out]"""

    @staticmethod
    def forward(ctx, x, weight_a, weight_b, scaling: float):
        hidden = F.linear(x.to(weight_a.dtype), weight_a)  # [.., r]
        ctx.save_for_backward(x, weight_a, weight_b, hidden)
        ctx.scaling = scaling
        return F.linear(hidden, weight_b) * scaling

    @staticmethod
    def backward(ctx, grad_out):
        x, weight_a, weight_b, hidden = ctx.saved_tensors
        grad = grad_out * ctx.scaling  # [.., out]
        grad_hidden = grad @ weight_b  # [.., r]
        grad_a = grad_b = None
        if ctx.needs_input_grad[2]:
            grad_b = grad.reshape(-1, grad.size(-1)).t() @ hidden.reshape(-1, hidden.size(-1))
        if ctx.needs_input_grad[1]:
            grad_a = grad_hidden.reshape(-1, grad_hidden.size(-1)).t() @ x.to(weight_a.dtype).reshape(-1, x.size(-1))
        grad_x = (grad_hidden @ weight_a).to(x.dtype) if ctx.needs_input_grad[0] else None
        return grad_x, grad_a, grad_b, None


def lean_adapter(module, x: torch.Tensor) -> str | None:
    """The adapter this call can run through LoraDelta, or None for peft's own forward."""
    if module.disable_adapters or module.merged:
        return None
    active = list(module.active_adapters)
    if len(active) != 1 or active[0] not in module.lora_A or active[0] in getattr(module, "lora_variant", {}):
        return None
    name = active[0]
    if not isinstance(module.lora_dropout[name], torch.nn.Identity) or module.lora_A[name].bias is not None:
        return None
    if module.lora_B[name].bias is not None or x.dtype == module.lora_A[name].weight.dtype:
        return None
    return name


class LeanLoraLinear(Linear):
    """peft's LoRA Linear with the lean backward where the call allows it (see the module's docstring)."""

    def forward(self, x, *args, **kwargs):
        name = None if args or kwargs else lean_adapter(self, x)
        if name is None:
            return super().forward(x, *args, **kwargs)
        result = self.base_layer(x)
        delta = LoraDelta.apply(x, self.lora_A[name].weight, self.lora_B[name].weight, float(self.scaling[name]))
        return (result + delta).to(result.dtype)


def make_lean(model, lean: bool = True) -> int:
    """Give every peft LoRA Linear layer of `model` the lean backward (lean=False: peft's again), in place; returns
    how many layers have it."""
    before, after = (Linear, LeanLoraLinear) if lean else (LeanLoraLinear, Linear)
    for module in model.modules():
        if type(module) is before:
            module.__class__ = after
    return sum(type(module) is LeanLoraLinear for module in model.modules())
