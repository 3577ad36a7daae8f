"""The sampler interface: prompts in, completions with the sampler's own per-token logprobs out.

A backend (transformers' generate in hf.py; vLLM later) implements `Sampler`. Logprobs are those of
softmax(logits / temperature) at the sampled token, before top-p/top-k filtering: the same quantity the trainer
computes, so the two can be compared (flatline.probes.sync).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


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
