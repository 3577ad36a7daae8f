"""Stale-weights probe: does the sampler follow the policy being trained, or the one it started from?

Hypothesis served: sync.stale_weights. Per loss token of the first pass over a rollout, with
s = the sampler's logprob, t = the trainer's (the current policy), r = the initial policy's (LoRA adapter disabled,
or the weights before the first optimizer step for full fine-tuning), and a = t - r (how far the policy has moved),
b = s - r (how far the sampler has):

    tracking        sum(a * b) / sum(a^2): the share of the policy's movement since its start that the sampler
                    shows. 1 when the sampler holds the current weights, 0 when it still serves the initial ones
                    (never synced, a sync that loaded nothing, an update rounded away in the engine's dtype).
    tracking_se     its standard error from the residuals b - tracking * a: precision noise (a bf16 engine) is
                    independent of the policy's movement and only widens it.
    policy_drift    mean |a|; sampler_drift  mean |b|. At the first step the policy has not moved, so policy_drift there
                    is the forward's own noise (~1e-5 in float32, a few hundredths with a bf16 base): sync.stale_weights
                    reads tracking only on steps that moved well beyond it. Updates rounded away by a merged sync into
                    a bf16 engine are measured on the weights themselves (sync/merged_*, the vLLM sampler).

Nothing is reported while the policy has not moved (sum a^2 = 0, e.g. step 1), or while dropout is active in the
trainer's forward (its logprobs are then those of a random sub-network: policy.nondeterministic_forward's finding).
Tier full: one extra no-grad forward per step over STALE_ROWS rows, one completion of each of the first prompts
(none when the step record carries reference logprobs, beta > 0: then every row is read). Those rows' loss tokens
(a few hundred) pin tracking down well enough to tell a synced sampler (1) from a stale one (0), at a fraction of a
forward over the whole batch.
"""
from __future__ import annotations

import math

import torch

from flatline.probes.base import Probe
from flatline.probes.dropout import active_dropout_modules
from flatline.probes.masks import rescored_logprobs
from flatline.probes.sync import on_cpu, sampled_tokens

# Rows re-scored under the initial policy each step (when the record has no reference logprobs).
STALE_ROWS = 4


def spread_rows(rows: int, group: int | None, count: int = STALE_ROWS) -> torch.Tensor:
    """`count` row indices, one per prompt group first (rows i*G .. i*G+G-1 share a prompt): 0, G, 2G, .., then 1,
    G+1, ..; the first `count` rows when the batch is not whole groups."""
    if group and group > 0 and rows % group == 0:
        return torch.arange(rows).view(rows // group, group).t().reshape(-1)[:count]
    return torch.arange(min(rows, count))


def tracking_stats(sampler: torch.Tensor, trainer: torch.Tensor, initial: torch.Tensor, mask: torch.Tensor) -> dict:
    """The share of the policy's movement the sampler shows. All [N, T]; {} when the policy has not moved."""
    sampler, trainer, initial, mask = on_cpu(sampler, trainer, initial, mask)
    mask = mask.bool()
    a = (trainer - initial)[mask]
    b = (sampler - initial)[mask]
    moved = float((a * a).sum())
    if a.numel() < 2 or moved == 0.0:
        return {}
    tracking = float((a * b).sum()) / moved
    residual = b - tracking * a
    se = math.sqrt(float((residual * residual).sum()) / (a.numel() - 1) / moved)
    return {"tracking": tracking, "tracking_se": se, "policy_drift": float(a.abs().mean()),
            "sampler_drift": float(b.abs().mean())}


class StaleWeightsProbe(Probe):
    """sync/tracking: the sampler's logprobs against the initial and the current policy's."""

    family = "sync"
    tier = "full"

    def __init__(self, context=None, every=None):
        super().__init__(context, every)
        self._initial: dict | None = None  # full fine-tuning: trainable weights before the first step

    def on_gradients(self, model, optimizer) -> dict:
        if self._initial is None and not hasattr(model, "disable_adapter"):
            self._initial = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
        return {}

    def on_step(self, record) -> dict:
        if (record.iteration != 0 or record.sampler_logprobs is None or record.trainer_logprobs is None
                or record.model is None or active_dropout_modules(record.model)):
            return {}
        initial, rows = record.ref_logprobs, torch.arange(record.completion_ids.size(0))
        if initial is None:
            rows = spread_rows(len(rows), self.context.num_generations if self.context else None)
            initial = self.initial_logprobs(record, rows)
        if initial is None:
            return {}
        trainer = record.trainer_logprobs[rows.to(record.trainer_logprobs.device)]
        return tracking_stats(record.sampler_logprobs[rows.to(record.sampler_logprobs.device)], trainer,
                              initial.to(trainer), sampled_tokens(record)[rows.to(record.completion_mask.device)])

    @torch.no_grad()
    def initial_logprobs(self, record, rows: torch.Tensor):
        """The initial policy's logprobs of the completions `rows` [n, T] (adapter disabled, or the weights kept
        before the first step); None when neither is available."""
        model = record.model
        temperature = self.context.temperature if self.context else 1.0
        args = tuple(t[rows.to(t.device)] for t in (record.prompt_ids, record.prompt_mask, record.completion_ids)) \
            + (temperature,)
        was_training = model.training
        # peft's disable_adapter re-enables grads of the active adapter on exit (set_adapter does requires_grad_):
        # a frozen adapter would come back trainable. A probe changes nothing, so the flags are put back.
        grad_flags = [(p, p.requires_grad) for p in model.parameters()]
        model.eval()
        try:
            if hasattr(model, "disable_adapter"):
                with model.disable_adapter():
                    return rescored_logprobs(model, *args)[0]
            if self._initial is None:
                return None
            return rescored_logprobs(model, *args, params=self._initial)[0]
        finally:
            model.train(was_training)
            for parameter, flag in grad_flags:
                parameter.requires_grad_(flag)
