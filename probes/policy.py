"""Policy probe: has sampling diversity collapsed, and does the KL term swamp the policy gradient?

Reads record.entropy ([N, T] nats per completion token, under the trainer's forward), record.completion_mask
([N, T] the loss mask), record.completion_ids ([N, T]) with record.completion_lengths ([N]),
and record.loss_parts ("loss", and "kl" / "kl_loss" only when beta > 0). Serves entropy.collapse,
kl.penalty_dominates and kl.drift.

kl_loss_share = |kl_loss| / (|loss - kl_loss| + |kl_loss|) compares loss VALUES. On-policy (num_iterations = 1)
the policy term's value is -mean(advantage) ~ 0 whatever gradient it carries (trl#3452: a loss of 0 is
expected), so the share reads ~1 in a healthy on-policy run as soon as the KL is non-zero. kl_grad_share compares
what each term does to the gradient instead: per loss token, the coefficient on grad log p of the policy term is
|advantage| (at ratio 1, unclipped: an upper bound) and that of the k3 KL term is beta * |1 - exp(ref - logp)|.
It needs beta (ProbeContext.beta); it is reported when beta > 0
and the record has ref_logprobs.
"""
from __future__ import annotations

import torch

from flatline.probes.base import Probe


def masked_entropy(entropy: torch.Tensor, mask: torch.Tensor, num_generations: int | None = None) -> dict:
    """Mean entropy over loss tokens, and (with a group size dividing N) the lowest per-group mean.

    entropy, mask: [N, T]. Groups without loss tokens are left out of the minimum.
    """
    entropy = entropy.detach().double()
    mask = mask.detach().double()
    tokens = mask.sum()
    out = {"entropy_mean": float((entropy * mask).sum() / tokens) if tokens > 0 else 0.0}
    N = entropy.size(0)
    if num_generations and N and N % num_generations == 0:
        per_row = (entropy * mask).sum(dim=1).view(-1, num_generations).sum(dim=1)  # [P]
        per_group_tokens = mask.sum(dim=1).view(-1, num_generations).sum(dim=1)  # [P]
        has_tokens = per_group_tokens > 0
        if has_tokens.any():
            out["entropy_group_min"] = float((per_row[has_tokens] / per_group_tokens[has_tokens]).min())
    return out


def completion_sequences(completion_ids: torch.Tensor, lengths: torch.Tensor) -> list[tuple[int, ...]]:
    """Each completion's token ids up to its length (EOS included). [N, T], [N] -> N tuples"""
    return [tuple(row[:int(n)].tolist()) for row, n in zip(completion_ids, lengths)]


def duplicate_stats(sequences: list[tuple[int, ...]], num_generations: int) -> dict:
    """identical_frac: share of groups whose completions are all the same; duplicate_frac: share of completions
    equal to an earlier one of their group (greedy sampling gives 1 and (G-1)/G)."""
    groups = [sequences[i:i + num_generations] for i in range(0, len(sequences), num_generations)]
    identical = sum(len(set(group)) == 1 for group in groups)
    duplicates = sum(len(group) - len(set(group)) for group in groups)
    return {"identical_frac": identical / len(groups), "duplicate_frac": duplicates / len(sequences)}


def kl_stats(loss_parts: dict) -> dict:
    """kl, kl_loss, pg_loss (= loss - kl_loss) and kl_loss_share; {} when the run has no KL term (beta = 0).

    The share is 0 when both terms are exactly 0 (nothing to dominate).
    """
    kl, kl_loss, loss = loss_parts.get("kl"), loss_parts.get("kl_loss"), loss_parts.get("loss")
    out = {}
    if kl is not None:
        out["kl"] = float(kl)
    if kl_loss is not None and loss is not None:
        pg_loss = float(loss) - float(kl_loss)
        denominator = abs(pg_loss) + abs(float(kl_loss))
        out.update(kl_loss=float(kl_loss), pg_loss=pg_loss,
                   kl_loss_share=abs(float(kl_loss)) / denominator if denominator > 0 else 0.0)
    return out


def kl_grad_share(logps: torch.Tensor, ref_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                  beta: float) -> float:
    """Share of the KL term in the summed |gradient coefficient| over loss tokens (0 when both are 0).

    logps, ref_logps, mask: [N, T]; advantages: [N]. Policy term: |A| per token; KL (k3) term:
    beta * |1 - exp(ref_logps - logps)|, its derivative with respect to logps. A batch whose advantages are all
    0 gives 1.0 as soon as the policy has moved: only the KL term pulls (the finding is then advantage's).
    """
    mask = mask.detach().double()
    kl_coef = beta * (1 - torch.exp(ref_logps.detach().double() - logps.detach().double())).abs()  # [N, T]
    pg_coef = advantages.detach().double().abs().unsqueeze(1).expand_as(mask)  # [N, T]
    kl_total, pg_total = float((kl_coef * mask).sum()), float((pg_coef * mask).sum())
    return kl_total / (kl_total + pg_total) if kl_total + pg_total > 0 else 0.0


class PolicyProbe(Probe):
    """policy/*: token entropy, identical / duplicate completions per group, KL and the KL term's share of the loss."""

    family = "policy"
    tier = "cheap"
    every = 1

    def on_step(self, record) -> dict:
        G, out = self.context.num_generations, {}
        if record.entropy is not None and record.completion_mask is not None:
            out.update(masked_entropy(record.entropy, record.completion_mask, G))
        if record.completion_ids is not None and record.completion_lengths is not None:
            N = record.completion_ids.size(0)
            if G and N and N % G == 0:
                out.update(duplicate_stats(completion_sequences(record.completion_ids, record.completion_lengths), G))
        out.update(kl_stats(record.loss_parts or {}))
        beta = self.context.beta
        if beta and record.ref_logprobs is not None and record.trainer_logprobs is not None:
            out["kl_grad_share"] = kl_grad_share(record.trainer_logprobs, record.ref_logprobs, record.advantages,
                                                 record.completion_mask, beta)
        return out
