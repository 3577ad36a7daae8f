"""Several processes, one per device: who this process is, its share of the batch, and what ranks exchange.

Launched by `torchrun` or `accelerate launch` (which sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT);
without WORLD_SIZE, or with WORLD_SIZE=1, nothing here runs and the trainer is the one-process trainer, unchanged.

    world = join_world("auto")              # the process group (gloo on CPU, nccl on CUDA), once
    mine = local_share(examples, world)     # rank r trains the r-th contiguous block of whole prompt groups
    sum_gradients(params, world)            # after backward, before clipping: every rank holds the global gradient

The model is replicated on every rank (data parallel, as DDP) and the trainable gradients are summed with one
all-reduce per step; each micro-batch's loss is normalised by the global batch (its gradient_accumulation_steps
is W x GA, dapo's token count the global one), so the summed gradient is the one process's gradient on the same
global batch. A manual all-reduce rather than DDP's wrapper: the sampler, peft's disable_adapter and the probes keep
the bare model and its parameter names, and the step needs one reduction, not one per micro-batch.
Rank 0 gathers each rollout (gather_to_main) and alone runs the listeners, writes the run directory, the reports,
the log book and W&B. A rank that raises notes its error in the process group's store (note_failure), so rank 0,
stopped by the launcher's SIGTERM or by the collective timeout, settles the run as failed with that rank's error.

What it leaves out: sharded parameters (DeepSpeed ZeRO-3, FSDP) in flatline's own trainer: a LoRA 7B (15 GB of bf16
base) fits each GPU, so the weights are replicated; the probes' gathering of sharded parameters serves loops that
shard (flatline.probes.sharded, the TRL callback).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import timedelta

import torch

from flatline.common.errors import ConfigError

# Seconds a collective waits for the other ranks before raising: a rank that died or hangs leaves the others a
# clear error instead of a hang. Generation of a long batch on one rank can keep the others waiting, hence minutes.
# FLATLINE_DIST_TIMEOUT_S overrides it.
DEFAULT_TIMEOUT_S = 1800
TIMEOUT_ENV = "FLATLINE_DIST_TIMEOUT_S"
# The store key under which a failing rank leaves its error line for rank 0.
FAILURE_KEY = "flatline/failed"


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when launched alone)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = World()


def world_from_env(environ=None) -> World:
    """WORLD_SIZE, RANK and LOCAL_RANK as a World; absent: one process. Bad values are a one-line ConfigError."""
    environ = os.environ if environ is None else environ
    values = {}
    for key, default in (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", None)):
        text = environ.get(key)
        if text is None or text == "":
            values[key] = default
            continue
        try:
            values[key] = int(text)
        except ValueError:
            raise ConfigError(f"environment variable {key}={text!r} is not an integer; launch with torchrun or "
                              "accelerate launch, which set it") from None
    size, rank = values["WORLD_SIZE"], values["RANK"]
    local = rank if values["LOCAL_RANK"] is None else values["LOCAL_RANK"]
    if size < 1 or not 0 <= rank < size or local < 0:
        raise ConfigError(f"environment: RANK={rank} LOCAL_RANK={local} WORLD_SIZE={size} do not describe a process "
                          "of the launch (0 <= RANK < WORLD_SIZE)")
    return World(rank, size, local)


def timeout_seconds(environ=None) -> float:
    environ = os.environ if environ is None else environ
    text = environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"environment variable {TIMEOUT_ENV}={text!r} is not a number of seconds") from None
    if seconds <= 0:
        raise ConfigError(f"environment variable {TIMEOUT_ENV}={text!r} must be positive")
    return seconds


def join_world(device: str) -> World:
    """This process's World; under a launch of several processes, also the default process group (gloo for the
    CPU, nccl for CUDA, with the collective timeout) and, on CUDA, this rank's GPU (cuda:LOCAL_RANK)."""
    world = world_from_env()
    if not world.active:
        return world
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if torch.cuda.device_count() <= world.local_rank:
            raise ConfigError(f"LOCAL_RANK={world.local_rank} but torch sees {torch.cuda.device_count()} GPU(s); "
                              "launch one process per GPU (--nproc_per_node / num_processes)")
        torch.cuda.set_device(world.local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds()))
    return replace(world, size=torch.distributed.get_world_size(), rank=torch.distributed.get_rank())


def leave_world(world: World) -> None:
    """Tear the process group down (a clean exit; no-op for one process)."""
    if world.active and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# --- the batch ---

def local_share(items: list, world: World) -> list:
    """Rank r's contiguous block of `items` (the global batch's prompts): whole prompts, so every group of G
    completions lives on one rank. The count must divide evenly (every rank trains the same number)."""
    if len(items) % world.size:
        raise ConfigError(f"the global batch has {len(items)} prompts, not a multiple of the {world.size} processes")
    share = len(items) // world.size
    return items[world.rank * share:(world.rank + 1) * share]


def global_rows(values: torch.Tensor, world: World) -> torch.Tensor:
    """Every rank's [n] tensor, concatenated in rank order, on every rank (all ranks must hold the same n). [n] -> [W*n]"""
    if not world.active:
        return values
    device = collective_device()
    parts = [torch.empty_like(values, device=device) for _ in range(world.size)]
    torch.distributed.all_gather(parts, values.to(device))
    return torch.cat(parts).to(values.device)


def global_sum(value: float, world: World) -> float:
    """The sum over ranks of a number, on every rank (float64: token counts stay exact)."""
    if not world.active:
        return value
    total = torch.tensor([float(value)], dtype=torch.float64, device=collective_device())
    torch.distributed.all_reduce(total)
    return float(total.item())


def gather_to_main(obj, world: World) -> list | None:
    """Every rank's picklable `obj`, in rank order, on rank 0 (None elsewhere)."""
    if not world.active:
        return [obj]
    gathered = [None] * world.size if world.is_main else None
    torch.distributed.gather_object(obj, gathered, dst=0)
    return gathered


def collective_device() -> torch.device:
    """Where tensors for a collective must sit: the rank's GPU under nccl, the CPU under gloo."""
    if torch.distributed.is_initialized() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# --- gradients and weights ---

def sum_gradients(params: list[torch.Tensor], world: World) -> None:
    """Sum the trainable gradients over ranks, in place, one flat all-reduce per dtype and device. A parameter
    without a gradient on every rank stays without one (a rank missing a gradient another has would be a different
    model: they all run the same code on the same weights)."""
    if not world.active:
        return
    with_grad = [p for p in params if p.grad is not None]
    buckets: dict[tuple, list[torch.Tensor]] = {}
    for p in with_grad:
        buckets.setdefault((p.grad.dtype, p.grad.device), []).append(p)
    device = collective_device()
    for members in buckets.values():
        flat = torch.cat([p.grad.detach().reshape(-1) for p in members]).to(device)
        torch.distributed.all_reduce(flat)
        offset = 0
        for p in members:
            n = p.grad.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n


def broadcast_trainable(params: list[torch.Tensor], world: World) -> None:
    """Rank 0's trainable weights on every rank (LoRA initialisation drawn alike everywhere, made certain)."""
    if not world.active:
        return
    device = collective_device()
    with torch.no_grad():
        for p in params:
            buffer = p.detach().to(device).clone()
            torch.distributed.broadcast(buffer, src=0)
            p.copy_(buffer.to(p.device))


# --- a rank that fails ---

def note_failure(world: World, error: str) -> None:
    """Leave `rank R: error` in the process group's store for rank 0 to settle the run with; never raises."""
    if not world.active or world.is_main:
        return
    try:
        store = torch.distributed.distributed_c10d._get_default_store()
        store.set(FAILURE_KEY, f"rank {world.rank}: {error}")
    except Exception:  # the group may be gone already: rank 0 then reports its own error
        pass


def peer_failure(world: World) -> str:
    """The error another rank noted (note_failure), or ""; never waits and never raises."""
    if not world.active:
        return ""
    try:
        store = torch.distributed.distributed_c10d._get_default_store()
        if store.check([FAILURE_KEY]):
            return store.get(FAILURE_KEY).decode("utf-8", "replace")
    except Exception:
        pass
    return ""
