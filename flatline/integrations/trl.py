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

What it writes, as `flatline train` does (main process only): a run directory (config.toml from GRPOConfig,
metrics.jsonl with TRL's names plus the probes', samples.jsonl, summary.json), then diagnosis.md/json and the log
book entry (RUNNING at the start, settled at the end; FAILED when a reward function raised). `flatline diagnose
RUN_DIR` re-judges it.

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

import dataclasses
import json
import math
import time
import warnings
from datetime import datetime
from pathlib import Path

import torch

from flatline.common.files import write_atomic
from flatline.common.jsonl import JsonlWriter
from flatline.common.listeners import warn_disabled
from flatline.common.record import StepRecord, tiers_of
from flatline.integrations.trl_parts import (completion_extent, config_from_args, distributed, eos_ids, find_trainer,
                                             global_batch, group_ids, local_rows, trl_version)
from flatline.probes import ALL_PROBES, ProbeContext, ProbeSet, attach
from flatline.probes.gradients import GradientProbe
from flatline.probes.policy import PolicyProbe
from flatline.probes.update import UpdateProbe

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - transformers is a flatline dependency
    raise ImportError("flatline.integrations.trl needs transformers and trl: pip install 'flatline[trl]'") from exc

# TRL versions whose GRPOTrainer internals the batch probes were checked against.
COVERED_TRL = ("1.16",)
# What the batch probes read on a GRPOTrainer: the two methods they wrap and the reward functions' names and weights.
WRAPPED = ("_calculate_rewards", "_generate_and_score_completions", "reward_func_names", "reward_weights")
# Faults that cannot heal by training on: worth stopping a run for (with stop_on="fail").
STRUCTURAL = ("gradients.no_flow", "update.weights_unchanged", "update.optimizer_coverage", "gradients.non_finite")
# Completions per step written to samples.jsonl.
SAMPLES_PER_STEP = 4
STOP_ON = (None, "fail")


class FlatlineCallback(TrainerCallback):
    """Probes, a flatline run directory, live verdicts and an optional stop, for a TRL GRPOTrainer run."""

    def __init__(self, run_dir: str | Path = "runs/trl", probes: str = "cheap", judge_every: int = 10,
                 stop_on: str | None = None, log_book: str = "", log=print):
        tiers_of(probes)  # a bad level is refused here, before training
        if stop_on not in STOP_ON:
            raise ValueError(f"stop_on must be None or 'fail', got {stop_on!r}")
        if judge_every < 1:
            raise ValueError(f"judge_every must be at least 1, got {judge_every}")
        self.requested_dir, self.level, self.judge_every = Path(run_dir), probes, judge_every
        self.stop_on, self.log_book, self.log = stop_on, log_book, log
        self.trainer = None
        self.run_dir: Path | None = None
        self.monitor = None
        self.batch_probes: ProbeSet | None = None
        self.loss_probes: ProbeSet | None = None  # the policy probe on the last micro-batch's loss forward
        self.loss_inputs: dict | None = None
        self.loss_logps: tuple | None = None
        self.rows: list[dict] = []
        self.pending: dict | None = None
        self.batch: dict | None = None  # the latest generation batch, until a step consumes it
        self.flagged: dict | None = None  # the first structural fault: id, step, seconds
        self.failure: str = ""
        self.started = 0.0
        self.main = True

    # ------------------------------------------------------------------ binding
    def bind(self, trainer) -> "FlatlineCallback":
        """Tie the callback to its trainer (found by itself at train start when passed in `callbacks=`)."""
        self.trainer = trainer
        return self

    def on_train_begin(self, args, state, control, model=None, optimizer=None, processing_class=None, **kwargs):
        self.trainer = self.trainer or find_trainer(self)
        self.main = bool(state.is_world_process_zero)
        self.started = time.perf_counter()
        self.max_steps = int(state.max_steps or args.max_steps or 0)
        if self.level != "none" and model is not None and optimizer is not None:
            self.monitor = self._model_monitor(model, optimizer, args)
        if self.level != "none" and self.trainer is not None:
            self._wrap_batch_methods(self.trainer, args, processing_class)
        elif self.level != "none":
            warnings.warn("flatline: the GRPOTrainer was not found from the callback; batch probes are off "
                          "(call FlatlineCallback(...).bind(trainer) to turn them on)")
        if self.main:
            self._open_run_dir(args)

    def _model_monitor(self, model, optimizer, args):
        """The gradient and update probes: on DeepSpeed's engine step (its optimizer is not torch's), else on the
        torch optimizer's step hooks. One that cannot attach is a warning; training goes on without it."""
        engine = getattr(self.trainer, "deepspeed", None) if getattr(self.trainer, "is_deepspeed_enabled", False) else None
        try:
            if engine is not None:
                from flatline.probes.sharded import engine_monitor

                return engine_monitor(engine, max_grad_norm=args.max_grad_norm)
            inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
            return attach(model, inner, max_grad_norm=args.max_grad_norm)
        except Exception as exc:
            warn_disabled("monitor", "flatline gradient and update probes", exc)
            return None

    def _wrap_batch_methods(self, trainer, args, processing_class) -> None:
        version = trl_version()
        missing = [name for name in WRAPPED if not hasattr(trainer, name)]
        if missing:
            warnings.warn(f"flatline: TRL {version} has no GRPOTrainer.{missing[0]} (covered: "
                          f"{', '.join(COVERED_TRL)}); the batch probes are disabled, the model-level ones run")
            return
        if not version.startswith(COVERED_TRL):
            warnings.warn(f"flatline: TRL {version} is not a covered version ({', '.join(COVERED_TRL)}); batch "
                          "probes on, and disabled with a warning if its tensors differ")
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        context = ProbeContext(
            tokenizer=tokenizer, pad_token_id=getattr(tokenizer, "pad_token_id", None),
            eos_token_ids=eos_ids(tokenizer), num_generations=getattr(trainer, "num_generations", None),
            max_completion_length=getattr(args, "max_completion_length", None),
            max_prompt_length=getattr(args, "max_prompt_length", None),
            temperature=float(getattr(args, "temperature", 1.0) or 1.0), beta=float(getattr(args, "beta", 0.0) or 0.0))
        tiers = tiers_of(self.level)
        batch_classes = [c for c in ALL_PROBES if c.tier in tiers and c not in (GradientProbe, UpdateProbe)]
        self.batch_probes = ProbeSet([c(context) for c in batch_classes])
        rewards_method, generate_method = trainer._calculate_rewards, trainer._generate_and_score_completions

        def calculate_rewards(*a, **kw):
            try:
                rewards = rewards_method(*a, **kw)
            except Exception as exc:
                self._reward_failed(exc)
                raise
            if self.trainer.model.training:  # evaluation scores its own batches: not this step's
                self._note(lambda: self._capture_rewards(rewards))
            return rewards

        def generate_and_score(*a, **kw):
            output = generate_method(*a, **kw)
            if self.trainer.model.training:
                self._note(lambda: self._capture_batch(output))
            return output

        trainer._calculate_rewards = calculate_rewards
        trainer._generate_and_score_completions = generate_and_score
        if hasattr(trainer, "_compute_loss") and hasattr(trainer, "_get_per_token_logps_and_entropies"):
            # the loss sees shuffled micro-batches: no group structure there
            self.loss_probes = ProbeSet([PolicyProbe(dataclasses.replace(context, num_generations=None))])
            loss_method, logps_method = trainer._compute_loss, trainer._get_per_token_logps_and_entropies

            def compute_loss(model, inputs, *a, **kw):
                self._note(lambda: setattr(self, "loss_inputs", inputs))
                return loss_method(model, inputs, *a, **kw)

            def logps_and_entropies(*a, **kw):
                result = logps_method(*a, **kw)
                if torch.is_grad_enabled():  # the loss's own forward (old and reference log-probs run under no_grad)
                    self._note(lambda: setattr(self, "loss_logps", (result[0].detach(), result[1])))
                return result

            trainer._compute_loss = compute_loss
            trainer._get_per_token_logps_and_entropies = logps_and_entropies

    def _note(self, capture) -> None:
        """Run a capture; one that raises turns the batch probes off with one warning, training goes on."""
        if self.batch_probes is None:
            return
        try:
            with torch.no_grad():
                capture()
        except Exception as exc:
            warn_disabled("probe", f"flatline.integrations.trl batch capture (TRL {trl_version()})", exc)
            self.batch_probes = None

    def _capture_rewards(self, rewards_per_func) -> None:
        trainer = self.trainer
        names = list(trainer.reward_func_names)
        weights = [float(w) for w in trainer.reward_weights.tolist()]
        values = rewards_per_func.detach().float().cpu()
        self.batch = {"rewards_per_func": values, "names": names, "weights": weights}

    def _capture_batch(self, output: dict) -> None:
        if self.batch is None:
            self.batch = {}
        self.batch.update({key: value.detach() for key, value in output.items() if torch.is_tensor(value)})

    # ------------------------------------------------------------------ the run directory
    def _open_run_dir(self, args) -> None:
        from flatline.diagnostics.conclude import file_run
        from flatline.diagnostics.history import History
        from flatline.diagnostics.logbook import RunState
        from flatline.trainer.rundir import create_run_dir
        import tomli_w

        self.config = config_from_args(args, self.trainer)
        self.run_dir = create_run_dir(self.requested_dir)
        write_atomic(self.run_dir / "config.toml", tomli_w.dumps(self.config))
        self.metrics = JsonlWriter(self.run_dir / "metrics.jsonl")
        self.samples = JsonlWriter(self.run_dir / "samples.jsonl")
        self.started_at = datetime.now()
        self.log(f"flatline: run directory {self.run_dir}")
        history = History(run=self.run_dir.name, rows=[], config=self.config, run_dir=self.run_dir)
        file_run(history, state=RunState("running", 0, self.max_steps), log_book=self.log_book)

    # ------------------------------------------------------------------ each step
    def on_step_end(self, args, state, control, **kwargs):
        self._flush()
        step = int(state.global_step)
        row = {"step": step}
        if self.monitor is not None:
            row.update(self.monitor.metrics())
        try:
            row.update(self._batch_numbers(step))
        except Exception as exc:  # a TRL whose tensors differ: the batch probes go, training goes on
            warn_disabled("probe", f"flatline.integrations.trl batch probes (TRL {trl_version()})", exc)
            self.batch_probes = self.loss_probes = None
        self.batch = self.loss_inputs = self.loss_logps = None
        self.pending = row
        if step % self.judge_every == 0:
            self._judge_live(state, control)
        return control

    def _batch_numbers(self, step: int) -> dict:
        """The batch probes on this step's generation batch, and the policy probe on the loss's last micro-batch."""
        row = {}
        if self.batch is not None and "advantages" in self.batch and self.batch_probes is not None:
            if distributed():  # every rank's rows, in process order, on the main process (a collective)
                pad = getattr(self.batch_probes.probes[0].context, "pad_token_id", None) if self.batch_probes.probes else None
                self.batch = global_batch(self.batch, pad)
            if self.main:
                record = self._record(step)
                row.update(self.batch_probes.on_step(record))
                self._write_samples(record)
        if self.loss_probes is not None and self.loss_inputs is not None and self.loss_logps is not None:
            row.update(self._reduced(self.loss_probes.on_step(self._loss_record(step))))
        return row

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = {(f"eval/{k[len('eval_'):]}" if k.startswith("eval_") else k): v for k, v in (logs or {}).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.pending is not None and self.pending["step"] == int(state.global_step):
            self.pending.update(logs)
        elif logs:
            self.pending = {"step": int(state.global_step), **logs}
        return control

    def _flush(self) -> None:
        """A step's row is complete once the next step ends (TRL logs it after on_step_end) or training ends."""
        if self.pending is None:
            return
        row, self.pending = self.pending, None
        self.rows.append(row)
        if self.main:
            self.metrics.write(row)

    def _record(self, step: int) -> StepRecord:
        batch = self.batch
        completion_ids, completion_mask = batch.get("completion_ids"), batch.get("completion_mask")
        lengths, truncated = completion_extent(completion_ids, eos_ids(self.batch_probes.probes[0].context.tokenizer))
        rewards, components, weights = None, {}, None
        if "rewards_per_func" in batch:
            per_func = batch["rewards_per_func"]
            rows = local_rows(per_func.shape[0], batch["advantages"].shape[0], self.trainer)
            per_func = per_func[rows]
            weight = torch.tensor(batch["weights"])
            rewards = (per_func * weight.unsqueeze(0)).nansum(dim=1)
            rewards[torch.isnan(per_func).all(dim=1)] = math.nan
            components = {name: [None if math.isnan(x) else float(x) for x in per_func[:, i].tolist()]
                          for i, name in enumerate(batch["names"])}
            weights = dict(zip(batch["names"], batch["weights"]))
        sampler, trainer_logps = batch.get("sampling_per_token_logps"), batch.get("old_per_token_logps")
        return StepRecord(
            step=step, prompt_ids=batch.get("prompt_ids"), prompt_mask=batch.get("prompt_mask"),
            completion_ids=completion_ids, completion_mask=completion_mask, completion_lengths=lengths,
            truncated=truncated, group_ids=group_ids(len(lengths), self.trainer.num_generations),
            rewards=rewards, reward_components=components, reward_weights=weights,
            advantages=batch["advantages"].float().reshape(-1) if batch["advantages"].dim() == 1 else
            batch["advantages"].float()[:, 0],
            model=self.trainer.model,
            sampler_logprobs=sampler if trainer_logps is not None else None,
            trainer_logprobs=trainer_logps if sampler is not None else None)

    def _loss_record(self, step: int) -> StepRecord:
        """The last micro-batch as the loss saw it: its advantages and mask, the reference log-probs, and the
        log-probs and entropies of the forward it backpropagated."""
        inputs, (logps, entropies) = self.loss_inputs, self.loss_logps
        advantages = inputs["advantages"]
        return StepRecord(step=step, completion_mask=inputs["completion_mask"], trainer_logprobs=logps,
                          ref_logprobs=inputs.get("ref_per_token_logps"),
                          entropy=entropies.detach() if torch.is_tensor(entropies) else None,
                          advantages=advantages if advantages.dim() == 1 else advantages[:, 0])

    def _reduced(self, row: dict) -> dict:
        """Average the batch probes' numbers over ranks, over the union of the names every rank has (a number a
        rank lacks, or has non-finite, is left out of that name's mean). One process: unchanged."""
        if not distributed():
            return row
        local = sorted(k for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        everyone: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(everyone, local)
        names = sorted(set().union(*everyone))
        values = torch.tensor([float(row.get(k, math.nan)) for k in names], dtype=torch.float64)
        finite = torch.isfinite(values)
        totals = torch.stack([torch.where(finite, values, torch.zeros_like(values)), finite.double()])
        if torch.distributed.get_backend() == "nccl":
            totals = totals.cuda()
        torch.distributed.all_reduce(totals)
        totals = totals.cpu()
        means = torch.where(totals[1] > 0, totals[0] / totals[1].clamp(min=1), torch.full_like(totals[0], math.nan))
        return {**row, **dict(zip(names, means.tolist()))}

    def _write_samples(self, record: StepRecord) -> None:
        tokenizer = self.batch_probes.probes[0].context.tokenizer if self.batch_probes.probes else None
        if tokenizer is None or record.completion_ids is None:
            return
        for i in range(min(SAMPLES_PER_STEP, record.completion_ids.shape[0])):
            n = int(record.completion_lengths[i])
            self.samples.write({
                "step": record.step, "index": i,
                "prompt": tokenizer.decode(record.prompt_ids[i][record.prompt_mask[i].bool()], skip_special_tokens=True),
                "completion": tokenizer.decode(record.completion_ids[i][:n], skip_special_tokens=True),
                "reward": None if record.rewards is None else float(record.rewards[i]),
                "advantage": float(record.advantages[i]), "truncated": bool(record.truncated[i])})

    # ------------------------------------------------------------------ live verdicts and the end
    def _judge_live(self, state, control) -> None:
        """Judge the history so far on the main process; every rank then learns whether to stop (a stop on one
        rank alone would hang the others)."""
        flagged = self._structural_fault(int(state.global_step)) if self.main and self.flagged is None else None
        if distributed():
            shared = [flagged]
            torch.distributed.broadcast_object_list(shared, src=0)
            flagged = shared[0]
        if flagged is None:
            return
        self.flagged = flagged
        if self.stop_on == "fail":
            control.should_training_stop = True

    def _structural_fault(self, step: int) -> dict | None:
        from flatline.diagnostics.history import History
        from flatline.diagnostics.judge import judge

        rows = self.rows + ([dict(self.pending)] if self.pending else [])
        diagnosis = judge(History(run=self.run_dir.name, rows=rows, config=self.config))
        found = [v for v in diagnosis.verdicts if v.id in STRUCTURAL and v.status == "fail"]
        if not found:
            return None
        seconds = time.perf_counter() - self.started
        self.log(f"flatline: FAIL {found[0].id} at step {step} ({seconds:.0f} s): {found[0].reason}"
                 + ("; stopping training (stop_on='fail')" if self.stop_on == "fail" else ""))
        return {"id": found[0].id, "step": step, "seconds": round(seconds, 1), "reason": found[0].reason}

    def _reward_failed(self, exc: Exception) -> None:
        """A reward function raised: TRL stops; the run directory and log book say so, with the numbers."""
        self.failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        if self.main and self.run_dir is not None:
            self.pending = {**(self.pending or {"step": int(self.trainer.state.global_step) + 1}), "reward/errors": 1.0}
            self._finish("failed")

    def on_train_end(self, args, state, control, **kwargs):
        if self.main and self.run_dir is not None and not self.failure:
            self._finish("completed")
        if self.monitor is not None:
            self.monitor.detach()
        return control

    def _finish(self, status: str) -> None:
        from flatline.diagnostics.conclude import conclude, file_run
        from flatline.diagnostics.history import load_history
        from flatline.diagnostics.judge import judge
        from flatline.diagnostics.report import write_report
        from flatline.trainer.run import Outcome, run_summary

        self._flush()
        self.metrics.close()
        self.samples.close()
        steps = sum(1 for row in self.rows if "reward" in row or any(k.startswith("advantage/") for k in row))
        outcome = Outcome(status, steps, self.max_steps, self.failure)
        summary = run_summary(self.rows, outcome, self.run_dir.name, self.started_at,
                              time.perf_counter() - self.started, "")
        summary["trainer"] = f"trl {trl_version()}"
        if self.flagged is not None:
            summary["flatline_flagged"] = self.flagged
            summary["stopped_by_flatline"] = self.stop_on == "fail"
        write_atomic(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        history = load_history(self.run_dir)
        diagnosis = judge(history)
        if status == "completed":
            report = conclude(history, diagnosis, report_dirs=[self.run_dir], log_book=self.log_book, log=self.log)
        else:
            report = write_report(diagnosis, history, self.run_dir)
            file_run(history, diagnosis, log_book=self.log_book, report_dir=self.run_dir)
        if self.flagged is not None and report is not None:
            with open(Path(report).with_suffix(".md"), "a", encoding="utf-8") as out:
                f = self.flagged
                out.write(f"\n## Live monitor\n\n{f['id']} failed at step {f['step']}, {f['seconds']} s into "
                          f"training{' (training stopped there: stop_on=fail)' if self.stop_on == 'fail' else ''}: "
                          f"{f['reason']}\n")
