"""Mask probes: which tokens does the loss actually train on, and do the trainer's logprobs line up with them?

Hypotheses served: masking.prompt_in_loss, masking.padding_in_loss, masking.eos_excluded,
masking.env_tokens_in_loss (docs/failure-catalogue.md B4, B5).

Everything works on a full-sequence view, so the same functions serve loops flatline did not write:

    input_ids  [N, L+T] = cat(prompt_ids, completion_ids)   prompts left-padded, completions right-padded
    loss_mask  [N, L+T] = cat(prompt_loss_mask, completion_mask)   prompt part zero unless a mask_fn (or a
                                                           user's loop) puts prompt tokens in the loss

- `MaskProbe` (cheap, every step): `mask_stats` over the step's batch.
- `MaskAlignmentProbe` (full, every 10 steps): re-scores a few rows with one plain forward and checks that
  the trainer's logprob at completion position t is the model's logprob of completion token t (logits at
  sequence position L-1+t), not the token before or after it.
- `loss_region_text`: the decoded loss region of a few rows, for samples.jsonl.

Tool / environment tokens come from record.env_mask (a multi-turn loop sets it; env_frac is 0 without it). What
it leaves out: models with dropout active in training mode (the alignment re-score runs in eval mode and would
differ by the dropout noise).
"""
from __future__ import annotations

import torch

from flatline.probes.base import Probe

# Rows re-scored by the alignment check: two rows are enough to see an off-by-one, and keep the extra
# forward small (its logits are [2, T+2, V]).
ALIGNMENT_ROWS = 2
# The alignment check runs every this many steps (it costs one extra forward of ALIGNMENT_ROWS rows).
ALIGNMENT_EVERY = 10
# Joins the separate spans of a row's loss region in `loss_region_text`, so excluded stretches stay visible.
GAP_MARKER = " [...] "


# --- the full-sequence view ---

def full_sequence_view(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                       completion_mask: torch.Tensor, prompt_loss_mask: torch.Tensor | None = None,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Join a left-padded prompt batch and a right-padded completion batch into one sequence per row.

    prompt_ids, prompt_mask: [N, L]; completion_ids, completion_mask (the loss mask): [N, T];
    prompt_loss_mask: [N, L] the prompt tokens in the loss (None: none).
    Returns input_ids [N, L+T], loss_mask [N, L+T], prompt_lengths [N] (real prompt tokens), completion_start L.
    """
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)  # [N, L+T]
    prompt_part = torch.zeros_like(prompt_ids, dtype=torch.long) if prompt_loss_mask is None else prompt_loss_mask.long()
    loss_mask = torch.cat([prompt_part, completion_mask.long()], dim=1)  # [N, L+T]
    return input_ids, loss_mask, prompt_mask.long().sum(dim=1), prompt_ids.size(1)


def first_eos_lengths(completion_ids: torch.Tensor, eos_token_ids, pad_token_id: int | None = None) -> torch.Tensor:
    """Tokens of each completion up to and including its first EOS. [N, T] -> [N]

    A row without EOS ends at its first pad (when pad is not an EOS id), else it is whole (truncated).
    """
    N, T = completion_ids.shape
    eos = torch.as_tensor(list(eos_token_ids), dtype=completion_ids.dtype)
    is_eos = torch.isin(completion_ids, eos)  # [N, T]
    lengths = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1) + 1, torch.full((N,), T))  # [N]
    if pad_token_id is not None and pad_token_id not in eos_token_ids:
        is_pad = completion_ids == pad_token_id  # [N, T]
        lengths = torch.where(~is_eos.any(dim=1) & is_pad.any(dim=1), is_pad.int().argmax(dim=1), lengths)
    return lengths


# --- what the loss mask covers ---

def mask_stats(input_ids: torch.Tensor, loss_mask: torch.Tensor, prompt_lengths: torch.Tensor | None,
               completion_start: int, pad_token_id: int | None, eos_token_ids, completion_lengths: torch.Tensor | None = None,
               env_mask: torch.Tensor | None = None) -> dict:
    """Where the loss tokens lie, as shares of all loss tokens.

    input_ids, loss_mask: [N, L+T]; prompt_lengths: [N] real prompt tokens, occupying columns
    [L - prompt_length, L) (None: counted as the prompt region's non-pad tokens after its left pads);
    completion_start: L; completion_lengths: [N] tokens up to and including EOS (None: found from the first
    EOS, see `first_eos_lengths`); env_mask: [N, L+T] bool, True on tool/environment tokens (None: none).

    Every loss token is exactly one of: a real prompt token (prompt_frac), padding (pad_frac: a left pad in
    the prompt region, or a completion position at index >= completion_length; the EOS at index
    completion_length-1 is the completion's own token even when pad == eos), or a real completion token.
    env_frac counts tool/environment tokens among the loss tokens (they are real tokens of either region).
    completion_excluded_frac: the share of the completions' own tokens before their EOS (not environment tokens) that
    the loss leaves out, among rows with any completion token in the loss (a mask a token late or early).
    eos_in_loss_frac: among finished completions (whose token at completion_length-1 is an EOS id), the
    share whose EOS is in the loss; absent when no completion finished.
    """
    N, width = input_ids.shape
    L = completion_start
    loss = loss_mask.bool()  # [N, L+T]
    columns = torch.arange(width).unsqueeze(0)  # [1, L+T]
    completion_ids = input_ids[:, L:]  # [N, T]
    if prompt_lengths is None:
        leading_pads = (input_ids[:, :L] == pad_token_id).long().cumprod(dim=1).sum(dim=1) if pad_token_id is not None \
            else torch.zeros(N, dtype=torch.long)
        prompt_lengths = L - leading_pads
    if completion_lengths is None:
        completion_lengths = first_eos_lengths(completion_ids, eos_token_ids, pad_token_id)
    prompt_lengths, completion_lengths = prompt_lengths.long().view(N, 1), completion_lengths.long().view(N, 1)

    in_prompt = (columns >= L - prompt_lengths) & (columns < L)  # [N, L+T] real prompt tokens
    left_pad = columns < L - prompt_lengths  # [N, L+T]
    after_end = columns >= L + completion_lengths  # [N, L+T] completion positions past the completion's end
    padding = left_pad | after_end

    total = int(loss.sum())
    share = (lambda where: float((loss & where).sum()) / total) if total else (lambda where: 0.0)
    # The completion's own tokens before its EOS that the loss leaves out, among rows that train on any completion
    # token (a row masked out whole, such as a truncated one under mask_truncated_completions, is a choice).
    before_eos = (columns >= L) & (columns < L + completion_lengths - 1)  # [N, L+T]
    if env_mask is not None:
        before_eos &= ~env_mask.bool()
    trained_rows = loss[:, L:].any(dim=1, keepdim=True)  # [N, 1]
    own = before_eos & trained_rows
    excluded = float((own & ~loss).sum()) / float(own.sum()) if own.any() else 0.0
    stats = {
        "loss_tokens": total,
        "loss_tokens_per_completion": total / N if N else 0.0,
        "prompt_frac": share(in_prompt),
        "pad_frac": share(padding),
        "env_frac": share(env_mask.bool()) if env_mask is not None else 0.0,
        "completion_excluded_frac": excluded,
    }

    # A completion finished when its last token (index completion_length-1) is an EOS id.
    eos_index = (completion_lengths.view(N) - 1).clamp(min=0)  # [N]
    last_token = completion_ids.gather(1, eos_index.view(N, 1)).view(N)  # [N]
    eos = torch.as_tensor(list(eos_token_ids), dtype=input_ids.dtype)
    finished = torch.isin(last_token, eos) & (completion_lengths.view(N) > 0)  # [N]
    stats["finished_frac"] = float(finished.float().mean()) if N else 0.0
    if finished.any():
        eos_in_loss = loss[:, L:].gather(1, eos_index.view(N, 1)).view(N)  # [N]
        stats["eos_in_loss_frac"] = float(eos_in_loss[finished].float().mean())
    return stats


def loss_region_text(tokenizer, input_ids: torch.Tensor, loss_mask: torch.Tensor, rows: int = 2) -> list[str]:
    """What the loss trains on, decoded (special tokens kept), for the first `rows` rows.

    input_ids, loss_mask: [N, L+T]. Separate spans of a row's loss region are joined by GAP_MARKER.
    """
    texts = []
    for ids, mask in zip(input_ids[:rows], loss_mask[:rows].bool()):
        spans, current = [], []
        for token, kept in zip(ids.tolist(), mask.tolist()):
            if kept:
                current.append(token)
            elif current:
                spans.append(current)
                current = []
        if current:
            spans.append(current)
        texts.append(GAP_MARKER.join(tokenizer.decode(span, skip_special_tokens=False) for span in spans))
    return texts


# --- is the logprob at completion position t the logprob of completion token t? ---

def rescored_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                      temperature: float = 1.0, params: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Completion-token logprobs from one plain forward over prompt + completion, and the off-by-one version.

    prompt_ids, prompt_mask: [n, L] left-padded; completion_ids: [n, T]. Every completion position is attended
    (as in generation). `params` (name -> tensor) overrides the model's parameters for this forward
    (torch.func.functional_call), e.g. the weights from before the optimizer step.
    Returns aligned [n, T]: log p(token t | logits at L-1+t), and shifted [n, T]: log p(token t | logits at
    L-2+t) (the prediction of the token before; NaN at t = 0 when L < 2). Temperature 0 scores at 1, as the
    trainer does.
    """
    device = next(model.parameters()).device  # the record's tensors may sit on the CPU, the model on a GPU
    prompt_ids, prompt_mask, completion_ids = (t.to(device) for t in (prompt_ids, prompt_mask, completion_ids))
    n, L = prompt_ids.shape
    T = completion_ids.size(1)
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)[:, :-1]  # [n, L+T-1]: the last token predicts nothing
    attention = torch.cat([prompt_mask, torch.ones_like(completion_ids)], dim=1)[:, :-1]  # [n, L+T-1]
    position_ids = (attention.cumsum(dim=1) - 1).clamp(min=0)  # skip left pads, as transformers' generate does
    first = max(L - 2, 0)  # the first sequence position whose logits we need
    inputs = dict(input_ids=input_ids, attention_mask=attention, position_ids=position_ids,
                  logits_to_keep=input_ids.size(1) - first, use_cache=False)
    if params is None:
        logits = model(**inputs).logits  # [n, L+T-1-first, V]: index j is position first + j
    else:
        logits = torch.func.functional_call(model, params, args=(), kwargs=inputs).logits
    logits = logits.float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    normaliser = logits.logsumexp(dim=-1)  # [n, P]; log p = logit - normaliser, as the trainer computes it

    def score(offset: int) -> torch.Tensor:  # logprob of completion token t from the logits at L-1-offset+t
        start = L - 1 - offset - first  # index of t = 0; -1 when the prompt has no token before it
        out = torch.full((n, T), float("nan"), device=logits.device)
        skip = max(-start, 0)
        positions = slice(start + skip, start + T)
        picked = logits[:, positions].gather(-1, completion_ids[:, skip:, None]).squeeze(-1)
        out[:, skip:] = picked - normaliser[:, positions]
        return out.cpu()

    return score(0), score(1)


def alignment_diffs(aligned: torch.Tensor, shifted: torch.Tensor, trainer_logprobs: torch.Tensor,
                    loss_mask: torch.Tensor) -> dict:
    """Largest |trainer - re-scored| on the loss positions, against the aligned and the off-by-one re-score.

    All [n, T] (loss_mask over completion positions). A correct trainer has alignment_max_diff near 0 and
    alignment_shifted_diff large; an off-by-one trainer the reverse.
    """
    mask = loss_mask.bool()
    aligned_diff = (trainer_logprobs - aligned).abs()[mask]
    shifted_diff = (trainer_logprobs - shifted).abs()[mask & ~shifted.isnan()]
    return {"alignment_max_diff": float(aligned_diff.max()) if aligned_diff.numel() else 0.0,
            "alignment_shifted_diff": float(shifted_diff.max()) if shifted_diff.numel() else 0.0}


@torch.no_grad()
def alignment_check(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                    completion_mask: torch.Tensor, trainer_logprobs: torch.Tensor, temperature: float = 1.0,
                    params: dict | None = None, rows: int = ALIGNMENT_ROWS) -> dict:
    """Re-score up to `rows` rows that have loss tokens and compare with the trainer's logprobs.

    All tensors [N, ...] as in the rollout; completion_mask is the loss mask [N, T]. The model is left exactly
    as found: no gradients, a forked RNG, its train/eval mode restored.
    """
    chosen = torch.nonzero(completion_mask.bool().any(dim=1)).view(-1)[:rows]  # [n]
    if chosen.numel() == 0:
        return {}
    mask = completion_mask[chosen].bool()  # [n, T]
    width = int((mask * torch.arange(1, mask.size(1) + 1)).amax())  # later positions cannot change earlier ones
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=devices):
            model.eval()
            aligned, shifted = rescored_logprobs(model, prompt_ids[chosen], prompt_mask[chosen],
                                                 completion_ids[chosen, :width], temperature, params)
    finally:
        model.train(was_training)
    return alignment_diffs(aligned.cpu(), shifted.cpu(), trainer_logprobs[chosen, :width].float().cpu(),
                           mask[:, :width].cpu())


# --- probes ---

class MaskProbe(Probe):
    """masks/*: what share of the loss is prompt, padding, environment; is EOS trained on (every step)."""

    family = "masks"
    tier = "cheap"

    def on_step(self, record) -> dict:
        if record.completion_ids is None or record.completion_mask is None or record.prompt_ids is None:
            return {}
        input_ids, loss_mask, prompt_lengths, start = full_sequence_view(
            record.prompt_ids, record.prompt_mask, record.completion_ids, record.completion_mask,
            record.prompt_loss_mask)
        env_mask = None
        if record.env_mask is not None:  # over completion positions: widen to the full sequence
            env_mask = torch.cat([torch.zeros_like(record.prompt_ids, dtype=torch.bool), record.env_mask.bool()], dim=1)
        return mask_stats(input_ids, loss_mask, prompt_lengths, start, self.context.pad_token_id,
                          self.context.eos_token_ids, record.completion_lengths, env_mask)


class MaskAlignmentProbe(Probe):
    """masks/alignment_*: do the trainer's logprobs belong to the tokens they are masked with (every 10 steps)?

    The record's trainer logprobs come from the weights before the optimizer step, so the re-score runs with
    those (record.pre_step_weights, through functional_call: the model itself is never written). Without
    them it reports nothing.
    """

    family = "masks"
    tier = "full"
    every = ALIGNMENT_EVERY
    wants_pre_step_weights = True

    def on_step(self, record) -> dict:
        if record.pre_step_weights is None or record.trainer_logprobs is None or record.model is None:
            return {}
        return alignment_check(record.model, record.prompt_ids, record.prompt_mask, record.completion_ids,
                               record.completion_mask, record.trainer_logprobs, self.context.temperature,
                               params=record.pre_step_weights)
