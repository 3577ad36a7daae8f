"""Sync probe: does the sampler score its own tokens the way the trainer does?

Hypotheses served: sync.sampler_mismatch, sync.importance_weights (docs/failure-catalogue.md A1, A4). A sampler that
serves stale or wrong weights (LoRA never pushed to vLLM, a dropped sync) or computes at another precision
gives logprobs that differ from the trainer's on the very tokens it sampled.

Per loss token, with d = trainer_logprob - sampler_logprob (the log importance weight):

    logprob_diff_mean, logprob_diff_max   mean and max of |d|   (TRL's sampling/sampling_logp_difference)
    probs_diff_mean, probs_diff_max       mean and max of |exp(trainer) - exp(sampler)|
                                          (verl's training/rollout_probs_diff, the unit of its thresholds)
    k3_kl                                 mean of exp(d) - d - 1 >= 0: Schulman's k3 estimate of
                                          KL(sampler || trainer). The tokens were drawn by the sampler, and
                                          with the ratio r = p_trainer / p_sampler, E_sampler[r - 1 - log r]
                                          is exactly that KL (the other sign of d would not be unbiased).
    is_weight_mean, _min, _max            token importance weights w = exp(d)
    ess                                   sequence-level effective sample size (Σ w_seq)² / (N Σ w_seq²),
                                          w_seq = exp(Σ_t d_t) over each row's loss tokens; in (0, 1], 1 when
                                          every sequence has the same weight (computed in log space).
    log_ratio_mean                        mean of d, signed. Tokens drawn from the distribution whose logprobs the
                                          sampler reports give E_sampler[d] = -KL(sampler || trainer) <= 0, whatever
                                          the weights; a mean above 0 means the reported logprobs are not those of
                                          the distribution sampled from: logprobs taken before temperature (vLLM's
                                          raw logprobs at T < 1 give +KL(p_T || p_1)).
    logprob_slope                         sum(s * t) / sum(s^2), trainer on sampler logprobs: evidence only
                                          (near 1 when both apply the same temperature).

Only the first pass over a rollout (record.iteration == 0) compares like with like: later passes train
weights the sampler never saw, so the probe reports nothing for them.

Thresholds are the diagnostics' to judge. For reference, verl (docs/algo/rollout_corr.md, catalogue A4):
rollout_is_mean < 0.5 or > 2, ESS < 0.3, training/rollout_probs_diff_mean > 0.01 (precision problem;
< 0.005 is fine).
"""
from __future__ import annotations

import math

import torch

from flatline.probes.base import Probe


def sync_stats(sampler_logprobs: torch.Tensor, trainer_logprobs: torch.Tensor, loss_mask: torch.Tensor) -> dict:
    """Sampler/trainer agreement over the loss tokens. All [N, T]; rows without loss tokens are left out.

    Returns {} when the mask is empty. The tensors may come from different devices (a GPU sampler's logprobs, the
    trainer's on the CPU): they are compared on the CPU.
    """
    sampler, trainer, mask = on_cpu(sampler_logprobs, trainer_logprobs, loss_mask)
    mask = mask.bool()  # [N, T]
    rows = mask.any(dim=1)  # [N]
    if not rows.any():
        return {}
    d = (trainer - sampler).masked_fill(~mask, 0.0)  # [N, T] log importance weight per token
    tokens = d[mask]  # [M]
    weights = tokens.exp()  # [M]
    probs_diff = (trainer.exp() - sampler.exp()).abs()[mask]  # [M]
    log_w_seq = d.sum(dim=1)[rows]  # [N'] log sequence weight
    n = log_w_seq.numel()
    log_ess = 2 * torch.logsumexp(log_w_seq, dim=0) - math.log(n) - torch.logsumexp(2 * log_w_seq, dim=0)
    return {
        "logprob_diff_mean": float(tokens.abs().mean()),
        "logprob_diff_max": float(tokens.abs().max()),
        "probs_diff_mean": float(probs_diff.mean()),
        "probs_diff_max": float(probs_diff.max()),
        "k3_kl": float((weights - tokens - 1).mean()),
        "log_ratio_mean": float(tokens.mean()),
        "is_weight_mean": float(weights.mean()),
        "is_weight_min": float(weights.min()),
        "is_weight_max": float(weights.max()),
        "ess": min(1.0, float(log_ess.exp())),  # <= 1 by Cauchy-Schwarz; min() only absorbs rounding
        **_slope(sampler[mask], trainer[mask]),
    }


def on_cpu(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """float64 copies on the CPU (masks keep their dtype): per-token statistics of [N, T] tensors from any device."""
    return tuple(t.detach().to("cpu", torch.float64 if t.is_floating_point() else t.dtype) for t in tensors)


def _slope(sampler: torch.Tensor, trainer: torch.Tensor) -> dict:
    """Least-squares slope (through 0) of trainer on sampler logprobs; {} when every sampled token had probability 1."""
    energy = float((sampler * sampler).sum())
    return {"logprob_slope": float((sampler * trainer).sum()) / energy} if energy > 1e-12 else {}


def sampled_tokens(record) -> torch.Tensor:
    """[N, T] the loss tokens the sampler wrote: without a multi-turn episode's environment tokens, which have no
    sampler logprob (a mask_fn may put them in the loss; masking.env_tokens_in_loss says so, not the sync verdicts)."""
    mask = record.completion_mask.bool()
    if record.env_mask is not None:
        mask = mask & ~record.env_mask.bool().to(mask.device)
    return mask.to(record.completion_mask.dtype)


class SyncProbe(Probe):
    """sync/*: the sampler's logprobs against the trainer's on the sampled tokens (first pass of each rollout)."""

    family = "sync"
    tier = "cheap"

    def on_step(self, record) -> dict:
        if record.iteration != 0 or record.sampler_logprobs is None or record.trainer_logprobs is None:
            return {}
        return sync_stats(record.sampler_logprobs, record.trainer_logprobs, sampled_tokens(record))
