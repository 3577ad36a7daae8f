"""Is the policy's training forward deterministic? Dropout left on makes it a random sub-network: the log-probs the
loss differentiates are not those of the policy that sampled (nor, at num_iterations > 1, those of the forward that
computed the old log-probs), so the importance ratio at num_iterations = 1 is not exactly 1.

- DropoutModulesProbe (cheap): dropout modules with p > 0 while the model trains (`policy/dropout_modules_active`).
  Functional dropout (attention_dropout in most HF attention code) has no module; the full probe sees it.
- RepeatedForwardProbe (full): two train-mode forwards of the same rows under no_grad with the RNG forked, compared
  (`policy/repeat_forward_logprob_gap`, the largest |difference| of completion-token log-probs, in nats). Without
  dropout the two agree exactly on CPU (to float noise on a GPU). The model's mode and RNG are left as found.
"""
from __future__ import annotations

import torch

from flatline.probes.base import Probe
from flatline.probes.masks import rescored_logprobs

# Rows re-scored twice by the full probe, every REPEAT_EVERY steps.
REPEAT_ROWS = 2
REPEAT_EVERY = 10


def active_dropout_modules(model: torch.nn.Module) -> int:
    """Dropout modules that drop something in the model's current mode (p > 0 and training)."""
    return sum(1 for module in model.modules()
               if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0 and module.training)


@torch.no_grad()
def repeated_forward_gap(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                         completion_mask: torch.Tensor, rows: int = REPEAT_ROWS) -> float | None:
    """The largest |difference| of completion-token log-probs between two train-mode forwards of the same rows."""
    chosen = torch.nonzero(completion_mask.bool().any(dim=1)).view(-1)[:rows]
    if chosen.numel() == 0:
        return None
    mask = completion_mask[chosen].bool()
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    was_training = model.training
    args = (prompt_ids[chosen], prompt_mask[chosen], completion_ids[chosen])
    try:
        with torch.random.fork_rng(devices=devices):
            model.train()
            first, _ = rescored_logprobs(model, *args)
            second, _ = rescored_logprobs(model, *args)
    finally:
        model.train(was_training)
    gap = (first - second).abs().cpu()[mask]
    return float(gap.max()) if gap.numel() else 0.0


class DropoutModulesProbe(Probe):
    family = "policy"
    tier = "cheap"

    def on_step(self, record) -> dict:
        if record.model is None:
            return {}
        return {"dropout_modules_active": active_dropout_modules(record.model)}


class RepeatedForwardProbe(Probe):
    family = "policy"
    tier = "full"
    every = REPEAT_EVERY

    def on_step(self, record) -> dict:
        if record.model is None or record.completion_ids is None or record.prompt_ids is None:
            return {}
        gap = repeated_forward_gap(record.model, record.prompt_ids, record.prompt_mask, record.completion_ids,
                                   record.completion_mask)
        return {} if gap is None else {"repeat_forward_logprob_gap": gap}
