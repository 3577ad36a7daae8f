"""Update probe: did the optimizer step move the weights it should, by how much, and did the dtype keep it?

Runs in `on_step(record)` after the optimizer step, from record.model, record.optimizer and
record.pre_step_weights (trainable name -> value before the step; any object with those three attributes
works, see probes/attach.py). Its `on_gradients` hook, before the step, only notes the learning rates the step
will use (the trainer's scheduler has moved them by on_step), which parameters have gradients, and, once, the
frozen weights' checksums. Reports, per step:

- `rel_update`, `rel_update/<group>`: ||W_after - W_before|| / ||W_before|| over the trainable weights (groups as
  probes.gradients.param_group); inf where the weights were all zero before (a LoRA B matrix's first step).
  `lora_effective_rel_update`: for LoRA, ||delta(scale * B @ A)|| / ||W_base||, the mean over adapted modules.
  Serve update.too_small and update.weights_unchanged (C2).
- `changed_frac`: fraction of trainable elements whose stored value changed. Serves update.weights_unchanged.
- `trainable_params`, `optimizer_params`, `trainable_not_in_optimizer`, `frozen_in_optimizer` (elements).
  Serve update.optimizer_coverage (C1: the frozen adapter, an optimizer built before LoRA was applied).
- `base_drift_tensors`, `base_drift_max_rel`: frozen tensors whose stored bits changed since the first call (an
  exact integer sum of the raw bits, one read of each tensor in its own dtype), and the largest relative change of
  a float64 sum of squares among them (re-read only when bits changed). Serves update.base_drift (A2, C5).
- `precision_kept`, `swallowed_frac` (torch Adam / AdamW only): the step's intended float64 update, recomputed
  from the optimizer state as torch.optim.AdamW does it, against the change the stored dtype kept:
  ||actual|| / ||intended|| (1.0 in fp32; near 0 when bf16 rounds the update away) and the fraction of elements
  whose intended update was non-zero but whose stored value did not change. Serve update.precision_swallowed (C3).

Everything is read, in float64 chunks; nothing is written back. Left out: DoRA magnitudes in the effective LoRA
update, optimizers other than torch's Adam/AdamW for precision (their keys are then absent).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flatline.probes.base import Probe
from flatline.probes.gradients import group_names, stacked_sum, to_numbers
from flatline.probes.pieces import flat_pieces


def ratio(numerator_sq: float, denominator_sq: float) -> float:
    """sqrt(numerator_sq / denominator_sq); 0/0 is 0 (nothing moved), x/0 is inf (moved from all zeros)."""
    if denominator_sq > 0:
        return math.sqrt(numerator_sq / denominator_sq)
    return 0.0 if numerator_sq == 0 else math.inf


# --- how far the trainable weights moved ---

@torch.no_grad()
def update_sizes(named_params: list[tuple[str, torch.Tensor]], before: dict[str, torch.Tensor]) -> dict:
    """rel_update (all), rel_update/<group>, changed_frac over the parameters that have a pre-step value."""
    params = {name: p for name, p in named_params if name in before}
    if not params:
        return {}
    members: dict[str, list[str]] = {}
    for name, group in group_names(params).items():
        members.setdefault(group, []).append(name)
    rows = {}  # per group: [||dW||^2, ||W_before||^2, changed elements]
    for group, names in members.items():
        row = torch.zeros(3, dtype=torch.float64, device=params[names[0]].device)
        for old, new in flat_pieces([before[n] for n in names], [params[n] for n in names]):
            delta = new - old
            row += torch.stack([torch.dot(delta, delta), torch.dot(old, old),
                                (new != old).sum(dtype=torch.float64)]).to(row.device)
        rows[group] = row
    totals = to_numbers(rows)
    delta_sq, weight_sq, changed = (sum(values) for values in zip(*totals.values()))
    out = {"rel_update": ratio(delta_sq, weight_sq)}
    out.update({f"rel_update/{group}": ratio(d, w) for group, (d, w, _) in totals.items()})
    out["changed_frac"] = changed / sum(p.numel() for p in params.values())
    return out


# --- is every trainable parameter in the optimizer? ---

def optimizer_coverage(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Element counts: trainable, in the optimizer, trainable but not in it, in it but frozen."""
    held = {id(p): p for group in optimizer.param_groups for p in group["params"]}
    train = {id(p): p for p in model.parameters() if p.requires_grad}
    return {
        "trainable_params": sum(p.numel() for p in train.values()),
        "optimizer_params": sum(p.numel() for p in held.values()),
        "trainable_not_in_optimizer": sum(p.numel() for i, p in train.items() if i not in held),
        "frozen_in_optimizer": sum(p.numel() for p in held.values() if not p.requires_grad),
    }


# --- did frozen weights move? ---

@torch.no_grad()
def checksums(named_tensors: list[tuple[str, torch.Tensor]]) -> dict[str, tuple[float, float]]:
    """name -> (float64 sum, float64 sum of squares), one read of each tensor."""
    totals = {}
    for name, t in named_tensors:
        pairs = [torch.stack([piece.sum(), torch.dot(piece, piece)]) for (piece,) in flat_pieces([t])]
        totals[name] = torch.stack(pairs).sum(dim=0) if pairs else torch.zeros(2, dtype=torch.float64, device=t.device)
    return {name: tuple(pair) for name, pair in to_numbers(totals).items()}


BIT_VIEWS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@torch.no_grad()
def bit_sums(named_tensors: list[tuple[str, torch.Tensor]]) -> dict[str, int]:
    """name -> the int64 sum of the tensor's elements read as integers of their width: exact, so any change of a
    stored value changes it (short of changes that cancel bit for bit); no float64 copy of the weights."""
    return to_numbers({name: t.detach().reshape(-1).view(BIT_VIEWS.get(t.element_size(), torch.uint8))
                       .sum(dtype=torch.int64) for name, t in named_tensors}, dtype=torch.int64)


def frozen(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(name, p) for name, p in model.named_parameters() if not p.requires_grad]


def base_drift(baseline: dict[str, tuple[float, float]], current: dict[str, tuple[float, float]]) -> dict:
    """base_drift_tensors: tensors in both whose checksum differs; base_drift_max_rel: max |d sumsq| / sumsq.
    `current` may hold only the tensors worth re-reading (those whose bits changed)."""
    drifted, worst = 0, 0.0
    for name in baseline.keys() & current.keys():
        (s0, q0), (s1, q1) = baseline[name], current[name]
        if s0 != s1 or q0 != q1:
            drifted += 1
            worst = max(worst, ratio((q1 - q0) ** 2, q0 ** 2))
    return {"base_drift_tensors": drifted, "base_drift_max_rel": worst}


# --- how much of the intended update did the dtype keep? ---

@dataclass
class PreStep:
    """What on_gradients saw just before the optimizer step."""

    optimizer_id: int
    lrs: list[float]  # per param group, the learning rate the step uses
    stepped: set[int]  # ids of the parameters with a gradient: the ones Adam updates


def pre_step(optimizer: torch.optim.Optimizer) -> PreStep:
    return PreStep(id(optimizer), [float(group["lr"]) for group in optimizer.param_groups],
                   {id(p) for group in optimizer.param_groups for p in group["params"] if p.grad is not None})


def is_adam(optimizer: torch.optim.Optimizer) -> bool:
    return isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW))


def adam_intended(before: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: float, lr: float,
                  beta1: float, beta2: float, eps: float, weight_decay: float, decoupled: bool) -> torch.Tensor:
    """The float64 update torch.optim.Adam(W) applied, from its state after the step (shapes as the parameter).

    torch/optim/adam.py (_single_tensor_adam, non-amsgrad): W *= 1 - lr * wd (decoupled, AdamW);
    W -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps). Adam's coupled weight decay is already
    inside m and v. amsgrad: pass max_exp_avg_sq as exp_avg_sq.
    """
    denom = exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** step) + eps
    update = -(lr / (1 - beta1 ** step)) * exp_avg / denom
    if decoupled and weight_decay:
        update = update - lr * weight_decay * before
    return update


def step_counts(steps: list) -> list[float]:
    """Adam's per-parameter step counts as floats, read in one transfer (fused and capturable Adam keep them on the
    GPU, where reading each alone waits for the GPU once per parameter)."""
    tensors = [s for s in steps if isinstance(s, torch.Tensor)]
    if len(tensors) == len(steps) and steps and len({t.device for t in tensors}) == 1:
        return [float(step) for step in torch.stack(tensors).reshape(-1).tolist()]
    return [float(s) for s in steps]


@torch.no_grad()
def update_precision(named_params: list[tuple[str, torch.Tensor]], before: dict[str, torch.Tensor],
                     optimizer: torch.optim.Optimizer, pre: PreStep | None = None) -> dict:
    """precision_kept = ||actual|| / ||intended||, swallowed_frac; {} for optimizers other than Adam/AdamW.

    `pre` (from before the step) gives the learning rates used and which parameters were stepped; without it the
    current learning rates are used and every parameter with Adam state counts as stepped.
    """
    if not is_adam(optimizer):
        return {}
    if pre is not None and pre.optimizer_id != id(optimizer):
        pre = None
    names = {id(p): name for name, p in named_params if name in before}
    rows = []  # per run of parameters sharing hyperparameters: [||actual||^2, ||intended||^2, swallowed, moving]
    for index, group in enumerate(optimizer.param_groups):
        lr = pre.lrs[index] if pre is not None else float(group["lr"])
        beta1, beta2 = (float(b) for b in group["betas"])
        decoupled = isinstance(optimizer, torch.optim.AdamW) or bool(group.get("decoupled_weight_decay", False))
        second = "max_exp_avg_sq" if group.get("amsgrad", False) else "exp_avg_sq"
        stepped = [p for p in group["params"] if id(p) in names and (pre is None or id(p) in pre.stepped)
                   and second in optimizer.state.get(p, {})]
        by_step: dict[float, list[torch.Tensor]] = {}  # Adam's step count, per parameter (equal within a run)
        for p, step in zip(stepped, step_counts([optimizer.state[p]["step"] for p in stepped])):
            by_step.setdefault(step, []).append(p)
        for step, params in by_step.items():
            states = [optimizer.state[p] for p in params]
            row = torch.zeros(4, dtype=torch.float64, device=params[0].device)
            for old, new, m, v in flat_pieces([before[names[id(p)]] for p in params], params,
                                              [s["exp_avg"] for s in states], [s[second] for s in states]):
                intended = adam_intended(old, m, v, step, lr, beta1, beta2, float(group["eps"]),
                                         float(group["weight_decay"]), decoupled)
                actual = new - old
                moving = intended != 0
                row += torch.stack([torch.dot(actual, actual), torch.dot(intended, intended),
                                    (moving & (actual == 0)).sum(dtype=torch.float64),
                                    moving.sum(dtype=torch.float64)]).to(row.device)
            rows.append(row)
    if not rows:
        return {}
    actual_sq, intended_sq, swallowed, moving = stacked_sum(rows, width=4)
    return {"precision_kept": math.sqrt(actual_sq / intended_sq) if intended_sq > 0 else math.nan,
            "swallowed_frac": swallowed / moving if moving else 0.0}


# --- the update LoRA actually makes to the weights ---

def lora_pairs(model: torch.nn.Module):
    """(module name, module, A name, B name, adapter) for every active LoRA adapter (peft LoraLayer duck-typed)."""
    for module_name, module in model.named_modules():
        scaling = getattr(module, "scaling", None)
        if not isinstance(scaling, dict) or not hasattr(module, "get_base_layer"):
            continue
        active = getattr(module, "active_adapters", None) or list(scaling)
        for adapter in active:
            if adapter in getattr(module, "lora_A", {}):
                yield module_name, module, f"lora_A.{adapter}.weight", f"lora_B.{adapter}.weight", adapter
            elif adapter in getattr(module, "lora_embedding_A", {}):
                yield module_name, module, f"lora_embedding_A.{adapter}", f"lora_embedding_B.{adapter}", adapter


def lora_delta_squares(a0: torch.Tensor, a1: torch.Tensor, b0: torch.Tensor, b1: torch.Tensor) -> torch.Tensor:
    """||B1 @ A1 - B0 @ A0||^2 per leading index, without forming the [out, in] products. A: [..., r, in],
    B: [..., out, r], float64.

    B1 A1 - B0 A0 = dB A1 + B0 dA = L @ R with L = [dB, B0] ([out, 2r]) and R = [A1; dA] ([2r, in]);
    ||L R||^2 = sum((L^T L) * (R R^T)), two [2r, 2r] Gram matrices, and no cancellation of large terms.
    """
    left = torch.cat([b1 - b0, b0], dim=-1)  # [..., out, 2r]
    right = torch.cat([a1, a1 - a0], dim=-2)  # [..., 2r, in]
    return ((left.mT @ left) * (right @ right.mT)).sum(dim=(-2, -1)).clamp(min=0)


def lora_delta_sq(a0: torch.Tensor, a1: torch.Tensor, b0: torch.Tensor, b1: torch.Tensor) -> float:
    """lora_delta_squares of one adapter pair, as a number."""
    return float(lora_delta_squares(a0, a1, b0, b1))


@torch.no_grad()
def lora_effective_update(model: torch.nn.Module, before: dict[str, torch.Tensor],
                          base_squares: dict[str, tuple[float, float]] | None = None) -> dict:
    """lora_effective_rel_update: mean over adapted modules of ||delta(scale * B @ A)|| / ||W_base||.

    base_squares (name -> (sum, sum of squares), as `checksums`) saves re-reading the base weights. Adapters of one
    shape (a projection's across layers) are stacked and reduced together.
    """
    params = dict(model.named_parameters())
    names = {id(p): name for name, p in params.items()}
    adapters = []  # (A before, A after, B before, B after, scale, ||W_base||^2)
    for module_name, module, a_key, b_key, adapter in lora_pairs(model):
        a_name, b_name = f"{module_name}.{a_key}", f"{module_name}.{b_key}"
        if a_name not in params or b_name not in params:
            continue
        a1, b1 = params[a_name], params[b_name]
        a0, b0 = before.get(a_name, a1).to(a1.device), before.get(b_name, b1).to(b1.device)
        # Linear: A [r, in], B [out, r]; conv: A [r, in, k, k], B [out, r, 1, 1]; embedding: A [r, vocab], B [dim, r]
        if b1.flatten(1).size(1) != a1.size(0):
            continue
        base = module.get_base_layer().weight
        base_name = names.get(id(base))
        if base_squares is not None and base_name in base_squares:
            base_sq = base_squares[base_name][1]
        else:
            base_sq = float(base.detach().double().pow(2).sum())
        if base_sq > 0:
            adapters.append((a0, a1, b0, b1, abs(float(module.scaling[adapter])), base_sq))
    if not adapters:
        return {}
    by_shape: dict[tuple, list[int]] = {}
    for index, (_, a1, _, b1, _, _) in enumerate(adapters):
        by_shape.setdefault((a1.shape, b1.shape, a1.device), []).append(index)
    squares = {}
    for key, indices in by_shape.items():
        a0, a1, b0, b1 = (torch.stack([adapters[i][k] for i in indices]).double().flatten(2) for k in range(4))
        squares[key] = lora_delta_squares(a0, a1, b0, b1)
    delta_sq = [0.0] * len(adapters)
    for device in {key[2] for key in squares}:  # one transfer per device
        keys = [key for key in squares if key[2] == device]
        values = torch.cat([squares[key] for key in keys]).tolist()
        for index, value in zip((i for key in keys for i in by_shape[key]), values):
            delta_sq[index] = value
    ratios = [scale * math.sqrt(sq / base_sq) for (*_, scale, base_sq), sq in zip(adapters, delta_sq)]
    return {"lora_effective_rel_update": sum(ratios) / len(ratios)}


class UpdateProbe(Probe):
    """Relative update size, changed fraction, optimizer coverage, base drift and dtype precision of each step."""

    family = "update"
    tier = "cheap"
    wants_pre_step_weights = True

    def __init__(self, context=None, every: int | None = None):
        super().__init__(context, every)
        self.baseline: dict[str, tuple[float, float]] | None = None  # frozen checksums at the first call
        self.baseline_bits: dict[str, int] = {}
        self.pre: PreStep | None = None

    def note_baseline(self, named: list[tuple[str, torch.Tensor]]) -> None:
        """Checksums of frozen tensors seen for the first time (all of them at the first call)."""
        new = [(name, t) for name, t in named if name not in self.baseline_bits]
        if self.baseline is None or new:
            self.baseline = {**(self.baseline or {}), **checksums(new)}
            self.baseline_bits.update(bit_sums(new))

    def on_gradients(self, model, optimizer) -> dict:
        self.pre = pre_step(optimizer)
        if self.baseline is None:
            self.note_baseline(frozen(model))
        return {}

    def on_step(self, record) -> dict:
        model, optimizer, before = record.model, record.optimizer, record.pre_step_weights
        pre, self.pre = self.pre, None
        row = optimizer_coverage(model, optimizer)
        fixed = frozen(model)
        if self.baseline is not None:
            bits, known = bit_sums(fixed), self.baseline_bits
            changed = [(name, t) for name, t in fixed if name in known and bits[name] != known[name]]
            row.update(base_drift(self.baseline, checksums(changed)))
        self.note_baseline(fixed)  # the first call's, and newly frozen tensors join it
        if before:
            named = [(name, p) for name, p in model.named_parameters() if name in before]
            row.update(update_sizes(named, before))
            row.update(lora_effective_update(model, before, self.baseline))
            row.update(update_precision(named, before, optimizer, pre))
        return row
