"""Samplers: the `Sampler` interface and its backends (hf: the policy itself, through transformers' generate or a
static-cache decoder replayed as CUDA graphs)."""
from flatline.trainer.samplers.base import SampleBatch, Sampler, left_pad
from flatline.trainer.samplers.hf import HFSampler
from flatline.trainer.samplers.static import StaticSampler


def build_sampler(cfg, model, pad_token_id: int, eos_token_ids: tuple[int, ...]) -> Sampler:
    """The sampler the config names, for a model already on its device."""
    device = next(model.parameters()).device
    static = cfg.static_decoding == "on" or (cfg.static_decoding == "auto" and device.type == "cuda")
    if static:
        return StaticSampler(model, pad_token_id, eos_token_ids)
    return HFSampler(model, pad_token_id, eos_token_ids)


__all__ = ["HFSampler", "SampleBatch", "Sampler", "StaticSampler", "build_sampler", "left_pad"]
