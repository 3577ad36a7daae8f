"""Samplers turn prompts into completions with the sampler's own per-token logprobs.

`Sampler` is the interface a vLLM backend implements too; `HFSampler` uses transformers' `generate` on the
policy itself (so its weights are always in sync). Logprobs are those of softmax(logits / temperature) at the
sampled token, before top-p/top-k filtering: the same quantity the trainer computes, so the two can be compared.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from flatline.trainer.algorithm import completion_mask, token_logprobs
from flatline.trainer.batching import prefill


@dataclass
class SampleBatch:
    """Completions of P prompts x G generations, grouped per prompt (row i belongs to prompt i // G)."""

    prompt_ids: torch.Tensor  # [N, P_len] left-padded
    prompt_mask: torch.Tensor  # [N, P_len] 1 on prompt tokens
    completion_ids: torch.Tensor  # [N, T] right-padded with pad_token_id
    sampler_logprobs: torch.Tensor  # [N, T] float32, 0 after the end of each completion
    completion_lengths: torch.Tensor  # [N] tokens up to and including the first EOS
    truncated: torch.Tensor  # [N] bool: reached max_new_tokens without EOS


class Sampler(Protocol):
    def sample(self, prompts: list[list[int]], num_generations: int, max_new_tokens: int, temperature: float,
               top_p: float = 1.0, top_k: int = 0) -> SampleBatch: ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the sampler generate with the trainer's current weights (called after every optimizer step)."""


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ids [B, L] and an attention mask [B, L]."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.as_tensor(seq)
            mask[row, width - len(seq):] = 1
    return ids, mask


class HFSampler:
    """Batched `model.generate` with left padding and num_generations per prompt."""

    def __init__(self, model, pad_token_id: int, eos_token_ids: tuple[int, ...]):
        self.model = model
        self.pad_token_id = pad_token_id
        self.eos_token_ids = eos_token_ids

    def sync_weights(self, model) -> None:
        self.model = model  # generates with the policy object itself

    @torch.no_grad()
    def sample(self, prompts, num_generations, max_new_tokens, temperature, top_p=1.0, top_k=0) -> SampleBatch:
        from transformers import GenerationConfig

        prompt_ids, prompt_mask = left_pad(prompts, self.pad_token_id)  # [P, L]
        greedy = temperature == 0
        generation = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=not greedy,
            temperature=None if greedy else temperature, top_p=None if greedy else top_p,
            top_k=None if greedy else top_k,  # 0 disables top-k explicitly (transformers' own default is 50)
            eos_token_id=list(self.eos_token_ids), pad_token_id=self.pad_token_id,
            return_dict_in_generate=True, output_logits=True)
        expanded_ids = prompt_ids.repeat_interleave(num_generations, dim=0)  # [N, L]
        expanded_mask = prompt_mask.repeat_interleave(num_generations, dim=0)
        was_training = self.model.training
        self.model.eval()
        try:
            # Each prompt is prefilled once (all but its last token) and its cache shared by its G completions.
            cache = None
            if prompt_ids.size(1) > 1:
                rows = torch.arange(len(prompts)).repeat_interleave(num_generations)
                _, cache = prefill(self.model, prompt_ids[:, :-1], prompt_mask[:, :-1], rows)
            out = self.model.generate(input_ids=expanded_ids, attention_mask=expanded_mask, past_key_values=cache,
                                      generation_config=generation)
        finally:
            self.model.train(was_training)
        completion_ids = out.sequences[:, prompt_ids.size(1):]  # [N, T]
        logits = torch.stack(out.logits, dim=1)  # [N, T, V] raw (unprocessed) logits
        logprobs = token_logprobs(logits, completion_ids, temperature)  # [N, T]
        mask = completion_mask(completion_ids, self.eos_token_ids)  # [N, T]
        has_eos = torch.isin(completion_ids, torch.as_tensor(self.eos_token_ids)).any(dim=1)
        return SampleBatch(
            prompt_ids=expanded_ids,
            prompt_mask=expanded_mask,
            completion_ids=completion_ids,
            sampler_logprobs=logprobs * mask,
            completion_lengths=mask.sum(dim=1),
            truncated=~has_eos,
        )
