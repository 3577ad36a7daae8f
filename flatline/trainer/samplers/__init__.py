"""Samplers: the `Sampler` interface and its backends (hf: transformers generate)."""
from flatline.trainer.samplers.base import SampleBatch, Sampler, left_pad
from flatline.trainer.samplers.hf import HFSampler

__all__ = ["HFSampler", "SampleBatch", "Sampler", "left_pad"]
