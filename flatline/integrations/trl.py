"""flatline's probes inside TRL's GRPOTrainer: one import, one line.

    from flatline.integrations.trl import FlatlineCallback
    trainer = GRPOTrainer(..., callbacks=[FlatlineCallback(run_dir="runs/my-run", probes="cheap", stop_on="fail")])

What it attaches:
- model level (any TRL version): per-module gradient norms before clipping, LoRA update size and changed elements,
  optimizer coverage, precision kept, base drift (flatline.probes.attach: optimizer step hooks that only read);
- batch level, on what TRL computed for the step: rewards per reward function (with TRL's weights), advantages and
  their groups, completion masks, lengths and truncation, sampler vs trainer log-probs when TRL has both (vLLM).
  TRL exposes no hook for these tensors, so the callback wraps the two smallest methods that carry them,
  `GRPOTrainer._calculate_rewards` and `_generate_and_score_completions`, and reads their results unchanged.
  Covered: TRL 1.16 (COVERED_TRL); on another version whose methods are missing or return something else, the
  batch probes are disabled with one warning and the model-level probes go on.

What it writes, as `flatline train` does (main process only, through flatline.common.rundir): a run directory
(config.toml from GRPOConfig, metrics.jsonl with TRL's names plus the probes', samples.jsonl, summary.json), then
diagnosis.md/json and the log book entry (RUNNING at the start, settled at the end; FAILED when a reward function
raised). A step's metrics row is written as soon as TRL's logging of that step is over, before the next step begins.
`flatline diagnose RUN_DIR` re-judges it.

Its parts: trl_args.py (the arguments, checked at construction), trl_capture.py (what TRL computed, read unchanged),
trl_record.py (step records -> the probes' numbers and samples), trl_run.py (the run directory from start to end),
trl_parts.py (pure functions over TRL's objects); this module is TRL's hooks, handing each moment to them.

Live verdicts: every `judge_every` optimizer steps the history so far is judged; a structural fault that cannot
heal (STRUCTURAL) is printed with the step and seconds it took, and with stop_on="fail" training stops cleanly
(control.should_training_stop): the run directory and log book are completed as for any run.

Several processes (accelerate launch, DDP or DeepSpeed): TRL gathers the rewards of every process and slices the
advantages by process (a group may span processes), so the callback gathers the batch tensors its probes read from every
rank, in process order, and the main process runs the batch probes on the global batch (flatline.integrations.trl_parts
.global_batch). Gradient and update probes: under DDP the optimizer hooks see the all-reduced gradients, the same on
every rank; under DeepSpeed (ZeRO-3 shards included) the optimizer is DeepSpeed's, so the probes wrap the engine's
step instead and gather whole gradients and LoRA weights (flatline.probes.sharded). The policy probe reads the last
micro-batch of each rank and is averaged over ranks. Only the main process writes.
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import torch

from flatline.common.listeners import warn_disabled
from flatline.integrations.trl_args import CallbackArgs
from flatline.integrations.trl_capture import BatchCapture, model_monitor
from flatline.integrations.trl_parts import completion_extent, distributed, find_trainer, trl_version
from flatline.integrations.trl_record import StepProbes
from flatline.integrations.trl_run import TrlRun, trl_logs

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - transformers is a flatline dependency
    raise ImportError("flatline.integrations.trl needs transformers and trl: pip install 'flatline[trl]'") from exc

__all__ = ["COVERED_TRL", "WRAPPED", "FlatlineCallback", "completion_extent"]

# TRL versions whose GRPOTrainer internals the batch probes were checked against.
COVERED_TRL = ("1.16",)
# What the batch probes read on a GRPOTrainer: the two methods they wrap and the reward functions' names and weights.
WRAPPED = ("_calculate_rewards", "_generate_and_score_completions", "reward_func_names", "reward_weights")


class FlatlineCallback(TrainerCallback):
    """Probes, a flatline run directory, live verdicts and an optional stop, for a TRL GRPOTrainer run."""

    def __init__(self, run_dir: str | Path = "runs/trl", probes: str = "cheap", judge_every: int = 10,
                 stop_on: str | None = None, log_book: str = "", log=print):
        self.settings = CallbackArgs(run_dir, probes, judge_every, stop_on, log_book, log)  # refuses a bad one
        self.trainer = None
        self.run: TrlRun | None = None  # the main process's run directory, from train start
        self.monitor = None  # the gradient and update probes
        self.capture: BatchCapture | None = None
        self.probes: StepProbes | None = None
        self.flagged: dict | None = None  # the first structural fault: id, step, seconds, reason
        self.failure: str = ""
        self.started = 0.0
        self.main = True

    @property
    def run_dir(self) -> Path | None:
        return self.run.dir.path if self.run is not None else None

    def bind(self, trainer) -> "FlatlineCallback":
        """Tie the callback to its trainer (found by itself at train start when passed in `callbacks=`)."""
        self.trainer = trainer
        return self

    # ------------------------------------------------------------------ start
    def on_train_begin(self, args, state, control, model=None, optimizer=None, processing_class=None, **kwargs):
        self.trainer = self.trainer or find_trainer(self)
        self.main = bool(state.is_world_process_zero)
        self.started = time.perf_counter()
        level = self.settings.probes
        if level != "none" and model is not None and optimizer is not None:
            self.monitor = model_monitor(self.trainer, model, optimizer, args.max_grad_norm)
        if level != "none" and self.trainer is not None:
            self._attach_batch_probes(args, processing_class)
        elif level != "none":
            warnings.warn("flatline: the GRPOTrainer was not found from the callback; batch probes are off "
                          "(call FlatlineCallback(...).bind(trainer) to turn them on)")
        if self.main:
            max_steps = int(state.max_steps or args.max_steps or 0)
            self.run = TrlRun(Path(self.settings.run_dir), args, self.trainer, max_steps, self.started,
                              os.fspath(self.settings.log_book), self.settings.log)

    def _attach_batch_probes(self, args, processing_class) -> None:
        trainer, version = self.trainer, trl_version()
        missing = [name for name in WRAPPED if not hasattr(trainer, name)]
        if missing:
            warnings.warn(f"flatline: TRL {version} has no GRPOTrainer.{missing[0]} (covered: "
                          f"{', '.join(COVERED_TRL)}); the batch probes are disabled, the model-level ones run")
            return
        if not version.startswith(COVERED_TRL):
            warnings.warn(f"flatline: TRL {version} is not a covered version ({', '.join(COVERED_TRL)}); batch "
                          "probes on, and disabled with a warning if its tensors differ")
        self.capture = BatchCapture(trainer, self._reward_failed)
        self.probes = StepProbes(probe_context(trainer, args, processing_class), self.settings.probes, trainer,
                                 self.main, self.capture.sees_loss)

    # ------------------------------------------------------------------ each step
    def on_step_begin(self, args, state, control, **kwargs):
        if self.run is not None:
            self.run.write_row()  # the previous step's logging is over
        return control

    def on_step_end(self, args, state, control, **kwargs):
        step = int(state.global_step)
        row = {"step": step}
        if self.monitor is not None:
            row.update(self.monitor.metrics())
        if self.probes is not None:
            try:
                numbers, samples = self.probes.numbers(step, self.capture.take())
            except Exception as exc:  # a TRL whose tensors differ: the batch probes go, training goes on
                warn_disabled("probe", f"flatline.integrations.trl batch probes (TRL {trl_version()})", exc)
                self.probes = None
                self.capture.off()
            else:
                row.update(numbers)
                for sample in samples if self.run is not None else ():
                    self.run.dir.add_sample(sample)
        if self.run is not None:
            self.run.open_row(row)
        if step % self.settings.judge_every == 0:
            self._judge_live(step, control)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.run is not None:
            self.run.add_logs(int(state.global_step), trl_logs(logs))
        return control

    def _judge_live(self, step: int, control) -> None:
        """Judge the history so far on the main process; every rank then learns whether to stop (a stop on one
        rank alone would hang the others)."""
        flagged = None
        if self.run is not None and self.flagged is None:
            flagged = self.run.structural_fault(step, self.settings.stop_on)
        if distributed():
            shared = [flagged]
            torch.distributed.broadcast_object_list(shared, src=0)
            flagged = shared[0]
        if flagged is None:
            return
        self.flagged = flagged
        if self.settings.stop_on == "fail":
            control.should_training_stop = True

    # ------------------------------------------------------------------ the end
    def _reward_failed(self, exc: Exception) -> None:
        """A reward function raised: TRL stops; the run directory and log book say so, with the numbers."""
        self.failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        if self.run is not None:
            self.run.note_reward_error(int(self.trainer.state.global_step) + 1)
            self._finish("failed")

    def on_train_end(self, args, state, control, **kwargs):
        if self.run is not None and not self.failure:
            self._finish("completed")
        if self.monitor is not None:
            self.monitor.detach()
        return control

    def _finish(self, status: str) -> None:
        self.run.finish(status, self.failure, self.flagged, stopped=self.settings.stop_on == "fail")


def probe_context(trainer, args, processing_class):
    """What the batch probes know of a TRL run: its tokenizer, pad and EOS ids (TRL's: the tokenizer's and the
    model's generation config's), group size, length limits, temperature and beta."""
    from flatline.probes import ProbeContext
    from flatline.trainer.models import eos_token_ids

    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    configured = getattr(getattr(trainer.model, "generation_config", None), "eos_token_id", None)
    return ProbeContext(
        tokenizer=tokenizer, pad_token_id=getattr(tokenizer, "pad_token_id", None),
        eos_token_ids=eos_token_ids(tokenizer, configured), num_generations=getattr(trainer, "num_generations", None),
        max_completion_length=getattr(args, "max_completion_length", None),
        max_prompt_length=getattr(args, "max_prompt_length", None),
        temperature=float(getattr(args, "temperature", 1.0) or 1.0), beta=float(getattr(args, "beta", 0.0) or 0.0))
