"""Every log-probability the trainer and the HF sampler compute, in one place. N = rows, T = completion tokens,
L = prompt tokens, V = vocabulary, H = hidden size. All exact; three savings make them cheap:

1. Shared prompts: the G completions of a prompt attend to one key/value cache computed once for the prompt,
   instead of G copies of it; gradients flow back through the shared cache into the prompt positions. This saves
   (G-1)/G of the prompt's compute. (Not with activation checkpointing, which drops caches inside the layers:
   each row then runs prompt and completion as one sequence.)
2. Length buckets: completions are padded after their EOS to the longest in the batch. Rows are sorted by length
   and split where that removes the most padding, each bucket cut to its own longest row.
3. Selective log-softmax: logits exist only at completion positions. When a micro-batch's [n, T, V] logits would be
   large (a 150k vocabulary on a GPU batch), the output layer runs on slices of positions whose logits are
   recomputed in the backward pass instead of kept, and the log-normaliser is taken over slices of the vocabulary:
   the whole [n, T, V] tensor never exists.

Inputs may live on the CPU; each forward moves them to the model's device, and what comes back stays there.
"""
from __future__ import annotations

import weakref

import torch
from torch.utils.checkpoint import checkpoint

# Rows of logits processed at once when a [N, T, V] tensor would be large (49k vocabulary).
LOGIT_CHUNK_ROWS = 8
# A split must remove at least this share of the padded positions to be worth a second forward call.
MIN_BUCKET_SAVING = 0.1
# Above this many logits in one forward ([n, T, V]), the output layer runs in recomputed slices (saving 3).
LEAN_LOGITS_ELEMENTS = 1 << 28
# Logits alive at once in the sliced output layer: 2**26 float32 values are 256 MiB.
HEAD_SLICE_ELEMENTS = 1 << 26
# Vocabulary columns per slice of the log-normaliser.
VOCAB_SLICE = 32_768


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


def sliced_logsumexp(logits: torch.Tensor) -> torch.Tensor:
    """logsumexp over the last dimension in float32, VOCAB_SLICE columns at a time. [..., V] -> [...]"""
    parts = [piece.float().logsumexp(dim=-1) for piece in logits.split(VOCAB_SLICE, dim=-1)]
    return torch.stack(parts, dim=-1).logsumexp(dim=-1)


def _slice_scores(hidden: torch.Tensor, token_ids: torch.Tensor, head, temperature: float, with_entropy: bool):
    """Output layer and selective log-softmax on one slice of positions: hidden [m, H], ids [m] -> ([m], [m])."""
    logits = head(hidden)
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1).float()
    logps = picked - sliced_logsumexp(logits)
    entropy = torch.zeros_like(logps)
    if with_entropy:
        with torch.no_grad():
            logp_all = torch.log_softmax(logits.detach().float(), dim=-1)
            entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logps, entropy


def head_scores(hidden: torch.Tensor, head, token_ids: torch.Tensor, temperature: float,
                with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token logprobs (and entropy) from final hidden states, the output layer run on slices of positions.

    hidden: [n, T, H]; token_ids: [n, T]. With grad on, each slice's logits are recomputed in the backward pass
    rather than kept. Returns [n, T] float32 each (entropy None unless asked).
    """
    n, width, size = hidden.shape
    vocab = head.weight.size(0) if hasattr(head, "weight") else head.out_features
    per_slice = max(1, HEAD_SLICE_ELEMENTS // vocab)
    flat_hidden, flat_ids = hidden.reshape(n * width, size), token_ids.reshape(n * width)
    logps, entropy = [], []
    for h, ids in zip(flat_hidden.split(per_slice), flat_ids.split(per_slice)):
        if torch.is_grad_enabled() and h.requires_grad:
            lp, ent = checkpoint(_slice_scores, h, ids, head, temperature, with_entropy, use_reentrant=False)
        else:
            lp, ent = _slice_scores(h, ids, head, temperature, with_entropy)
        logps.append(lp)
        entropy.append(ent.detach())
    logps = torch.cat(logps).view(n, width)
    return logps, (torch.cat(entropy).view(n, width) if with_entropy else None)


# --- how the model is run ---

def model_device(model) -> torch.device:
    return next(model.parameters()).device


def is_checkpointed(model) -> bool:
    """Activation checkpointing on: transformers then drops any cache passed into a layer, so no shared prompts."""
    return any(getattr(module, "gradient_checkpointing", False) is True for module in model.modules())


_HEAD_SPLITS: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


def head_splits(model) -> bool:
    """Whether the logits are the output layer applied to the decoder's last hidden state (Llama, Qwen, Mistral,
    SmolLM), as saving 3 needs; false where a model scales or soft-caps them. Checked once per model, on 4 tokens."""
    if model not in _HEAD_SPLITS:
        try:
            decoder, head = model.get_decoder(), model.get_output_embeddings()
            ids = torch.arange(1, 5, device=model_device(model)).unsqueeze(0)
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    whole = model(input_ids=ids).logits.float()
                    split = head(decoder(input_ids=ids).last_hidden_state).float()
            finally:
                model.train(was_training)
            _HEAD_SPLITS[model] = bool(torch.allclose(whole, split, rtol=1e-3, atol=1e-3 * float(whole.abs().max())))
        except Exception:  # no get_decoder / output layer: the plain logits path always works
            _HEAD_SPLITS[model] = False
    return _HEAD_SPLITS[model]


def vocabulary_size(model) -> int:
    head = model.get_output_embeddings()
    return head.weight.size(0) if head is not None and hasattr(head, "weight") else model.config.vocab_size


def use_sliced_head(model, rows: int, width: int) -> bool:
    return rows * width * vocabulary_size(model) > LEAN_LOGITS_ELEMENTS and head_splits(model)


# --- forwards that compute each prompt once ---

def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding, as transformers' generate computes them. [B, L] -> [B, L]"""
    return (attention_mask.cumsum(dim=1) - 1).clamp(min=0)


def prefill(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, prompt_of_row: torch.Tensor,
            hidden: bool = False):
    """Run P distinct prompts once; return the last position's logits [n, 1, V] (its final hidden state [n, 1, H]
    when `hidden`) and a cache with one row per row.

    prompt_ids, prompt_mask: [P, L] left-padded; prompt_of_row: [n] which prompt each row continues.
    """
    network = model.get_decoder() if hidden else model
    keep = {} if hidden else {"logits_to_keep": 1}
    out = network(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions(prompt_mask),
                  use_cache=True, **keep)
    cache = out.past_key_values
    cache.batch_select_indices(prompt_of_row)
    return (out.last_hidden_state[:, -1:] if hidden else out.logits)[prompt_of_row], cache


def shared_prompt_states(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, prompt_of_row: torch.Tensor,
                         completion_ids: torch.Tensor, hidden: bool = False) -> torch.Tensor:
    """What predicts each completion token, computing every distinct prompt once: logits [n, T, V], or the final
    hidden states [n, T, H] when `hidden` (for head_scores).

    prompt_ids, prompt_mask: [P, L]; prompt_of_row: [n]; completion_ids: [n, T]. Every completion position is
    attended, as in generate; padding after EOS comes later and cannot change the tokens before it.
    """
    first, cache = prefill(model, prompt_ids, prompt_mask, prompt_of_row, hidden)  # [n, 1, H or V]
    if completion_ids.size(1) == 1:
        return first
    attention = torch.cat([prompt_mask[prompt_of_row], torch.ones_like(completion_ids)], dim=1)  # [n, L+T]
    start = prompt_ids.size(1)
    network = model.get_decoder() if hidden else model
    rest = network(input_ids=completion_ids[:, :-1], attention_mask=attention[:, :-1],
                   position_ids=positions(attention)[:, start:-1], past_key_values=cache, use_cache=True)
    return torch.cat([first, rest.last_hidden_state if hidden else rest.logits], dim=1)


def completion_logits(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, prompt_of_row: torch.Tensor,
                      completion_ids: torch.Tensor) -> torch.Tensor:
    """Logits that predict each completion token [n, T, V], row t predicting completion token t."""
    return shared_prompt_states(model, prompt_ids, prompt_mask, prompt_of_row, completion_ids)


def sequence_states(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                    hidden: bool = False) -> torch.Tensor:
    """As shared_prompt_states, each row run as one sequence (prompt_ids, prompt_mask: [n, L], one per row)."""
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention = torch.cat([prompt_mask, torch.ones_like(completion_ids)], dim=1)
    width = completion_ids.size(1)
    if hidden:
        out = model.get_decoder()(input_ids=ids, attention_mask=attention, position_ids=positions(attention),
                                  use_cache=False)
        return out.last_hidden_state[:, -width - 1:-1]
    return model(input_ids=ids, attention_mask=attention, position_ids=positions(attention), use_cache=False,
                 logits_to_keep=width + 1).logits[:, :-1]


def completion_scores(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, prompt_of_row: torch.Tensor,
                      completion_ids: torch.Tensor, temperature: float,
                      with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token logprobs (and entropy) of completions continuing their prompts: [n, T] each, on the model's device.

    prompt_ids, prompt_mask: [P, L] distinct prompts; prompt_of_row: [n]; completion_ids: [n, T].
    """
    device = model_device(model)
    prompt_ids, prompt_mask, prompt_of_row, completion_ids = (
        t.to(device) for t in (prompt_ids, prompt_mask, prompt_of_row, completion_ids))
    sliced = use_sliced_head(model, *completion_ids.shape)
    if is_checkpointed(model):
        states = sequence_states(model, prompt_ids[prompt_of_row], prompt_mask[prompt_of_row], completion_ids, sliced)
    else:
        states = shared_prompt_states(model, prompt_ids, prompt_mask, prompt_of_row, completion_ids, sliced)
    if sliced:
        return head_scores(states, model.get_output_embeddings(), completion_ids, temperature, with_entropy)
    logps = token_logprobs(states, completion_ids, temperature)
    return logps, (token_entropy(states.detach(), temperature) if with_entropy else None)


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
    (flatline.trainer.rollout.Rollout), on the CPU. Rows are run in length buckets, each prompt once per bucket; the
    result is on the model's device, in the order of `rows`, zero past the longest row of its bucket, and
    differentiable when grad is on. When the mask puts prompt tokens in the loss, the logprobs are [n, L+T], the
    prompt's first.
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
        scores, scores_entropy = completion_scores(model, samples.prompt_ids[groups * G], samples.prompt_mask[groups * G],
                                                   prompt_of_row, samples.completion_ids[index, :width], temperature,
                                                   with_entropy)
        logps.append(pad_right(scores, T))
        if with_entropy:
            entropy.append(pad_right(scores_entropy, T))
        order.append(bucket)
    restore = torch.argsort(torch.cat(order)).to(logps[0].device)
    logps = torch.cat(logps)[restore]
    if rollout.prompt_loss_mask is not None:
        logps = torch.cat([prompt_token_logprobs(model, samples, rows, G, temperature), logps], dim=1)
    return logps, (torch.cat(entropy)[restore] if with_entropy else None)


def prompt_token_logprobs(model, samples, rows: torch.Tensor, num_generations: int, temperature: float) -> torch.Tensor:
    """Logprobs of the prompt tokens of `rows` (each distinct prompt run once): [n, L], 0 in column 0."""
    device = model_device(model)
    groups, prompt_of_row = torch.unique(rows // num_generations, return_inverse=True)
    prompt_ids = samples.prompt_ids[groups * num_generations].to(device)  # [P, L]
    prompt_mask = samples.prompt_mask[groups * num_generations].to(device)
    logits = prompt_logits(model, prompt_ids, prompt_mask)
    scored = token_logprobs(logits, prompt_ids[:, 1:], temperature)  # [P, L-1]
    return torch.nn.functional.pad(scored, (1, 0))[prompt_of_row.to(device)]
