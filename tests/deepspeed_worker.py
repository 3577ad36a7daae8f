"""The sharded-parameter probes under DeepSpeed ZeRO-3 on the CPU (tests/test_distributed.py).

    torchrun --nproc_per_node 2 tests/deepspeed_worker.py OUT.json    # ZeRO-3, each rank half of the batch
    python tests/deepspeed_worker.py OUT.json                         # one process, plain torch, the whole batch

A small LoRA MLP (peft) trained 2 steps with AdamW and clipping; ZeRO-3 shards every parameter over the ranks.
The ZeRO-3 launch reads its numbers with flatline.probes.sharded.engine_monitor, the single process with
flatline.probes.attach; rank 0 (or the single process) writes the rows as JSON.
"""
from __future__ import annotations

import json
import os
import sys
from collections import OrderedDict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LR, CLIP, STEPS, ROWS = 5e-2, 0.5, 2, 8


def lora_mlp() -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = torch.nn.Sequential(OrderedDict(fc1=torch.nn.Linear(16, 32), act=torch.nn.Tanh(), fc2=torch.nn.Linear(32, 4)))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["fc1", "fc2"]))
    with torch.no_grad():  # B starts at 0: give it values so the first step's gradients reach A too
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    return model


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(ROWS, 16, generator=g), torch.randn(ROWS, 4, generator=g)


def loss_of(model, x, y) -> torch.Tensor:
    return (model(x) - y).pow(2).mean()


def single(out: Path) -> None:
    from flatline.probes import attach

    model = lora_mlp()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    monitor = attach(model, optimizer, max_grad_norm=CLIP)
    rows = []
    for step in range(STEPS):
        x, y = batch(step)
        loss_of(model, x, y).backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        optimizer.step()
        optimizer.zero_grad()
        rows.append(monitor.metrics())
    out.write_text(json.dumps(rows))


def sharded(out: Path) -> None:
    import deepspeed

    from flatline.probes.sharded import engine_monitor

    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    model = lora_mlp()
    config = {"train_micro_batch_size_per_gpu": ROWS // world, "gradient_accumulation_steps": 1,
              "optimizer": {"type": "AdamW", "params": {"lr": LR, "weight_decay": 0.0, "torch_adam": True}},
              "zero_optimization": {"stage": 3}, "gradient_clipping": CLIP}
    engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
                                      config=config)
    monitor = engine_monitor(engine, max_grad_norm=CLIP)
    share = ROWS // world
    rows = []
    for step in range(STEPS):
        x, y = batch(step)
        x, y = x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share]
        engine.backward(loss_of(engine, x, y))
        engine.step()
        rows.append({**monitor.metrics(), "sharded": int(any(hasattr(p, "ds_id") for p in engine.module.parameters()))})
    if rank == 0:
        out.write_text(json.dumps(rows))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    # DeepSpeed's CPU communication threads can abort the interpreter's shutdown ("terminate called without an
    # active exception", SIGABRT) after the work is done: leave without it
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    target = Path(sys.argv[1])
    sharded(target) if "WORLD_SIZE" in os.environ else single(target)
