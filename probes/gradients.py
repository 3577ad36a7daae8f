"""Gradient probe: do the trainable parameters get gradients, are they finite, and how hard does clipping bite?

Runs in `on_gradients(model, optimizer)`: after backward, before clipping and the optimizer step, so every norm
is pre-clip (TRL's and verl's logged grad_norm is pre-clip too, verl#2282). Reports, per step:

- `global_norm`: L2 norm of all trainable gradients (what clip_grad_norm_ returns); `norm/<group>`: the same per
  parameter group (LoRA `q_proj.lora_A`, full fine-tuning `mlp.down_proj`; see `param_group`).
- `clip_coef`: min(1, max_grad_norm / global_norm), the factor clipping multiplies the gradients by (1.0: no
  clipping; skipped when the probe is given no max_grad_norm). Serves gradients.clipping_dominates (C4).
- `zero_grad_frac`: fraction of trainable elements whose gradient is exactly 0 or missing; `params_without_grad`:
  trainable tensors whose .grad is None (detached loss, unused module). Serve gradients.no_flow.
- `nonfinite`: gradient elements that are NaN or inf. Serves gradients.non_finite.

Norms are torch's multi-tensor norms, as clip_grad_norm_ takes them, squared and summed in float64; nothing is
written back. The functions below are pure
over (name, parameter) pairs, so attach() and other loops reuse them.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from flatline.probes.base import Probe
from flatline.probes.pieces import flat_pieces

# Per-group metrics are kept to a handful so metrics.jsonl stays readable: a Llama full fine-tune has 12
# module kinds, LoRA on all linear layers 14 (7 projections x A/B); kinds beyond the first MAX_GROUPS - 1 are
# pooled into OTHER_GROUP.
MAX_GROUPS = 16
OTHER_GROUP = "other"
# Module-path components that only wrap the real module (peft, DDP, torch.compile, HF's inner `model`).
WRAPPER_NAMES = frozenset({"base_model", "model", "module", "_orig_mod", "base_layer", "original_module"})

NamedParams = Iterable[tuple[str, torch.Tensor]]


def param_group(name: str) -> str:
    """The module kind a parameter belongs to, for per-group metrics.

    LoRA parameters group by the adapted projection and the LoRA matrix: `...q_proj.lora_A.default.weight` ->
    `q_proj.lora_A` (also lora_B, lora_embedding_A/B, lora_magnitude_vector). Others group by the module path
    inside the repeated block, at most two names deep: `model.layers.3.mlp.down_proj.weight` -> `mlp.down_proj`,
    `model.embed_tokens.weight` -> `embed_tokens`; a Sequential member keeps its index: `net.2.weight` -> `net.2`.
    Weight and bias of one module share a group.
    """
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.startswith("lora_") and i > 0:
            return f"{parts[i - 1]}.{part}"
    parts = parts[:-1] or parts  # drop the attribute (weight, bias); a bare parameter keeps its own name
    if "modules_to_save" in parts:  # peft's trainable copy: `lm_head.modules_to_save.default.weight`
        cut = parts.index("modules_to_save")
        parts = parts[:cut] + parts[cut + 2:]
    parts = [p for p in parts if p not in WRAPPER_NAMES] or parts[-1:]
    numbered = [i for i, p in enumerate(parts) if p.isdigit()]
    if numbered and numbered[-1] < len(parts) - 1:
        parts = parts[numbered[-1] + 1:]
    return ".".join(parts[-2:])


def group_names(names: Iterable[str], max_groups: int = MAX_GROUPS) -> dict[str, str]:
    """name -> group, in order of first appearance; groups past the first max_groups - 1 become OTHER_GROUP."""
    names = list(names)
    order: list[str] = []
    for name in names:
        group = param_group(name)
        if group not in order:
            order.append(group)
    kept = set(order) if len(order) <= max_groups else set(order[: max_groups - 1])
    return {name: (param_group(name) if param_group(name) in kept else OTHER_GROUP) for name in names}


def trainable(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The (name, parameter) pairs that require grad."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


@torch.no_grad()
def squared_norms(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """name -> sum of squared elements (a 0-d float64 tensor on the tensor's device).

    One multi-tensor norm per device and dtype, as clip_grad_norm_ does (a norm per tensor would cost launches
    per tensor, hundreds of them with LoRA).
    """
    by_kind: dict[tuple, list[tuple[str, torch.Tensor]]] = {}
    for name, t in named_tensors:
        by_kind.setdefault((t.device, t.dtype), []).append((name, t.detach()))
    squares = {}
    for members in by_kind.values():
        norms = torch._foreach_norm([t for _, t in members], 2, dtype=torch.float64)
        squares.update(zip((name for name, _ in members), torch._foreach_mul(norms, norms)))
    return squares


def squared_grad_norms(named_params: NamedParams) -> dict[str, torch.Tensor]:
    """name -> sum of squared gradient elements (squared_norms of each .grad); None grads skipped."""
    return squared_norms((name, p.grad) for name, p in named_params if p.grad is not None)


def norm_metrics(squares: dict[str, float], groups: dict[str, str]) -> dict:
    """global_norm and norm/<group> from per-parameter squared norms; a parameter without a square counts 0."""
    per_group: dict[str, float] = {}
    for name, group in groups.items():
        per_group[group] = per_group.get(group, 0.0) + squares.get(name, 0.0)
    row = {"global_norm": math.sqrt(sum(per_group.values()))}
    row.update({f"norm/{group}": math.sqrt(total) for group, total in per_group.items()})
    return row


def clip_coefficient(global_norm: float, max_grad_norm: float | None) -> float | None:
    """min(1, max_grad_norm / global_norm): what clipping multiplies the gradients by; None when nothing clips.

    torch's clip_grad_norm_ divides by global_norm + 1e-6; the difference is below float32 resolution for any
    norm that clipping acts on. A non-finite norm gives NaN (clipping would turn every gradient into NaN).
    """
    if max_grad_norm is None or max_grad_norm <= 0:  # the trainer's max_grad_norm = 0 turns clipping off
        return None
    if not math.isfinite(global_norm):
        return math.nan
    return 1.0 if global_norm <= max_grad_norm else max_grad_norm / global_norm


def full_numel(p: torch.Tensor) -> int:
    """Elements of the whole parameter: a DeepSpeed ZeRO-3 shard's `ds_numel`, else numel()."""
    return int(getattr(p, "ds_numel", p.numel()))


@torch.no_grad()
def grad_flow(named_params: NamedParams, grads: dict[str, torch.Tensor | None] | None = None) -> dict:
    """zero_grad_frac (elements with grad exactly 0 or None; NaN when nothing is trainable), params_without_grad
    (tensors), nonfinite (elements). `grads` (name -> whole gradient or None) replaces .grad (sharded parameters)."""
    total, without, missing, present = 0, 0, 0, []
    for name, p in named_params:
        grad = p.grad if grads is None else grads.get(name)
        total += full_numel(p)
        if grad is None:
            without += 1
            missing += full_numel(p)
        else:
            present.append(grad)
    counts = [torch.stack([(g == 0).sum(), (~torch.isfinite(g)).sum()]) for (g,) in flat_pieces(present, dtype=None)]
    zero, nonfinite = stacked_sum(counts, width=2) if counts else (0, 0)
    return {"zero_grad_frac": (zero + missing) / total if total else math.nan, "params_without_grad": without,
            "nonfinite": int(nonfinite)}


def gradient_metrics(named_params: NamedParams, max_grad_norm: float | None = None,
                     squares: dict[str, float] | None = None,
                     grads: dict[str, torch.Tensor | None] | None = None) -> dict:
    """Every gradient metric of one step; `squares` (name -> squared norm) overrides the norms read from .grad, and
    `grads` (name -> whole gradient or None) replaces .grad (sharded parameters: flatline.probes.sharded)."""
    named_params = list(named_params)
    if squares is None and grads is not None:
        squares = to_numbers(squared_norms((name, g) for name, g in grads.items() if g is not None))
    if squares is None:
        squares = to_numbers(squared_grad_norms(named_params))
    row = norm_metrics(squares, group_names(name for name, _ in named_params))
    coef = clip_coefficient(row["global_norm"], max_grad_norm)
    if coef is not None:
        row["clip_coef"] = coef
    row.update(grad_flow(named_params, grads))
    return row


def to_numbers(values: dict[str, torch.Tensor], dtype: torch.dtype = torch.float64) -> dict:
    """A dict of same-shaped tensors (0-d or [k]) as Python numbers (or lists) of `dtype` (float64: floats; int64:
    exact integers), one device sync per device."""
    names, numbers = list(values), []
    for device in {v.device for v in values.values()}:
        on_device = [i for i, name in enumerate(names) if values[name].device == device]
        numbers += list(zip(on_device, torch.stack([values[names[i]].to(dtype) for i in on_device]).tolist()))
    return {names[i]: number for i, number in sorted(numbers)}


def stacked_sum(rows: list[torch.Tensor], width: int) -> list:
    """Elementwise sum of [width] tensors that may sit on several devices, as Python numbers."""
    total = [0] * width
    for device in {r.device for r in rows}:
        part = torch.stack([r for r in rows if r.device == device]).sum(dim=0).tolist()
        total = [a + b for a, b in zip(total, part)]
    return total


class GradientProbe(Probe):
    """Pre-clip gradient norms (global, per group), clip coefficient, gradient flow and non-finite counts."""

    family = "gradients"
    tier = "cheap"

    def __init__(self, context=None, every: int | None = None, max_grad_norm: float | None = None):
        super().__init__(context, every)
        self.max_grad_norm = max_grad_norm

    def on_gradients(self, model, optimizer) -> dict:
        return gradient_metrics(trainable(model), self.max_grad_norm)
