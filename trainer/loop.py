"""The GRPO loop: sample, reward, advantage, loss, backward, clip, step; then hand a step record to listeners.

Run it with `flatline train configs/default.toml`, or from Python:

    cfg = load_config("configs/bandit.toml")
    trainer = build_trainer(cfg)            # loads task, tokenizer, model (with LoRA)
    for _ in range(cfg.max_steps):
        row = trainer.step()                # one optimizer step; returns its metrics row

Several processes (torchrun / accelerate launch; flatline.trainer.distributed): each rank samples its block of the
global batch (W times the one-process batch), advantages are taken over the global rewards, every micro-batch's loss
is normalised by the global batch and the gradients are summed before clipping, so all ranks take the step one
process would take on the global batch. Rank 0 gathers the rollout and runs the listeners on the global step record.
What it leaves out: sharded parameters (DeepSpeed ZeRO-3, FSDP): the weights are replicated on every rank.
The model and every forward live on cfg.device; the rollout's tensors stay on the CPU, and each micro-batch's
inputs go to the device when the loss needs them (so the probes read CPU tensors on any device).
One generation batch holds per_device_train_batch_size * gradient_accumulation_steps completions; it is
scored and turned into advantages as a whole, then trained on in micro-batches, num_iterations times.
The batch itself is built in flatline.trainer.rollout; every log-probability comes from flatline.trainer.logprobs.
"""
from __future__ import annotations

import math
import random
import time
import warnings
from dataclasses import dataclass, field

import torch

from flatline.common.errors import DataError
from flatline.common.listeners import merged_calls, wants_pre_step_weights
from flatline.common.record import StepRecord
from flatline.common.snapshot import pre_step_weights
from flatline.trainer.algorithm import masked_mean
from flatline.trainer.distributed import (SINGLE, World, broadcast_trainable, gather_to_main, global_rows, global_sum,
                                          join_world, local_share, sum_gradients)
from flatline.trainer.episodes import runner as episodes
from flatline.trainer.limits import check_bandit_arms, check_context
from flatline.trainer.logprobs import model_device, rollout_logprobs
from flatline.trainer.models import (
    ModelSource,
    context_length,
    eos_token_ids,
    load_model,
    resolve_device,
    load_tokenizer,
    resolve_source,
)
from flatline.trainer.merged import StepTensors, merge_rollouts, merge_step_tensors
from flatline.trainer.plugins import Plugins, call_mask_fn, load_plugins
from flatline.trainer.rollout import (
    RewardScorer,
    Rollout,
    combine_rewards,
    decode_completions,
    logged_samples,
    rollout_metrics,
)
from flatline.trainer.phases import PhaseClock
from flatline.trainer.samplers import SampleBatch, build_sampler
from flatline.trainer.samplers.vllm_checks import check_vllm_source
from flatline.trainer.tasks import build_task
from flatline.trainer.tasks.base import Example, Task


@dataclass
class Prepared:
    """Everything checked cheaply before any weights load."""

    cfg: object
    task: Task
    plugins: Plugins
    source: ModelSource
    tokenizer: object
    prompt_ids: dict[str, list[int]] = field(default_factory=dict)  # example id -> prompt token ids


def prepare(cfg) -> Prepared:
    """Validate plug-ins, data and the model's location, tokenize every prompt, check the completion budget against
    the model's context and the bandit's arms against the vocabulary; raises FlatlineError on bad input."""
    plugins = load_plugins(cfg)
    task = build_task(cfg)
    source = resolve_source(cfg.model)
    resolve_device(cfg.device)  # a GPU asked for and absent is said now, before anything loads
    tokenizer = load_tokenizer(source)
    prepared = Prepared(cfg, task, plugins, source, tokenizer)
    for split in ("train", "eval"):
        for example in task.examples(split):
            ids = encode_prompt(tokenizer, example.messages)
            if len(ids) > cfg.max_prompt_length:
                raise DataError(f"example {example.id} ({split}): prompt has {len(ids)} tokens, more than "
                                f"max_prompt_length={cfg.max_prompt_length}; raise max_prompt_length or shorten the prompt")
            prepared.prompt_ids[example.id] = ids
    if not task.examples("train"):
        raise DataError("the training split is empty: check `data` and `train_size`")
    longest = max(len(ids) for ids in prepared.prompt_ids.values())
    check_context(cfg, context_length(source), longest, cfg.model)
    check_vllm_source(cfg, source, longest, context_length(source))
    check_bandit_arms(cfg, len(tokenizer))
    return prepared


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    if tokenizer.chat_template:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    return tokenizer("\n".join(m["content"] for m in messages))["input_ids"]


def lr_factor(step: int, total_steps: int, warmup_ratio: float, schedule: str) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based)."""
    warmup = math.ceil(total_steps * warmup_ratio)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total_steps - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:
        pass


class Trainer:
    def __init__(self, prepared: Prepared, model, listeners=(), world: World = SINGLE):
        cfg = self.cfg = prepared.cfg
        self.world = world
        self.task, self.plugins, self.tokenizer = prepared.task, prepared.plugins, prepared.tokenizer
        self.prompt_ids = prepared.prompt_ids
        self._prompt_texts: dict[str, str] = {}
        self.model = model
        self.device = model_device(model)
        self.listeners = list(listeners)
        # every rank starts from rank 0's weights, before the sampler copies them (no-op for one process)
        broadcast_trainable([p for p in model.parameters() if p.requires_grad], world)
        self.eos_token_ids = eos_token_ids(self.tokenizer, model)
        self.sampler = build_sampler(cfg, model, self.tokenizer, prepared.source, self.eos_token_ids,
                                     max(len(ids) for ids in prepared.prompt_ids.values()))
        self.scorer = RewardScorer(self.task, self.plugins.reward, cfg.reward_weights, self.prompt_text)
        self.trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        params = [p for _, p in self.trainable]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                           eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, cfg.max_steps, cfg.warmup_ratio, cfg.lr_scheduler_type))
        self.reference = None
        if cfg.beta > 0 and cfg.lora_r == 0:  # full fine-tuning: keep a frozen copy as the KL reference
            import copy

            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        self.train_examples = prepared.task.examples("train")
        self.eval_examples = prepared.task.examples("eval")[: cfg.eval_size]
        self._order: list[int] = []
        self._data_rng = random.Random(cfg.seed)
        self._rollout: Rollout | None = None  # this rank's part of the generation batch
        self._rank_rollouts: list[Rollout] = []  # rank 0: every rank's part, in rank order (one process: [it])
        self._global: Rollout | None = None  # rank 0: the global generation batch (one process: the rollout itself)
        self._iteration = 0
        self.step_count = 0
        self.num_tokens = 0
        self._no_graph_warned = False
        self._non_finite_warned = False

    @property
    def last_rollout(self) -> Rollout | None:
        """The generation batch the last step trained on (on rank 0 of several processes: the global one)."""
        return self._global

    # --- data ---
    def next_examples(self, count: int) -> list[Example]:
        """The next `count` training examples, reshuffled each epoch."""
        chosen = []
        while len(chosen) < count:
            if not self._order:
                self._order = list(range(len(self.train_examples)))
                self._data_rng.shuffle(self._order)
            chosen.append(self.train_examples[self._order.pop()])
        return chosen

    def prompt_text(self, example: Example) -> str:
        """The prompt as the model sees it (chat template applied), decoded once per example."""
        if example.id not in self._prompt_texts:
            self._prompt_texts[example.id] = self.tokenizer.decode(self.prompt_ids[example.id])
        return self._prompt_texts[example.id]

    # --- rollout ---
    def generate(self, examples: list[Example], num_generations: int, temperature: float) -> SampleBatch:
        cfg = self.cfg
        return self.sampler.sample([self.prompt_ids[e.id] for e in examples], num_generations,
                                   cfg.max_completion_length, temperature, cfg.top_p, cfg.top_k)

    def score(self, examples: list[Example], samples: SampleBatch, num_generations: int):
        """Decoded completions, reward components, errors and weights of a sampled batch."""
        completions = decode_completions(self.tokenizer, samples)
        token_ids = [row[:n].tolist() for row, n in zip(samples.completion_ids, samples.completion_lengths)]
        return (completions, *self.scorer.score(examples, completions, token_ids, num_generations))

    def rollout(self, clock: PhaseClock | None = None) -> Rollout:
        cfg = self.cfg
        G = cfg.num_generations
        clock = clock or PhaseClock(self.device)
        examples = local_share(self.next_examples(cfg.prompts_per_micro_batch * cfg.gradient_accumulation_steps
                                                  * self.world.size), self.world)
        if getattr(self.task, "is_environment", False):  # multi-turn episodes against a tool environment
            played = episodes.episode_rollout(self, examples)
            clock.mark("sample")
            return episodes.with_logprobs(self, played)
        samples = self.generate(examples, G, cfg.temperature)
        clock.mark("sample")
        completions, components, errors, weights = self.score(examples, samples, G)
        rewards = combine_rewards(components, weights)
        advantages = self.advantages(rewards, G)
        loss_mask, prompt_loss_mask = call_mask_fn(self.plugins.mask_fn, samples.completion_ids, self.eos_token_ids,
                                                   samples.prompt_ids, samples.prompt_mask)
        rollout = Rollout(examples, samples, loss_mask, samples.completion_lengths, completions, rewards, components,
                          weights, errors, advantages, prompt_loss_mask=prompt_loss_mask)
        clock.mark("score")
        if cfg.num_iterations > 1:
            rollout.old_logprobs = self.logprobs_no_grad(rollout, self.model).cpu()
        if cfg.beta > 0:
            rollout.ref_logprobs = self.reference_logprobs(rollout).cpu()
        if cfg.num_iterations > 1 or cfg.beta > 0:
            clock.mark("logprobs")
        return rollout

    def advantages(self, rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
        """advantage_fn over the global batch's rewards (every rank's, in rank order), this rank's rows of it:
        a batch-scaled or plug-in advantage sees what one process would. [n] -> [n]"""
        cfg = self.cfg
        everyone = global_rows(rewards, self.world)  # [W*n]
        advantages = self.plugins.advantage_fn(everyone, num_generations, scale_rewards=cfg.scale_rewards,
                                               eps=cfg.advantage_eps)
        if not torch.isinf(everyone).any():  # non-finite rewards were warned about where they were scored
            self._warn_non_finite(advantages)
        if not self.world.active:
            return advantages
        n = rewards.numel()
        return advantages[self.world.rank * n:(self.world.rank + 1) * n]

    def _warn_non_finite(self, advantages) -> None:
        """Once per run: advantages that are NaN or inf (non-finite rewards, or the advantage_fn's arithmetic)."""
        bad = int((~torch.isfinite(torch.as_tensor(advantages))).sum())
        if bad and not self._non_finite_warned:
            warnings.warn(f"{bad} of {torch.as_tensor(advantages).numel()} advantages are NaN or inf (non-finite "
                          f"rewards, or the advantage_fn's arithmetic); they are trained on as 0 so the run goes on, "
                          f"and flatline's advantage.numerics verdict diagnoses them")
            self._non_finite_warned = True

    def global_rollout(self, rollout: Rollout) -> Rollout | None:
        """Rank 0: the global batch, merged from every rank's part (kept in _rank_rollouts); other ranks: None."""
        parts = gather_to_main(rollout, self.world)
        if parts is None:
            self._rank_rollouts = []
            return None
        self._rank_rollouts = parts
        return merge_rollouts(parts, self.tokenizer.pad_token_id)

    def logprobs(self, model, rollout: Rollout, rows: torch.Tensor, with_entropy: bool = False):
        return rollout_logprobs(model, rollout, rows, self.cfg.num_generations, self.cfg.temperature, with_entropy)

    @torch.no_grad()
    def logprobs_no_grad(self, rollout: Rollout, model) -> torch.Tensor:
        return torch.cat([self.logprobs(model, rollout, rows)[0] for rows in self.micro_batches(len(rollout.completions))])

    def reference_logprobs(self, rollout: Rollout) -> torch.Tensor:
        if self.reference is not None:
            return self.logprobs_no_grad(rollout, self.reference)
        with self.model.disable_adapter():
            return self.logprobs_no_grad(rollout, self.model)

    def micro_batches(self, total: int) -> list[torch.Tensor]:
        """Row indices of each micro-batch (whole groups, since the batch size is a multiple of G)."""
        return list(torch.arange(total).split(self.cfg.per_device_train_batch_size))

    # --- one optimizer step ---
    def step(self) -> dict:
        """Sample (every num_iterations steps), then one optimizer step; returns the step's metrics row."""
        cfg = self.cfg
        clock = PhaseClock(self.device)
        started = time.perf_counter()
        listeners = self.listeners if self.world.is_main else []  # several processes: rank 0 listens for all
        if self._rollout is None or self._iteration >= cfg.num_iterations:
            self._rollout, self._iteration = self.rollout(clock), 0
            self._global = self.global_rollout(self._rollout) or self._rollout
            self.num_tokens += int(self._global.samples.prompt_mask.sum() + self._global.completion_lengths.sum())
        rollout = self._rollout
        generated = time.perf_counter()

        tensors = self.backward_steps(rollout)
        params = [p for _, p in self.trainable]
        sum_gradients(params, self.world)  # several processes: every rank now holds the global batch's gradient
        clock.mark("backward")
        gradient_metrics = merged_calls(listeners, "on_gradients", self.model, self.optimizer, self.step_count + 1)
        clock.mark("probes")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf))
        clock.mark("optimizer")
        pre_step = pre_step_weights(self.trainable) if wants_pre_step_weights(listeners) else None
        clock.mark("probes")
        learning_rate = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.sampler.sync_weights(self.model)
        self.step_count += 1
        self._iteration += 1
        clock.mark("optimizer")
        trained = time.perf_counter()

        if self.world.active:  # rank 0 reads the global batch; the others their own part (their rows go nowhere)
            gathered = gather_to_main(tensors, self.world)
            if gathered is not None:
                rollout, tensors = self._global, merge_step_tensors(gathered, self._rank_rollouts, self._global)
        trainer_logprobs, entropy = tensors.trainer_logprobs, tensors.entropy
        parts = merge_loss_parts(tensors.loss_parts, cfg.loss_type)
        row = {"step": self.step_count, "learning_rate": learning_rate, "grad_norm": grad_norm, **parts, **gradient_metrics}
        row.update(rollout_metrics(rollout, cfg.num_generations))
        row["entropy"] = float(masked_mean(entropy, rollout.completion_mask))
        row["num_tokens"] = self.num_tokens
        row["time/generate"] = generated - started
        row["time/train"] = trained - generated
        row["step_time"] = trained - started
        row.update(getattr(self.sampler, "step_metrics", dict)())  # vllm: sampler/weights_lag, time/sync
        if listeners:
            record = self.step_record(rollout, trainer_logprobs, entropy, parts, grad_norm, pre_step, dict(row))
            row.update(merged_calls(listeners, "on_step", record))
            clock.mark("probes")
        row.update(clock.metrics())
        return row

    def step_record(self, rollout: Rollout, trainer_logprobs, entropy, parts, grad_norm, pre_step, row) -> StepRecord:
        """The flat record listeners read (flatline.common.record), for the step just taken."""
        G, samples = self.cfg.num_generations, rollout.samples
        owners = [rollout.examples[i // G] for i in range(len(rollout.completions))]
        ref = rollout.ref_logprobs
        if ref is not None and rollout.prompt_loss_mask is not None:
            ref = ref[:, -rollout.completion_mask.size(1):]  # the completion part, as the other logprobs
        return StepRecord(
            step=self.step_count, iteration=self._iteration - 1,
            prompt_ids=samples.prompt_ids, prompt_mask=samples.prompt_mask, completion_ids=samples.completion_ids,
            completion_mask=rollout.completion_mask, prompt_loss_mask=rollout.prompt_loss_mask,
            env_mask=rollout.env_mask, episodes=rollout.episodes,
            completion_lengths=rollout.completion_lengths, truncated=samples.truncated,
            group_ids=[e.id for e in owners], prompts=[self.prompt_text(e) for e in owners],
            completions=rollout.completions, rewards=rollout.rewards, reward_components=rollout.reward_components,
            reward_weights=rollout.reward_weights, reward_errors=rollout.reward_errors, advantages=rollout.advantages,
            examples=rollout.examples, sampler_logprobs=samples.sampler_logprobs, trainer_logprobs=trainer_logprobs,
            ref_logprobs=ref, entropy=entropy, loss_parts=parts, grad_norm=grad_norm, model=self.model,
            optimizer=self.optimizer, pre_step_weights=pre_step, metrics=row)

    def backward_steps(self, rollout: Rollout) -> StepTensors:
        """Loss and backward over the rollout's micro-batches, each normalised as a micro-batch of the global batch
        (gradient_accumulation_steps and dapo's token count over every rank); its loss parts are kept apart."""
        cfg = self.cfg
        self.model.train()
        mask = rollout.loss_mask
        completion_width = rollout.completion_mask.size(1)
        num_items = int(global_sum(int(mask.sum()), self.world))
        logps_parts, entropy_parts, loss_parts = [], [], []
        for rows in self.micro_batches(len(rollout.completions)):
            logps, entropy = self.logprobs(self.model, rollout, rows, with_entropy=True)  # [n, T] on the device
            device = logps.device
            old = logps.detach() if rollout.old_logprobs is None else rollout.old_logprobs[rows].to(device)
            ref = None if rollout.ref_logprobs is None else rollout.ref_logprobs[rows].to(device)
            advantages = finite_or_zero(rollout.advantages[rows]).to(device)  # the record keeps them as they were
            loss, parts = self.plugins.loss_fn(
                logps, old, advantages, mask[rows].to(device), loss_type=cfg.loss_type, epsilon_low=cfg.epsilon,
                epsilon_high=cfg.epsilon_upper, beta=cfg.beta, ref_logps=ref,
                max_completion_length=cfg.max_completion_length, num_items_in_batch=num_items,
                gradient_accumulation_steps=cfg.gradient_accumulation_steps * self.world.size)
            if loss.requires_grad:
                loss.backward()
            elif not self._no_graph_warned:  # e.g. a loss_fn on detached logprobs, or no trainable parameter
                warnings.warn("the loss does not depend on any trainable parameter (no autograd graph): the step "
                              "computes no gradient; flatline's gradients.no_flow verdict will say why")
                self._no_graph_warned = True
            logps_parts.append(logps[:, -completion_width:].detach().cpu())  # the completion's, for the probes
            entropy_parts.append(entropy.cpu())
            loss_parts.append({k: float(v) for k, v in parts.items()})
        return StepTensors(torch.cat(logps_parts), torch.cat(entropy_parts), loss_parts)

    # --- evaluation and logging ---
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Score one completion per held-out prompt (greedy unless eval_temperature > 0): eval/<metric>."""
        if not self.eval_examples:
            return {}
        if getattr(self.task, "is_environment", False):
            return episodes.evaluate_episodes(self)
        samples = self.generate(self.eval_examples, 1, self.cfg.eval_temperature)
        _, components, _, weights = self.score(self.eval_examples, samples, 1)
        rewards = combine_rewards(components, weights)
        row = {"eval/reward": float(torch.nanmean(rewards)) if rewards.numel() else 0.0,
               "eval/mean_length": float(samples.completion_lengths.float().mean()),
               "eval/clipped_ratio": float(samples.truncated.float().mean())}
        for name, values in components.items():
            scored = [v for v in values if v is not None]
            row[f"eval/{name}"] = sum(scored) / len(scored) if scored else float("nan")
        return row

    def logged_samples(self, count: int) -> list[dict]:
        """The first completion of the first `count` groups of the last rollout, with what the loss actually saw."""
        return logged_samples(self._global, self.tokenizer, self.prompt_text, self.step_count,
                              self.cfg.num_generations, count)


def finite_or_zero(values: torch.Tensor) -> torch.Tensor:
    """NaN and inf replaced by 0: a non-finite advantage must not turn the weights into NaN. [N] -> [N]"""
    return torch.where(torch.isfinite(values), values, torch.zeros_like(values))


def merge_loss_parts(parts: list[dict], loss_type: str) -> dict:
    """Sum the backpropagated losses of the micro-batches; average the rates."""
    merged = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        additive = key in ("loss", "kl_loss")
        merged[key] = sum(values) if additive and loss_type == "dapo" else sum(values) / len(values)
    return merged


def build_trainer(cfg, listeners=(), prepared: Prepared | None = None) -> Trainer:
    """Prepare (cheap checks), join the other processes of a launch (if any), seed, load the model and return a
    Trainer. Every rank loads the same weights (same seed); each then samples with its own seed."""
    prepared = prepared or prepare(cfg)
    world = join_world(cfg.device)
    seed_everything(cfg.seed)
    model = load_model(prepared.source, prepared.tokenizer, cfg)
    trainer = Trainer(prepared, model, listeners, world)
    if world.active:
        seed_everything(cfg.seed + world.rank)
    return trainer
