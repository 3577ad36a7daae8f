"""Every log-probability the trainer and the HF sampler compute, in one place. N = rows, T = completion tokens,
L = prompt tokens, V = vocabulary. All exact; two savings make them cheap:

1. Shared prompts: the G completions of a prompt attend to one key/value cache computed once for the prompt,
   instead of G copies of it; gradients flow back through the shared cache into the prompt positions. This saves
   (G-1)/G of the prompt's compute.
2. Length buckets: completions are padded after their EOS to the longest in the batch. Rows are sorted by length
   and split where that removes the most padding, each bucket cut to its own longest row.

Logits become log-probabilities only at the positions that need them, without a [N, T, V] log-softmax.
"""
from __future__ import annotations

import torch

# Rows of logits processed at once when a [N, T, V] tensor would be large (49k vocabulary).
LOGIT_CHUNK_ROWS = 8
# A split must remove at least this share of the padded positions to be worth a second forward call.
MIN_BUCKET_SAVING = 0.1


# --- logits -> per-token numbers ---

def token_logprobs(logits: torch.Tensor, token_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(token) under softmax(logits / temperature), without materialising a [N, T, V] log-softmax.

    logits: [N, T, V] (position t predicts token t); token_ids: [N, T]. Temperature 0 (greedy) scores at 1.
    Returns [N, T] float32.
    """
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1).float()  # [N, T]
    normaliser = torch.cat([torch.logsumexp(chunk.float(), dim=-1) for chunk in logits.split(LOGIT_CHUNK_ROWS)])  # [N, T]
    return picked - normaliser


@torch.no_grad()
def token_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy (nats) of softmax(logits / temperature) at each position. [N, T, V] -> [N, T]"""
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    out = []
    for chunk in logits.split(LOGIT_CHUNK_ROWS):
        logp = torch.log_softmax(chunk.float(), dim=-1)
        out.append(-(logp.exp() * logp).sum(-1))
    return torch.cat(out)


# --- forwards that compute each prompt once ---

def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding, as transformers' generate computes them. [B, L] -> [B, L]"""
    return (attention_mask.cumsum(dim=1) - 1).clamp(min=0)


def prefill(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, prompt_of_row: torch.Tensor):
    """Run P distinct prompts once; return the last position's logits [n, 1, V] and a cache with one row per row.

    prompt_ids, prompt_mask: [P, L] left-padded; prompt_of_row: [n] which prompt each row continues.
    """
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions(prompt_mask),
                use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    cache.batch_select_indices(prompt_of_row)
    return out.logits[prompt_of_row], cache


def completion_logits(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, prompt_of_row: torch.Tensor,
                      completion_ids: torch.Tensor) -> torch.Tensor:
    """Logits that predict each completion token, computing every distinct prompt once.

    prompt_ids, prompt_mask: [P, L]; prompt_of_row: [n]; completion_ids: [n, T]. Every completion position is
    attended, as in generate; padding after EOS comes later and cannot change the tokens before it.
    Returns [n, T, V]: row t predicts completion token t.
    """
    first, cache = prefill(model, prompt_ids, prompt_mask, prompt_of_row)  # [n, 1, V]
    if completion_ids.size(1) == 1:
        return first
    attention = torch.cat([prompt_mask[prompt_of_row], torch.ones_like(completion_ids)], dim=1)  # [n, L+T]
    start = prompt_ids.size(1)
    rest = model(input_ids=completion_ids[:, :-1], attention_mask=attention[:, :-1],
                 position_ids=positions(attention)[:, start:-1], past_key_values=cache, use_cache=True).logits
    return torch.cat([first, rest], dim=1)  # [n, T, V]


def prompt_logits(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
    """Logits that predict prompt tokens 1..L-1 (only for a loss mask that reaches into the prompt).

    prompt_ids, prompt_mask: [P, L] left-padded. Returns [P, L-1, V]: row j predicts prompt token j+1.
    """
    return model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions(prompt_mask)).logits[:, :-1]


def length_buckets(lengths: torch.Tensor) -> list[torch.Tensor]:
    """Split rows (by index) into at most two buckets of similar length when that saves enough padding.

    lengths: [n] tokens per row. Returns index tensors, shortest bucket first, covering every row once.
    """
    order = torch.argsort(lengths, stable=True)
    ordered = lengths[order]
    n, longest = len(ordered), int(ordered[-1])
    padded = n * longest
    best_split, best_cost = n, padded
    for split in range(1, n):
        cost = split * int(ordered[split - 1]) + (n - split) * longest
        if cost < best_cost:
            best_split, best_cost = split, cost
    if padded - best_cost < MIN_BUCKET_SAVING * padded:
        return [order]
    return [order[:best_split], order[best_split:]]


def pad_right(values: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad [n, t] to [n, width]."""
    return torch.nn.functional.pad(values, (0, width - values.size(1)))


# --- a rollout's rows under a model ---

def rollout_logprobs(model, rollout, rows: torch.Tensor, num_generations: int, temperature: float,
                     with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token logprobs (and entropy) of the rollout's completions `rows` under `model`: [n, T] each.

    `rollout` has .samples (prompt and completion ids), .completion_mask, .completion_lengths and .prompt_loss_mask
    (flatline.trainer.rollout.Rollout). Rows are run in length buckets, each prompt once per bucket; the result is
    in the order of `rows`, zero past the longest row of its bucket, and differentiable when grad is on. When the
    mask puts prompt tokens in the loss, the logprobs are [n, L+T], the prompt's first.
    """
    samples, mask, G = rollout.samples, rollout.completion_mask, num_generations
    T = samples.completion_ids.size(1)
    mask_extent = (mask[rows] * torch.arange(1, T + 1)).amax(dim=1)  # a user's mask may reach past EOS
    lengths = torch.maximum(rollout.completion_lengths[rows], mask_extent)
    logps, entropy, order = [], [], []
    for bucket in length_buckets(lengths):
        index = rows[bucket]
        width = int(lengths[bucket].max())
        groups, prompt_of_row = torch.unique(index // G, return_inverse=True)
        logits = completion_logits(model, samples.prompt_ids[groups * G], samples.prompt_mask[groups * G],
                                   prompt_of_row, samples.completion_ids[index, :width])
        logps.append(pad_right(token_logprobs(logits, samples.completion_ids[index, :width], temperature), T))
        if with_entropy:
            entropy.append(pad_right(token_entropy(logits.detach(), temperature), T))
        order.append(bucket)
        del logits
    restore = torch.argsort(torch.cat(order))
    logps = torch.cat(logps)[restore]
    if rollout.prompt_loss_mask is not None:
        logps = torch.cat([prompt_token_logprobs(model, samples, rows, G, temperature), logps], dim=1)
    return logps, (torch.cat(entropy)[restore] if with_entropy else None)


def prompt_token_logprobs(model, samples, rows: torch.Tensor, num_generations: int, temperature: float) -> torch.Tensor:
    """Logprobs of the prompt tokens of `rows` (each distinct prompt run once): [n, L], 0 in column 0."""
    groups, prompt_of_row = torch.unique(rows // num_generations, return_inverse=True)
    prompt_ids = samples.prompt_ids[groups * num_generations]  # [P, L]
    prompt_mask = samples.prompt_mask[groups * num_generations]
    logits = prompt_logits(model, prompt_ids, prompt_mask)
    scored = token_logprobs(logits, prompt_ids[:, 1:], temperature)  # [P, L-1]
    return torch.nn.functional.pad(scored, (1, 0))[prompt_of_row]
