"""Copies of the trainable weights before an optimizer step (StepRecord.pre_step_weights), in few kernels."""
from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def snapshot(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of the tensors in one multi-tensor kernel per device and dtype (a clone each costs a launch each)."""
    copies = [torch.empty_like(t) for t in tensors]
    groups: dict[tuple, list[int]] = {}
    for index, tensor in enumerate(tensors):
        groups.setdefault((tensor.device, tensor.dtype), []).append(index)
    for indices in groups.values():
        torch._foreach_copy_([copies[i] for i in indices], [tensors[i].detach() for i in indices])
    return copies


def pre_step_weights(named_params: Sequence[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """name -> a copy of the parameter, as StepRecord.pre_step_weights holds them."""
    return dict(zip((name for name, _ in named_params), snapshot([p for _, p in named_params])))
