"""The GRPO loop: sample, reward, advantage, loss, backward, clip, step; then hand a step record to listeners.

Run it with `flatline train configs/default.toml`, or from Python:

    cfg = load_config("configs/bandit.toml")
    trainer = build_trainer(cfg)            # loads task, tokenizer, model (with LoRA)
    for _ in range(cfg.max_steps):
        row = trainer.step()                # one optimizer step; returns its metrics row

What it leaves out: several devices, DeepSpeed, vLLM (a Sampler implements it), multi-turn tool use.
One generation batch holds per_device_train_batch_size * gradient_accumulation_steps completions; it is
scored and turned into advantages as a whole, then trained on in micro-batches, num_iterations times.
"""
from __future__ import annotations

import math
import random
import time
import warnings
from dataclasses import dataclass, field

import torch

from flatline.trainer.algorithm import group_reward_std, masked_mean, token_entropy, token_logprobs
from flatline.trainer.batching import completion_logits, length_buckets, prompt_logits
from flatline.common.errors import DataError
from flatline.trainer.models import ModelSource, eos_token_ids, load_model, load_tokenizer, resolve_source
from flatline.trainer.plugins import Plugins, call_mask_fn, call_reward, load_plugins
from flatline.trainer.sampler import HFSampler, SampleBatch
from flatline.trainer.tasks import build_task
from flatline.trainer.tasks.base import Example, Task


@dataclass
class Rollout:
    """One generation batch: G completions for each of its prompts, scored, with advantages."""

    examples: list[Example]  # [P]
    samples: SampleBatch  # tensors [N, ...], N = P * G
    completion_mask: torch.Tensor  # [N, T] the loss mask (mask_fn's)
    completion_lengths: torch.Tensor  # [N] tokens up to and including EOS (the default mask's, whatever mask_fn says)
    completions: list[str]  # [N] decoded up to EOS
    rewards: torch.Tensor  # [N] float32, NaN where no component could be scored
    reward_components: dict[str, list]  # name -> [N] values (None: not scored)
    reward_errors: int
    advantages: torch.Tensor  # [N]
    old_logprobs: torch.Tensor | None = None  # [N, T], only when num_iterations > 1
    ref_logprobs: torch.Tensor | None = None  # [N, T], only when beta > 0
    # [N, L] prompt tokens a full-sequence mask_fn put in the loss (None: none, the norm); when set, the logprob
    # tensors above are [N, L+T], prompt positions first
    prompt_loss_mask: torch.Tensor | None = None

    @property
    def loss_mask(self) -> torch.Tensor:
        """What the loss trains on: [N, T], or [N, L+T] when prompt tokens are in it."""
        if self.prompt_loss_mask is None:
            return self.completion_mask
        return torch.cat([self.prompt_loss_mask, self.completion_mask], dim=1)


@dataclass
class StepRecord:
    """What one optimizer step saw and did; listeners (probes) read it and must not change it."""

    step: int
    rollout: Rollout
    prompts: list[str]  # [N] decoded prompts, one per completion
    trainer_logprobs: torch.Tensor  # [N, T] detached, from the forward that was backpropagated
    entropy: torch.Tensor  # [N, T]
    loss_parts: dict
    grad_norm: float
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    metrics: dict  # the step's metrics row so far
    pre_step_weights: dict[str, torch.Tensor] | None = None  # trainable name -> value before optimizer.step()
    iteration: int = 0  # which of the num_iterations passes over this rollout


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
    """Validate plug-ins, data and the model's location, tokenize every prompt; raises FlatlineError on bad input."""
    plugins = load_plugins(cfg)
    task = build_task(cfg)
    source = resolve_source(cfg.model)
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
    def __init__(self, prepared: Prepared, model, listeners=()):
        cfg = self.cfg = prepared.cfg
        self.task, self.plugins, self.tokenizer = prepared.task, prepared.plugins, prepared.tokenizer
        self.prompt_ids = prepared.prompt_ids
        self._prompt_texts: dict[str, str] = {}
        self.model = model
        self.listeners = list(listeners)
        self.eos_token_ids = eos_token_ids(self.tokenizer, model)
        self.sampler = HFSampler(model, self.tokenizer.pad_token_id, self.eos_token_ids)
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
        self._rollout: Rollout | None = None
        self._iteration = 0
        self.step_count = 0
        self.num_tokens = 0
        self.reward_errors_warned = False
        self._no_graph_warned = False

    @property
    def last_rollout(self) -> Rollout | None:
        """The generation batch the last step trained on."""
        return self._rollout

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

    # --- rollout ---
    def generate(self, examples: list[Example], num_generations: int, temperature: float) -> SampleBatch:
        cfg = self.cfg
        return self.sampler.sample([self.prompt_ids[e.id] for e in examples], num_generations,
                                   cfg.max_completion_length, temperature, cfg.top_p, cfg.top_k)

    def prompt_text(self, example: Example) -> str:
        """The prompt as the model sees it (chat template applied), decoded once per example."""
        if example.id not in self._prompt_texts:
            self._prompt_texts[example.id] = self.tokenizer.decode(self.prompt_ids[example.id])
        return self._prompt_texts[example.id]

    def decode(self, samples: SampleBatch) -> tuple[list[str], torch.Tensor]:
        """Completion texts and lengths, up to and including the first EOS (independent of any mask_fn)."""
        lengths = samples.completion_lengths  # [N]
        texts = self.tokenizer.batch_decode([row[:n] for row, n in zip(samples.completion_ids, lengths)],
                                            skip_special_tokens=True)
        return texts, lengths

    def score(self, examples: list[Example], completions: list[str], completion_ids: torch.Tensor,
              lengths: torch.Tensor, num_generations: int) -> tuple[dict[str, list], int, dict[str, float]]:
        """Reward components per completion, the count of errors, and the weights that combine them."""
        owners = [examples[i // num_generations] for i in range(len(completions))]
        ids = [row[:n].tolist() for row, n in zip(completion_ids, lengths)]
        if self.plugins.reward is not None:
            prompts = [self.prompt_text(e) for e in owners]
            columns = {key: [e.row.get(key) for e in owners] for key in (owners[0].row if owners else {})}
            try:
                components = call_reward(self.plugins.reward, prompts, completions, columns)
                errors = 0
            except Exception as exc:
                self._warn_reward(exc)
                components, errors = {self.plugins.reward.__name__: [None] * len(completions)}, len(completions)
            weights = {name: float(self.cfg.reward_weights.get(name, 1.0)) for name in components}
            return components, errors, weights
        components = {name: [] for name in self.task.components}
        errors = 0
        for completion, example, token_ids in zip(completions, owners, ids):
            try:
                values = self.task.score(completion, example, token_ids)
            except Exception as exc:
                self._warn_reward(exc)
                values, errors = {}, errors + 1
            for name in components:
                components[name].append(values.get(name))
        return components, errors, dict(self.task.weights)

    def _warn_reward(self, exc: Exception) -> None:
        if not self.reward_errors_warned:
            warnings.warn(f"the reward function raised {type(exc).__name__}: {exc}; such completions are unscored "
                          f"(counted in rewards/errors)")
            self.reward_errors_warned = True

    def rollout(self) -> Rollout:
        cfg = self.cfg
        G = cfg.num_generations
        examples = self.next_examples(cfg.prompts_per_micro_batch * cfg.gradient_accumulation_steps)
        samples = self.generate(examples, G, cfg.temperature)
        completions, lengths = self.decode(samples)
        components, errors, weights = self.score(examples, completions, samples.completion_ids, lengths, G)
        rewards = combine_rewards(components, weights)
        advantages = self.plugins.advantage_fn(rewards, G, scale_rewards=cfg.scale_rewards, eps=cfg.advantage_eps)
        loss_mask, prompt_loss_mask = call_mask_fn(self.plugins.mask_fn, samples.completion_ids, self.eos_token_ids,
                                                   samples.prompt_ids, samples.prompt_mask)
        rollout = Rollout(examples, samples, loss_mask, lengths, completions, rewards, components, errors, advantages,
                          prompt_loss_mask=prompt_loss_mask)
        if cfg.num_iterations > 1:
            rollout.old_logprobs = self.logprobs_no_grad(rollout, self.model)
        if cfg.beta > 0:
            rollout.ref_logprobs = self.reference_logprobs(rollout)
        return rollout

    # --- trainer-side logprobs ---
    def completion_logprobs(self, model, rollout: Rollout, rows: torch.Tensor, with_entropy: bool = False):
        """Per-token logprobs (and entropy) of completions `rows` under `model`: [n, T] each.

        Rows are run in length buckets, each prompt once per bucket (trainer.batching); the result is in the
        order of `rows`, zero past the longest row of its bucket, and differentiable when grad is on. When the
        mask puts prompt tokens in the loss, the logprobs are [n, L+T], the prompt's first.
        """
        samples, mask, G = rollout.samples, rollout.completion_mask, self.cfg.num_generations
        T = samples.completion_ids.size(1)
        mask_extent = (mask[rows] * torch.arange(1, T + 1)).amax(dim=1)  # a user's mask may reach past EOS
        lengths = torch.maximum(rollout.completion_lengths[rows], mask_extent)
        logps, entropy, order = [], [], []
        for bucket in length_buckets(lengths):
            index = rows[bucket]
            width = int(lengths[bucket].max())
            groups, prompt_of_row = torch.unique(index // G, return_inverse=True)
            logits = completion_logits(model, samples.prompt_ids[groups * G], samples.prompt_mask[groups * G],
                                       prompt_of_row, samples.completion_ids[index, :width])
            logps.append(pad_right(token_logprobs(logits, samples.completion_ids[index, :width], self.cfg.temperature), T))
            if with_entropy:
                entropy.append(pad_right(token_entropy(logits.detach(), self.cfg.temperature), T))
            order.append(bucket)
            del logits
        restore = torch.argsort(torch.cat(order))
        logps = torch.cat(logps)[restore]
        if rollout.prompt_loss_mask is not None:
            logps = torch.cat([self.prompt_logprobs(model, samples, rows), logps], dim=1)
        return logps, (torch.cat(entropy)[restore] if with_entropy else None)

    def prompt_logprobs(self, model, samples: SampleBatch, rows: torch.Tensor) -> torch.Tensor:
        """Logprobs of the prompt tokens of `rows` (each distinct prompt run once): [n, L], 0 in column 0."""
        G = self.cfg.num_generations
        groups, prompt_of_row = torch.unique(rows // G, return_inverse=True)
        prompt_ids, prompt_mask = samples.prompt_ids[groups * G], samples.prompt_mask[groups * G]  # [P, L]
        logits = prompt_logits(model, prompt_ids, prompt_mask)
        scored = token_logprobs(logits, prompt_ids[:, 1:], self.cfg.temperature)  # [P, L-1]
        return torch.nn.functional.pad(scored, (1, 0))[prompt_of_row]

    @torch.no_grad()
    def logprobs_no_grad(self, rollout: Rollout, model) -> torch.Tensor:
        return torch.cat([self.completion_logprobs(model, rollout, rows)[0]
                          for rows in self.micro_batches(len(rollout.completions))])

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
        started = time.perf_counter()
        if self._rollout is None or self._iteration >= cfg.num_iterations:
            self._rollout, self._iteration = self.rollout(), 0
            self.num_tokens += int(self._rollout.samples.prompt_mask.sum() + self._rollout.completion_lengths.sum())
        rollout = self._rollout
        generated = time.perf_counter()

        trainer_logprobs, entropy, parts = self.backward(rollout)
        gradient_metrics = self.notify("on_gradients", self.model, self.optimizer, self.step_count + 1)
        params = [p for _, p in self.trainable]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf))
        wants_weights = any(getattr(listener, "wants_pre_step_weights", False) for listener in self.listeners)
        pre_step = {name: p.detach().clone() for name, p in self.trainable} if wants_weights else None
        learning_rate = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.sampler.sync_weights(self.model)
        self.step_count += 1
        self._iteration += 1
        trained = time.perf_counter()

        row = {"step": self.step_count, "learning_rate": learning_rate, "grad_norm": grad_norm, **parts, **gradient_metrics}
        row.update(rollout_metrics(rollout, cfg.num_generations))
        row["entropy"] = float(masked_mean(entropy, rollout.completion_mask))
        row["num_tokens"] = self.num_tokens
        row["time/generate"] = generated - started
        row["time/train"] = trained - generated
        row["step_time"] = trained - started
        if self.listeners:
            record = StepRecord(self.step_count, rollout, self.decoded_prompts(rollout), trainer_logprobs, entropy,
                                parts, grad_norm, self.model, self.optimizer, dict(row), pre_step, self._iteration - 1)
            row.update(self.notify("__call__", record))
        return row

    def notify(self, hook: str, *args) -> dict:
        """Call `hook` on every listener that has it and merge the numbers they return; a listener that
        raises is dropped with one warning (it must never stop or change training)."""
        merged = {}
        for listener in list(self.listeners):
            method = getattr(listener, hook, None)
            if method is None:
                continue
            try:
                merged.update(method(*args) or {})
            except Exception as exc:
                warnings.warn(f"listener {getattr(listener, '__name__', type(listener).__name__)} raised "
                              f"{type(exc).__name__}: {exc}; it is disabled for the rest of the run")
                self.listeners.remove(listener)
        return merged

    def backward(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Loss and backward over the rollout's micro-batches; returns trainer logprobs, entropy [N, T], loss parts."""
        cfg = self.cfg
        self.model.train()
        mask = rollout.loss_mask
        completion_width = rollout.completion_mask.size(1)
        num_items = int(mask.sum())
        logps_parts, entropy_parts, loss_parts = [], [], []
        for rows in self.micro_batches(len(rollout.completions)):
            logps, entropy = self.completion_logprobs(self.model, rollout, rows, with_entropy=True)  # [n, T]
            old = logps.detach() if rollout.old_logprobs is None else rollout.old_logprobs[rows]
            ref = None if rollout.ref_logprobs is None else rollout.ref_logprobs[rows]
            loss, parts = self.plugins.loss_fn(
                logps, old, rollout.advantages[rows], mask[rows], loss_type=cfg.loss_type, epsilon_low=cfg.epsilon,
                epsilon_high=cfg.epsilon_upper, beta=cfg.beta, ref_logps=ref,
                max_completion_length=cfg.max_completion_length, num_items_in_batch=num_items,
                gradient_accumulation_steps=cfg.gradient_accumulation_steps)
            if loss.requires_grad:
                loss.backward()
            elif not self._no_graph_warned:  # e.g. a loss_fn on detached logprobs, or no trainable parameter
                warnings.warn("the loss does not depend on any trainable parameter (no autograd graph): the step "
                              "computes no gradient; flatline's gradients.no_flow verdict will say why")
                self._no_graph_warned = True
            logps_parts.append(logps[:, -completion_width:].detach())  # the completion's, for the probes
            entropy_parts.append(entropy)
            loss_parts.append({k: float(v) for k, v in parts.items()})
        return torch.cat(logps_parts), torch.cat(entropy_parts), merge_loss_parts(loss_parts, cfg.loss_type)

    def decoded_prompts(self, rollout: Rollout) -> list[str]:
        G = self.cfg.num_generations
        texts = [self.prompt_text(e) for e in rollout.examples]
        return [texts[i // G] for i in range(len(rollout.completions))]

    # --- evaluation ---
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Score one completion per held-out prompt (greedy unless eval_temperature > 0): eval/<metric>."""
        if not self.eval_examples:
            return {}
        cfg = self.cfg
        samples = self.generate(self.eval_examples, 1, cfg.eval_temperature)
        completions, lengths = self.decode(samples)
        components, errors, weights = self.score(self.eval_examples, completions, samples.completion_ids, lengths, 1)
        rewards = combine_rewards(components, weights)
        row = {"eval/reward": float(torch.nanmean(rewards)) if rewards.numel() else 0.0,
               "eval/mean_length": float(lengths.float().mean()),
               "eval/clipped_ratio": float(samples.truncated.float().mean())}
        for name, values in components.items():
            scored = [v for v in values if v is not None]
            row[f"eval/{name}"] = sum(scored) / len(scored) if scored else float("nan")
        return row

    def logged_samples(self, count: int) -> list[dict]:
        """The first completion of the first `count` groups of the last rollout, with what the loss actually saw."""
        G, rollout = self.cfg.num_generations, self._rollout
        out = []
        for group in range(min(count, len(rollout.examples))):
            i = group * G
            sequence = torch.cat([rollout.samples.prompt_ids[i], rollout.samples.completion_ids[i]])  # [L+T]
            mask = rollout.loss_mask[i]  # [T], or [L+T] with prompt tokens in the loss
            ids = sequence[-mask.size(0):][mask.bool()]
            out.append({
                "step": self.step_count, "example": rollout.examples[group].id,
                "prompt": self.prompt_text(rollout.examples[group]),
                "completion": rollout.completions[i],
                "masked_text": self.tokenizer.decode(ids),
                "reward": float(rollout.rewards[i]),
                "components": {k: v[i] for k, v in rollout.reward_components.items()},
                "advantage": float(rollout.advantages[i]),
                "truncated": bool(rollout.samples.truncated[i]),
            })
        return out


def pad_right(values: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad [n, t] to [n, width]."""
    return torch.nn.functional.pad(values, (0, width - values.size(1)))


def combine_rewards(components: dict[str, list], weights: dict[str, float]) -> torch.Tensor:
    """Weighted sum per completion; NaN when no component could be scored (its advantage is then 0). -> [N]"""
    names = list(components)
    count = len(next(iter(components.values()))) if components else 0
    totals = []
    for i in range(count):
        values = [components[name][i] for name in names]
        if all(v is None for v in values):
            totals.append(math.nan)
        else:
            totals.append(sum(weights.get(name, 0.0) * float(v or 0.0) for name, v in zip(names, values)))
    return torch.tensor(totals, dtype=torch.float32)


def merge_loss_parts(parts: list[dict], loss_type: str) -> dict:
    """Sum the backpropagated losses of the micro-batches; average the rates."""
    merged = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        additive = key in ("loss", "kl_loss")
        merged[key] = sum(values) if additive and loss_type == "dapo" else sum(values) / len(values)
    return merged


def rollout_metrics(rollout: Rollout, num_generations: int) -> dict:
    """TRL-compatible reward and completion metrics of one generation batch."""
    rewards = rollout.rewards
    lengths = rollout.completion_lengths.float()  # [N]
    truncated = rollout.samples.truncated
    terminated = lengths[~truncated]
    std = group_reward_std(rewards, num_generations)  # [P]
    row = {
        "reward": float(torch.nanmean(rewards)),
        "reward_std": float(std.mean()),
        "frac_reward_zero_std": float((std == 0).float().mean()),
        "rewards/errors": rollout.reward_errors,
        "rewards/unscored": int(torch.isnan(rewards).sum()),
        "completions/mean_length": float(lengths.mean()),
        "completions/min_length": float(lengths.min()),
        "completions/max_length": float(lengths.max()),
        "completions/clipped_ratio": float(truncated.float().mean()),
        "completions/mean_terminated_length": float(terminated.mean()) if terminated.numel() else 0.0,
    }
    for name, values in rollout.reward_components.items():
        scored = torch.tensor([v for v in values if v is not None], dtype=torch.float64)
        row[f"rewards/{name}/mean"] = float(scored.mean()) if scored.numel() else math.nan
        row[f"rewards/{name}/std"] = float(scored.std()) if scored.numel() > 1 else 0.0
    return row


def build_trainer(cfg, listeners=(), prepared: Prepared | None = None) -> Trainer:
    """Prepare (cheap checks), seed, load the model and return a Trainer."""
    prepared = prepared or prepare(cfg)
    seed_everything(cfg.seed)
    model = load_model(prepared.source, prepared.tokenizer, cfg)
    return Trainer(prepared, model, listeners)
