"""Operations each probe dispatches per step: the CPU-side proxy for its GPU cost.

On a GPU a probe's arithmetic takes microseconds; what it costs is one kernel launch (and Python dispatch) per torch
operation, so a probe that reduces 340 LoRA tensors one at a time costs thousands of launches a step. This counts
every aten operation each cheap probe dispatches on a 24-layer Qwen2-shaped model with LoRA r16 on all linear layers
(336 trainable tensors, as the 0.5B architecture has), narrow enough to run on the CPU in seconds.

    python bench/probe_ops.py [--steps 3]
"""
from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_step  # noqa: E402

from flatline.probes import build_probes  # noqa: E402
from flatline.probes.base import ProbeContext  # noqa: E402
from flatline.trainer.config import load_config  # noqa: E402
from flatline.trainer.loop import build_trainer  # noqa: E402

ARCH = dict(gpu_step.ARCHS["tiny"], num_hidden_layers=24)


class OpCounter(TorchDispatchMode):
    """Counts every aten operation dispatched while active."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


class CountedProbes:
    """A listener running probes one by one, counting each hook's operations."""

    def __init__(self, probes):
        self.probes = probes
        self.ops: collections.Counter = collections.Counter()
        self.wants_pre_step_weights = any(p.wants_pre_step_weights for p in probes)

    def _run(self, hook: str, *args) -> dict:
        row = {}
        for probe in self.probes:
            with OpCounter() as counter:
                values = getattr(probe, hook)(*args) or {}
            self.ops[f"{type(probe).__name__}.{hook}"] += counter.count
            row.update({f"{probe.family}/{k}": v for k, v in values.items()})
        return row

    def on_gradients(self, model, optimizer, step: int) -> dict:
        return self._run("on_gradients", model, optimizer)

    def on_step(self, record) -> dict:
        return self._run("on_step", record)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    gpu_step.DEVICE, gpu_step.NEW_TOKENS = "cpu", 4
    gpu_step.ARCHS["tiny24"] = ARCH
    root = Path(tempfile.mkdtemp(prefix="probe_ops_"))
    # The bandit task, so rewards vary and every step really updates the adapters.
    cfg = load_config(None, gpu_step.settings(gpu_step.model_dir("tiny24", root), "none", args.steps, [
        "task=bandit", "max_completion_length=4", "num_generations=4", "per_device_train_batch_size=8",
        "learning_rate=1e-3"]))
    trainer = build_trainer(cfg)
    counted = CountedProbes(build_probes("cheap", ProbeContext.from_trainer(trainer), cfg.max_grad_norm).probes)
    trainer.listeners = [counted]
    for _ in range(args.steps):
        trainer.step()
    tensors = sum(1 for p in trainer.model.parameters() if p.requires_grad)
    print(f"aten operations dispatched per step by each cheap probe ({ARCH['num_hidden_layers']} layers, LoRA r16 on "
          f"all linear layers: {tensors} trainable tensors; mean over {args.steps} steps)")
    for hook, ops in counted.ops.most_common():
        if ops:
            print(f"  {hook:32s} {ops / args.steps:8.0f}")
    print(f"  {'all cheap probes':32s} {sum(counted.ops.values()) / args.steps:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
