"""Reading many tensors in few kernels: the probes' reductions over hundreds of LoRA matrices.

A LoRA run on all linear layers of a 0.5B model has ~340 trainable tensors; reducing each on its own costs a dozen
kernel launches apiece, which on a GPU is the whole cost of a probe (the arithmetic is microseconds). These helpers
concatenate small tensors into one flat piece and split large ones, so the work is a few kernels per million
elements while memory stays bounded for a 7B embedding.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

# Elements per float64 piece: 2**24 elements are 128 MiB of float64.
CHUNK_ELEMENTS = 1 << 24


def batches(tensors: Sequence[torch.Tensor], limit: int = CHUNK_ELEMENTS) -> Iterator[list[int]]:
    """Indices of consecutive tensors on one device whose sizes add up to at most `limit` (a larger one alone)."""
    batch: list[int] = []
    size = 0
    for index, tensor in enumerate(tensors):
        if batch and (size + tensor.numel() > limit or tensor.device != tensors[batch[0]].device):
            yield batch
            batch, size = [], 0
        batch.append(index)
        size += tensor.numel()
    if batch:
        yield batch


def flat(tensors: Sequence[torch.Tensor], indices: list[int]) -> torch.Tensor:
    """The tensors at `indices`, flattened and concatenated (a view when there is one); call under no_grad."""
    if len(indices) == 1:
        return tensors[indices[0]].reshape(-1)
    return torch.cat([tensors[i].reshape(-1) for i in indices])


@torch.no_grad()
def flat_pieces(*tensor_lists: Sequence[torch.Tensor], limit: int = CHUNK_ELEMENTS,
                dtype: torch.dtype | None = torch.float64) -> Iterator[tuple[torch.Tensor, ...]]:
    """Aligned pieces (in `dtype`; None keeps each tensor's) covering same-shaped tensor lists in order, at most
    `limit` elements each: flat_pieces(olds, news) yields (old_piece, new_piece) pairs matching element for element.
    """
    for indices in batches(tensor_lists[0], limit):
        flats = [flat(tensors, indices) for tensors in tensor_lists]
        device = flats[0].device
        for start in range(0, flats[0].numel(), limit):  # one piece when the batch fits
            yield tuple(f[start:start + limit].to(device=device, dtype=dtype or f.dtype) for f in flats)
