"""`HFSampler`: batched transformers `generate` on the policy itself, so its weights are always in sync.

Each prompt is prefilled once and its key/value cache shared by its G completions; logprobs are computed from the
raw logits generate returns (flatline.trainer.logprobs.token_logprobs).
"""
from __future__ import annotations

import torch

from flatline.trainer.algorithm import completion_mask
from flatline.trainer.logprobs import prefill, token_logprobs
from flatline.trainer.samplers.base import SampleBatch, left_pad


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
