"""Samplers: the `Sampler` interface and its backends (hf: the policy itself, through transformers' generate or a
static-cache decoder replayed as CUDA graphs; vllm: an in-process vLLM engine fed the trained weights)."""
from flatline.trainer.samplers.base import SampleBatch, Sampler, left_pad
from flatline.trainer.samplers.hf import HFSampler
from flatline.trainer.samplers.static import MASKABLE, StaticSampler


def build_sampler(cfg, model, tokenizer, source, eos_token_ids: tuple[int, ...], longest_prompt: int) -> Sampler:
    """The sampler the config names, for a model already on its device. The static decoder builds its own attention
    masks, so a model whose attention implementation it cannot mask (flash attention) decodes with generate."""
    if cfg.sampler == "vllm":  # in-process vLLM, weights pushed every sync_every steps
        from flatline.trainer.samplers.vllm import VLLMSampler

        return VLLMSampler(cfg, model, tokenizer, source, eos_token_ids, longest_prompt)
    device = next(model.parameters()).device
    static = cfg.static_decoding == "on" or (cfg.static_decoding == "auto" and device.type == "cuda")
    if static and model.config._attn_implementation in MASKABLE:
        return StaticSampler(model, tokenizer.pad_token_id, eos_token_ids)
    return HFSampler(model, tokenizer.pad_token_id, eos_token_ids)


__all__ = ["HFSampler", "SampleBatch", "Sampler", "StaticSampler", "build_sampler", "left_pad"]
