"""Weight sync from the trainer (a peft or plain HF model) to an in-process vLLM engine.

- lora: the adapter is saved with `save_pretrained` into a fresh folder and served as a new `LoRARequest` with a new
  integer id. vLLM caches adapters by id: reusing an id silently keeps serving the old adapter.
- merged: for every LoRA layer W + delta (peft's get_delta_weight) is computed into a new tensor (the trainer's own
  weights are never touched, so no merge/unmerge round trip can drift them), and the whole state dict, under the
  base model's HF names, goes through the model runner's `reload_weights`. W + delta is added in float32 and rounded
  once, by the engine's cast to its own dtype: in bfloat16, when W is on the bf16 grid (a bf16 base or checkpoint),
  a delta smaller than half a unit in the last place of W is rounded away exactly (merge_precision measures it).

Both are followed by `reset_prefix_cache()`: cached prompt keys/values were computed with the old weights.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch


def is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def active_adapter(model) -> str:
    return model.active_adapter if isinstance(model.active_adapter, str) else model.active_adapter[0]


def lora_layers(model) -> dict:
    """HF weight name -> the peft layer that carries the active adapter; {} without peft."""
    if not is_peft(model):
        return {}
    adapter = active_adapter(model)
    return {f"{name}.weight": module for name, module in model.get_base_model().named_modules()
            if hasattr(module, "base_layer") and adapter in getattr(module, "lora_A", {})}


@torch.no_grad()
def lora_deltas(model) -> dict[str, torch.Tensor]:
    """HF weight name -> the active adapter's delta (peft's get_delta_weight) of every LoRA layer; {} without peft."""
    adapter = active_adapter(model) if is_peft(model) else None
    return {name: module.get_delta_weight(adapter) for name, module in lora_layers(model).items()}


@torch.no_grad()
def merged_state(model, full_precision: bool = False) -> list[tuple[str, torch.Tensor]]:
    """(HF name, tensor) of the base model with every active LoRA delta added; the model itself is unchanged.
    A merged layer is W + delta summed in float32, returned in float32 when full_precision (for an engine that casts
    it once) and else rounded back to W's dtype."""
    if not is_peft(model):
        return [(name, p.detach()) for name, p in model.state_dict().items()]
    deltas = lora_deltas(model)
    out = []
    for name, tensor in model.get_base_model().state_dict().items():
        if "lora_" in name:
            continue
        name = name.replace(".base_layer.", ".")
        if name in deltas:
            merged = tensor.float() + deltas[name].float()
            tensor = merged if full_precision else merged.to(tensor.dtype)
        out.append((name, tensor.detach()))
    return out


def synced_layers(model, state: list[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The weights a merged sync moves, in full precision: the LoRA layers (W + delta), or under full fine-tuning the
    trainable parameters."""
    if is_peft(model):
        names = set(lora_layers(model))
    else:
        names = {name for name, p in model.named_parameters() if p.requires_grad}
    return {name: tensor.float() for name, tensor in state if name in names}


def model_runner(llm):
    """The in-process model runner (needs VLLM_ENABLE_V1_MULTIPROCESSING=0)."""
    return llm.llm_engine.engine_core.engine_core.model_executor.driver_worker.worker.model_runner


def push_merged(llm, model) -> list[tuple[str, torch.Tensor]]:
    """Reload the engine's weights from the merged state; returns what was pushed."""
    state = merged_state(model, full_precision=True)
    model_runner(llm).reload_weights(weights_iterator=iter(state))
    return state


class AdapterFolders:
    """Numbered adapter folders under `root`; keeps the last two (the one vLLM serves and the newest)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.saved: list[Path] = []

    def save(self, model, number: int) -> Path:
        path = self.root / f"adapter-{number:06d}"
        model.save_pretrained(path)
        self.saved.append(path)
        while len(self.saved) > 2:
            shutil.rmtree(self.saved.pop(0), ignore_errors=True)
        return path
