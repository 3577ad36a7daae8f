"""How the trainer and the sampler batch a GRPO step without wasted compute. Both are exact.

1. Shared prompts: the G completions of a prompt attend to one key/value cache computed once for the
   prompt, instead of G copies of it; gradients flow back through the shared cache into the prompt
   positions. This saves (G-1)/G of the prompt's compute.
2. Length buckets: completions are padded after their EOS to the longest in the batch. Rows are sorted by
   length and split where that removes the most padding, each bucket cut to its own longest row.
"""
from __future__ import annotations

import torch

# A split must remove at least this share of the padded positions to be worth a second forward call.
MIN_BUCKET_SAVING = 0.1


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
