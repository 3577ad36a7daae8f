"""How much of the trained update a merged sync into a narrower engine dtype (bf16, fp16) keeps.

The engine stores cast(W), rounded to nearest. With `before` and `after` the trainer's full-precision merged weights
at two syncs (W0 + delta_then, W0 + delta_now), the update the trainer made is u = after - before and the engine
moved by e = cast(after) - cast(before):

    kept      sum(e * u) / sum(u^2): the share of the update the engine shows (a projection, like sync/tracking).
              1 in float32. When W sits on the bf16 grid (a bf16 checkpoint, or dtype = "bfloat16") and |u| is below
              half a bf16 unit of W, cast(W + u) == W exactly: 0. When W sits off the grid (a float32 or dequantised
              checkpoint) an element jumps a whole unit with probability ~|u| / unit: ~1 in expectation, but noisy.
    changed   the fraction of elements with u != 0 whose engine value moved.

Measured twice per sync (MergedSyncMeter): against the previous sync (the step's update) and against the engine's
starting weights (the cumulative update: small steps add up and may cross half a unit later).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

NARROW_DTYPES = (torch.bfloat16, torch.float16)  # engine dtypes whose cast can round an update away


@dataclass(frozen=True)
class CastSums:
    """Sums over elements, added up over layers before they become ratios."""

    shown_dot: float = 0.0  # sum(e * u)
    update_sq: float = 0.0  # sum(u^2)
    moved: int = 0  # elements with u != 0
    changed: int = 0  # ... whose engine value moved

    def __add__(self, other: "CastSums") -> "CastSums":
        return CastSums(self.shown_dot + other.shown_dot, self.update_sq + other.update_sq,
                        self.moved + other.moved, self.changed + other.changed)

    def ratios(self) -> dict:
        """{"kept", "changed"}; {} when nothing moved."""
        if self.moved == 0 or self.update_sq == 0.0:
            return {}
        return {"kept": self.shown_dot / self.update_sq, "changed": self.changed / self.moved}


@torch.no_grad()
def cast_sums(before: torch.Tensor, after: torch.Tensor, dtype: torch.dtype) -> CastSums:
    """Sums for the update before -> after (full precision, same shape) as seen through a cast to dtype."""
    update = after.double() - before.double()
    shown = after.to(dtype).double() - before.to(dtype).double()
    moved = update != 0
    return CastSums(float((shown * update).sum()), float((update * update).sum()), int(moved.sum()),
                    int((moved & (shown != 0)).sum()))


def update_kept(before: torch.Tensor, after: torch.Tensor, dtype: torch.dtype) -> dict:
    """{"kept", "changed"} of one tensor's update through a cast to dtype; {} when it did not move."""
    return cast_sums(before, after, dtype).ratios()


class MergedSyncMeter:
    """sync/merged_update_* and sync/merged_total_* for an engine of a narrow dtype; holds the synced layers' weights
    at the start and at the last sync (full precision), and nothing for an engine that casts nothing away."""

    def __init__(self, engine_dtype: torch.dtype):
        self.dtype = engine_dtype
        self.start: dict[str, torch.Tensor] = {}
        self.last: dict[str, torch.Tensor] = {}

    @property
    def active(self) -> bool:
        return self.dtype in NARROW_DTYPES

    def begin(self, layers: dict[str, torch.Tensor]) -> None:
        """The weights the engine was built from (name -> full-precision tensor)."""
        if self.active:
            self.start = {name: tensor.detach().clone() for name, tensor in layers.items()}
            self.last = dict(self.start)

    def measure(self, layers: dict[str, torch.Tensor]) -> dict:
        """The metrics for this sync's weights (name -> full-precision tensor); remembers them for the next."""
        if not self.active or not self.start:
            return {}
        step, total = CastSums(), CastSums()
        for name, after in layers.items():
            if name not in self.start:
                continue
            step = step + cast_sums(self.last[name], after, self.dtype)
            total = total + cast_sums(self.start[name], after, self.dtype)
            self.last[name] = after.detach().clone()
        return {f"sync/merged_{scope}_{key}": value
                for scope, sums in (("update", step), ("total", total)) for key, value in sums.ratios().items()}
