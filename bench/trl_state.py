"""Write a metric log as TRL leaves it on disk: `checkpoint-N/trainer_state.json` (transformers TrainerState).

    write_trainer_state(run_dir, log_history, max_steps=400, eval_steps=25)  # -> run_dir/trainer_state.json

`log_history` is what `Trainer.log` appends, one dict per logging step: the training entry (`step`, `epoch`,
TRL's metric names such as `reward`, `kl`, `completions/mean_length`, plus Trainer's `loss`, `grad_norm`,
`learning_rate`), and at each evaluation a separate entry whose keys carry the `eval_` prefix (`eval_reward`, ...).
Trainer.train() ends the list with one closing entry (`train_runtime`, `train_loss`, ...): readers must skip it.
A TRL user has no JSON config beside this file (GRPOConfig goes to `training_args.bin`, a pickle, and to the
tracker's run config), so nothing else is written. Used by bench/diagnose_peers.py and bench/healthy_logs.py.
"""
from __future__ import annotations

import json
from pathlib import Path

# The keys a transformers 4.x/5.x TrainerState serialises (TrainerState.save_to_json: asdict, indent=2, sort_keys).
_STATE_DEFAULTS = {
    "best_global_step": None, "best_metric": None, "best_model_checkpoint": None, "is_hyper_param_search": False,
    "is_local_process_zero": True, "is_world_process_zero": True, "logging_steps": 1, "num_input_tokens_seen": 0,
    "num_train_epochs": 1, "stateful_callbacks": {}, "total_flos": 0.0, "train_batch_size": 8, "trial_name": None,
    "trial_params": None,
}


def closing_entry(last_step: int, runtime_seconds: float) -> dict:
    """The entry Trainer.train() appends after the last step (its keys are not metrics of any step)."""
    return {"step": last_step, "epoch": 1.0, "total_flos": 0.0, "train_loss": 0.0,
            "train_runtime": round(runtime_seconds, 2), "train_samples_per_second": 0.0,
            "train_steps_per_second": 0.0}


def trainer_state(log_history: list[dict], max_steps: int, eval_steps: int) -> dict:
    """A TrainerState dict as Trainer writes it at the end of training (global_step = max_steps)."""
    return {**_STATE_DEFAULTS, "epoch": 1.0, "eval_steps": eval_steps, "global_step": max_steps,
            "log_history": log_history, "max_steps": max_steps, "save_steps": max_steps}


def write_trainer_state(run_dir: Path, log_history: list[dict], max_steps: int, eval_steps: int) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "trainer_state.json"
    state = trainer_state(log_history, max_steps, eval_steps)
    path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
