"""Run by tests/test_trl_callback.py under `torch.distributed.run --nproc_per_node 2` (gloo, CPU): the tiny TRL run
with FlatlineCallback, 2 completions per process and 4 per group, so every group spans both processes; each rank
writes what it saw to OUT/rank<R>.json."""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trl_runs import trl_trainer  # noqa: E402

from flatline.integrations.trl import FlatlineCallback  # noqa: E402


def main(out: Path) -> None:
    callback = FlatlineCallback(run_dir=out / "run", probes="cheap", judge_every=2, log_book=str(out / "LOG.md"),
                                log=lambda *a: None)
    trl_trainer(out / "trl", callbacks=[callback], max_steps=2, per_device_train_batch_size=2).train()
    rank = torch.distributed.get_rank()
    (out / f"rank{rank}.json").write_text(json.dumps({"run_dir": str(callback.run_dir),
                                                      "world": torch.distributed.get_world_size()}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
