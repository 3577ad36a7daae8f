"""What the TRL callback reads from a GRPOTrainer step, as pure functions: GRPOConfig as a flatline config, where
each completion ends, this process's rows of a gathered tensor, the groups, and finding the trainer itself."""
from __future__ import annotations

import math
import sys

import torch


def config_from_args(args, trainer) -> dict:
    """config.toml for a TRL run: GRPOConfig's plain values (TOML-writable), flatline's names for what the judges
    read (reward_weights by function, lora_r, dtype), and which trainer wrote the run."""
    config = {"trainer": "trl", "trl_version": trl_version()}
    for key, value in sorted(args.to_dict().items()):
        if isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value)):
            config[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(x, (bool, int, float, str)) for x in value):
            config[key] = list(value)
    if trainer is not None and hasattr(trainer, "reward_func_names") and hasattr(trainer, "reward_weights"):
        config["reward_weights"] = {name: float(w) for name, w in
                                    zip(trainer.reward_func_names, trainer.reward_weights.tolist())}
    model = getattr(trainer, "model", None)
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and peft_config:
        adapter = next(iter(peft_config.values()))
        config["lora_r"] = int(getattr(adapter, "r", 0) or 0)
        config["lora_alpha"] = float(getattr(adapter, "lora_alpha", 0) or 0)
    if model is not None:
        dtypes = {str(p.dtype).replace("torch.", "") for p in model.parameters() if not p.requires_grad}
        config["dtype"] = dtypes.pop() if len(dtypes) == 1 else "mixed"
        config["model"] = str(getattr(getattr(model, "config", None), "_name_or_path", "") or "")
    config["task"] = config.get("task", "trl")
    config["probes"] = "trl-callback"
    return config


def completion_extent(completion_ids, eos_ids: tuple[int, ...]):
    """Per row: tokens up to and including the first EOS (the width when there is none), and whether there was
    none (truncated at max_completion_length)."""
    if completion_ids is None:
        return None, None
    ids = completion_ids.detach().cpu()
    is_eos = torch.zeros_like(ids, dtype=torch.bool)
    for eos in eos_ids:
        is_eos |= ids == eos
    width = ids.shape[1]
    has_eos = is_eos.any(dim=1)
    first = torch.where(has_eos, is_eos.int().argmax(dim=1) + 1, torch.full_like(has_eos, width, dtype=torch.long))
    return first, ~has_eos


def distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def group_ids(rows: int, group_size: int | None) -> list[int] | None:
    if not group_size or rows % group_size:
        return None
    return [i // group_size for i in range(rows)]


def local_rows(global_rows: int, local_rows: int, trainer) -> slice:
    """The rows of this process in a gathered tensor (TRL's process_slice): all of them with one process."""
    if global_rows == local_rows:
        return slice(None)
    index = int(getattr(getattr(trainer, "accelerator", None), "process_index", 0))
    return slice(index * local_rows, (index + 1) * local_rows)


# The batch tensors of TRL's generation output that the callback's step record reads (trl_record.step_record), the
# only ones gathered from every process; those padded on the left (the prompt side), the others on the right.
RECORD_TENSORS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages",
                  "sampling_per_token_logps", "old_per_token_logps")
PROMPT_SIDE = ("prompt_ids", "prompt_mask")


def global_batch(batch: dict, pad_token_id: int | None) -> dict | None:
    """Every process's record tensors (RECORD_TENSORS), concatenated in process order (TRL's process_slice order),
    on the main process (None elsewhere); the rest, rewards_per_func included (TRL gathers it itself), is kept as it
    is. Tensors wider on some rank are padded: prompt-side on the left (pad id, mask 0), the completion side on the
    right (0)."""
    from flatline.trainer.distributed import World, gather_to_main
    from flatline.trainer.merged import pad_left, pad_right

    world = World(torch.distributed.get_rank(), torch.distributed.get_world_size())
    if not world.active:  # one process: its batch is the global one
        return batch
    local = {key: batch[key].detach().cpu() for key in RECORD_TENSORS if torch.is_tensor(batch.get(key))}
    gathered = gather_to_main(local, world)
    if gathered is None:
        return None
    merged = {key: value for key, value in batch.items() if key not in local}
    for key in local:
        parts = [part[key] for part in gathered]
        if parts[0].dim() == 2:
            width = max(p.size(1) for p in parts)
            fill = pad_token_id if key == "prompt_ids" and pad_token_id is not None else 0
            pad = pad_left if key in PROMPT_SIDE else pad_right
            parts = [pad(p, width, fill) for p in parts]
        merged[key] = torch.cat(parts)
    return merged


def trl_version() -> str:
    try:
        import trl
        return str(trl.__version__)
    except Exception:
        return "unknown"


def find_trainer(callback):
    """The transformers Trainer running this callback: the `self` of a calling frame whose callback handler holds
    it (TRL's GRPOTrainer.train -> Trainer._inner_training_loop -> on_train_begin)."""
    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        handler = getattr(candidate, "callback_handler", None)
        if handler is not None and callback in getattr(handler, "callbacks", ()):
            return candidate
        frame = frame.f_back
    return None
