"""`fused_decoding`: fewer kernels per decode step, by running a decoder's small element-wise pieces as one kernel.

At decode sizes (64 rows x 1 token) a step's time goes to the number of kernels more than to bytes: transformers'
Llama/Qwen2 layers launch about 8 kernels per RMSNorm (casts, pow, mean, add, rsqrt, two products), about 10 for the
rotary embedding of q and k (slices, negation, concatenation, products, sums) and 2 for the MLP's act(gate) * up.
While `fused_decoding(model)` is active, each of those runs as one kernel (torch.compile of the very same
arithmetic, with inductor told to round to the input dtype where eager rounds, so the values are eager's):

  RMSNorm (a module with `weight` and `variance_epsilon`, forward as Llama's)  -> rms_norm
  MLP (gate_proj, up_proj, down_proj and a SiLU act_fn)                         -> down(silu_mul(gate(x), up(x)))
  the modelling module's apply_rotary_pos_emb                                    -> that function, compiled

Everything is put back on the way out. StaticSampler uses it where it captures CUDA graphs (the compiled kernels are
captured with the rest); the pure functions below are what is compiled, and what the CPU tests check.
"""
from __future__ import annotations

import functools
import sys
from contextlib import contextmanager

import torch
import torch.nn.functional as F


def rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Llama's / Qwen2's RMSNorm: normalised in float32, rounded to the input dtype, then scaled."""
    variance = hidden.float().pow(2).mean(-1, keepdim=True)
    return weight * (hidden.float() * torch.rsqrt(variance + eps)).to(hidden.dtype)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


@functools.cache
def compiled(function):
    """`function` compiled once per process (static shapes: one decode state's shapes are fixed)."""
    options = {}
    if hasattr(torch._inductor.config, "emulate_precision_casts"):
        options["emulate_precision_casts"] = True  # round where eager rounds: the same values as eager
    return torch.compile(function, dynamic=False, options=options)


def is_rms_norm(module) -> bool:
    return type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon") and \
        isinstance(getattr(module, "weight", None), torch.Tensor)


def is_silu_mlp(module) -> bool:
    act = getattr(module, "act_fn", None)
    return all(hasattr(module, name) for name in ("gate_proj", "up_proj", "down_proj")) and \
        type(act).__name__ in ("SiLU", "SiLUActivation")


def norm_forward(module, kernel):
    return lambda hidden: kernel(hidden, module.weight, module.variance_epsilon)


def mlp_forward(module, kernel):
    return lambda x: module.down_proj(kernel(module.gate_proj(x), module.up_proj(x)))


def rotary_namespaces(model) -> list:
    """The modelling modules (e.g. transformers.models.qwen2.modeling_qwen2) whose layers call apply_rotary_pos_emb."""
    names = {type(module).__module__ for module in model.modules()}
    return [sys.modules[name] for name in sorted(names)
            if name in sys.modules and callable(getattr(sys.modules[name], "apply_rotary_pos_emb", None))]


@contextmanager
def fused_decoding(model, compile_kernels: bool = True):
    """Within: RMSNorms, SiLU MLPs and the rotary embedding of `model` run fused (see the module's docstring).
    compile_kernels=False swaps in the same functions uncompiled (what the CPU tests check)."""
    wrap = compiled if compile_kernels else (lambda function: function)
    patched = []  # (owner, attribute, previous instance value or None)
    for module in model.modules():
        forward = None
        if is_rms_norm(module):
            forward = norm_forward(module, wrap(rms_norm))
        elif is_silu_mlp(module):
            forward = mlp_forward(module, wrap(silu_mul))
        if forward is not None:
            patched.append((module, "forward", module.__dict__.get("forward")))
            module.forward = forward
    namespaces = rotary_namespaces(model)
    for namespace in namespaces:
        patched.append((namespace, "apply_rotary_pos_emb", namespace.apply_rotary_pos_emb))
        namespace.apply_rotary_pos_emb = wrap(namespace.apply_rotary_pos_emb)
    try:
        yield len(patched)
    finally:
        for owner, attribute, previous in reversed(patched):
            if previous is None:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, previous)
