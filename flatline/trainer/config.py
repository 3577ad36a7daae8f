"""The one config schema: a dataclass with a docstring under every field, loaded from TOML plus `--set` overrides.

Names follow TRL's GRPOConfig where the concept is the same, so a user's sweep keys carry over.
Everything is validated before any model or data loads: an unknown key or a bad value raises ConfigError
naming the key, the reason and the nearest valid name.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from flatline.common.errors import ConfigError
from flatline.common.record import PROBE_LEVELS
from flatline.trainer.plugins import PLUG_POINTS

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")
SCALE_REWARDS = ("group", "batch", "none")
DTYPES = ("float32", "bfloat16")
SCHEDULERS = ("constant", "linear", "cosine")
REPORT_TO = ("wandb", "none")
SAMPLERS = ("hf",)
SECRET_KEY_PATTERN = re.compile(r"(key|token|secret|password)", re.IGNORECASE)


@dataclass
class Config:
    # --- run ---
    task: str = "arithmetic"
    """Task: bandit | arithmetic | gsm8k | musique (data, prompt and reward together)."""
    model: str = "smollm2-135m"
    """smollm2-135m (embedded GGUF, converted and cached on first use), tiny-random, a local HF directory, or a hub id."""
    dtype: str = "float32"
    """Parameter dtype: float32 | bfloat16."""
    seed: int = 0
    """Seeds python, numpy and torch; the same seed and config give the same run."""
    max_steps: int = 20
    """Optimizer steps to run."""
    output_dir: str = "runs"
    """Parent folder of run directories (the CLI's --out names the run directory itself)."""
    run_name: str = ""
    """Run directory and W&B name; empty: exp{major}.{minor}-{task}-{MMDD} when exp_major is set, else {task}-{MMDD-HHMMSS}."""
    exp_major: int = -1
    """Experiment number for the run name (-1: unset)."""
    exp_minor: int = 0
    """Sub-experiment number for the run name."""
    report_to: str = "wandb"
    """wandb (offline unless WANDB_API_KEY or WANDB_MODE say otherwise) | none."""
    wandb_project: str = "flatline"
    """W&B project."""
    progress_bar: bool = True
    """Show a progress bar on runs longer than a few steps."""
    probes: str = "cheap"
    """Instruments written into metrics.jsonl: none | cheap (reads the step's tensors) | full (may run extra forwards)."""
    log_book: str = ""
    """Experiment log book (markdown, newest entry first); empty: $FLATLINE_LOG, else reports/EXPERIMENT_LOG.md."""
    report_dir: str = "reports"
    """Where diagnosis reports go: <report_dir>/<run name>/diagnosis.md and diagnosis.json."""

    # --- data ---
    data: str = ""
    """Training data: a local JSONL path or a hub spec (hf:openai/gsm8k,main,train[:256]); empty for generated tasks."""
    eval_data: str = ""
    """Held-out data (same forms as data); empty: hold out eval_size rows of data, or generate them."""
    train_size: int = 256
    """Rows to generate for generated tasks, or the most rows kept from data (0: all)."""
    eval_size: int = 16
    """Held-out rows used by each evaluation."""
    reward_weights: dict = field(default_factory=dict)
    """Weights per reward component, e.g. {em = 0.4, f1 = 0.4, format = 0.2}; empty: the task's defaults."""
    bandit_arms: int = 4
    """bandit: the vocabulary is split into this many arms by token id; arm 0 pays 1 (chance = 1/arms)."""
    arithmetic_max_operand: int = 20
    """arithmetic: operands are drawn from 0..this."""

    # --- model and LoRA ---
    lora_r: int = 16
    """LoRA rank; 0 trains all parameters (full fine-tuning)."""
    lora_alpha: int = 32
    """LoRA scaling numerator (scale = lora_alpha / lora_r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    lora_target_modules: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module names that get adapters, or ["all-linear"]."""
    tiny_hidden_size: int = 64
    """tiny-random: hidden size of the randomly initialised Llama."""
    tiny_num_layers: int = 2
    """tiny-random: number of decoder layers."""

    # --- sampling ---
    sampler: str = "hf"
    """Generation backend: hf (transformers generate)."""
    num_generations: int = 8
    """Completions sampled per prompt (the GRPO group size)."""
    per_device_train_batch_size: int = 32
    """Completions per micro-batch (prompts per micro-batch = this / num_generations)."""
    max_prompt_length: int = 512
    """Prompts longer than this many tokens are refused with an error naming the example (never silently cut)."""
    max_completion_length: int = 48
    """New tokens per completion; a completion that reaches it without EOS is truncated."""
    temperature: float = 1.0
    """Sampling temperature; 0 is greedy (every completion of a group is then identical)."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    top_k: int = 0
    """Top-k sampling (0: off)."""

    # --- algorithm ---
    loss_type: str = "dapo"
    """grpo (mean per sequence) | dr_grpo (sum / (batch * max_completion_length)) | dapo (tokens of the whole batch) | bnpo (tokens of the micro-batch), as TRL."""
    scale_rewards: str = "group"
    """Divide advantages by the reward std of the group | batch | none (Dr. GRPO)."""
    advantage_eps: float = 1e-4
    """Added to the std before dividing (TRL uses 1e-4)."""
    beta: float = 0.0
    """KL coefficient (k3 estimator, reference = the model with the adapter disabled); 0 skips the reference."""
    epsilon: float = 0.2
    """Lower clip range of the importance ratio (1 - epsilon)."""
    epsilon_high: float = -1.0
    """Upper clip range (1 + epsilon_high); negative: same as epsilon. DAPO uses 0.28."""
    num_iterations: int = 1
    """Optimizer steps per generated batch (mu); above 1 the clipped ratio matters."""

    # --- optimisation ---
    learning_rate: float = 1e-5
    """AdamW peak learning rate."""
    lr_scheduler_type: str = "constant"
    """constant | linear | cosine decay after warmup."""
    warmup_ratio: float = 0.0
    """Fraction of max_steps spent warming up linearly from 0."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.999
    """AdamW beta2."""
    adam_epsilon: float = 1e-8
    """AdamW epsilon."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step."""

    # --- evaluation and logging ---
    eval_every: int = 0
    """Evaluate on the held-out split every this many steps, and after the last (0: never)."""
    eval_temperature: float = 0.0
    """Temperature of evaluation sampling (0: greedy)."""
    log_completions: int = 2
    """Completions per step written to samples.jsonl."""

    # --- plug points (module:function); each is called as flatline.trainer.plugins.PLUG_POINTS[key] says ---
    reward: str = ""
    """Your reward instead of the task's: TRL's reward-function form, a list of floats (None: unscorable) or a dict of components."""
    advantage_fn: str = ""
    """Your advantages instead of group_advantages: rewards [N] -> advantages [N]."""
    mask_fn: str = ""
    """Your loss mask instead of completion_mask: [N, T] over the completion, or [N, L+T] over prompt and completion."""
    loss_fn: str = ""
    """Your loss instead of policy_loss: per-token logprobs, old logprobs, advantages and mask -> (loss, parts)."""

    @property
    def epsilon_upper(self) -> float:
        return self.epsilon if self.epsilon_high < 0 else self.epsilon_high

    @property
    def prompts_per_micro_batch(self) -> int:
        return self.per_device_train_batch_size // self.num_generations


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Config))
CHOICES = {
    "loss_type": LOSS_TYPES,
    "scale_rewards": SCALE_REWARDS,
    "dtype": DTYPES,
    "lr_scheduler_type": SCHEDULERS,
    "report_to": REPORT_TO,
    "sampler": SAMPLERS,
    "probes": PROBE_LEVELS,
}
POSITIVE = ("learning_rate", "max_steps", "num_generations", "per_device_train_batch_size", "max_completion_length",
            "max_prompt_length", "gradient_accumulation_steps", "num_iterations", "lora_alpha", "bandit_arms",
            "tiny_hidden_size", "tiny_num_layers", "adam_epsilon")
NON_NEGATIVE = ("beta", "epsilon", "temperature", "eval_temperature", "max_grad_norm", "weight_decay", "warmup_ratio",
                "lora_r", "lora_dropout", "eval_every", "eval_size", "train_size", "log_completions", "top_k",
                "advantage_eps", "arithmetic_max_operand")


def nearest(name: str, candidates) -> str:
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""


def _coerce(key: str, value, annotation: str):
    """Check (and gently convert) one value against the field's annotation; raise ConfigError on mismatch."""
    kind = {"int": int, "float": float, "str": str, "bool": bool, "dict": dict, "list": list}[annotation]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is list and isinstance(value, str):
        return [value]
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise ConfigError(f"config key '{key}': expected {annotation}, got {type(value).__name__} {value!r}")
    return value


def _check_values(cfg: Config) -> None:
    for key, choices in CHOICES.items():
        value = getattr(cfg, key)
        if value not in choices:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {', '.join(choices)}{nearest(str(value), choices)}")
    for key in POSITIVE:
        if not getattr(cfg, key) > 0:
            raise ConfigError(f"config key '{key}': must be > 0, got {getattr(cfg, key)!r}")
    for key in NON_NEGATIVE:
        if getattr(cfg, key) < 0:
            raise ConfigError(f"config key '{key}': must be >= 0, got {getattr(cfg, key)!r}")
    if cfg.num_generations < 2:
        raise ConfigError(f"config key 'num_generations': GRPO needs at least 2 completions per group, got {cfg.num_generations}")
    if cfg.per_device_train_batch_size % cfg.num_generations:
        raise ConfigError(
            f"config key 'per_device_train_batch_size': {cfg.per_device_train_batch_size} is not a multiple of "
            f"num_generations={cfg.num_generations}; set it to {cfg.num_generations * max(1, cfg.prompts_per_micro_batch)}")
    if not 0 < cfg.top_p <= 1:
        raise ConfigError(f"config key 'top_p': must be in (0, 1], got {cfg.top_p}")
    if cfg.warmup_ratio > 1:
        raise ConfigError(f"config key 'warmup_ratio': must be in [0, 1], got {cfg.warmup_ratio}")
    if cfg.lora_dropout >= 1:
        raise ConfigError(f"config key 'lora_dropout': must be in [0, 1), got {cfg.lora_dropout}")
    if cfg.lora_r > 0 and not cfg.lora_target_modules:
        raise ConfigError("config key 'lora_target_modules': empty; name modules such as [\"q_proj\", \"v_proj\"] or use [\"all-linear\"]")
    for key, weight in cfg.reward_weights.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ConfigError(f"config key 'reward_weights.{key}': expected a number, got {weight!r}")
    for key in PLUG_POINTS:
        value = getattr(cfg, key)
        if value and not re.fullmatch(r"[\w.]+:\w+", value):
            raise ConfigError(f"config key '{key}': {value!r} is not 'module:function' (e.g. 'my_rewards:score')")


def parse_override(text: str) -> tuple[str, object]:
    """`key=value` with value parsed as a TOML value when it parses, else as a bare string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, raw = (part.strip() for part in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def build_config(values: dict) -> Config:
    """A validated Config from a flat dict of key -> value (TOML tables only for reward_weights)."""
    hints = typing.get_type_hints(Config)
    kwargs = {}
    for key, value in values.items():
        if key not in FIELD_NAMES:
            raise ConfigError(f"unknown config key '{key}'{nearest(key, FIELD_NAMES)}")
        annotation = getattr(hints[key], "__name__", str(hints[key]))
        kwargs[key] = _coerce(key, value, annotation)
    cfg = Config(**kwargs)
    _check_values(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a TOML config (or start from defaults when path is None) and apply `key=value` overrides."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass a TOML file such as configs/default.toml")
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: invalid TOML ({exc})") from None
    for override in overrides:
        key, value = parse_override(override)
        if key.startswith("reward_weights."):
            values.setdefault("reward_weights", {})[key.split(".", 1)[1]] = value
        else:
            values[key] = value
    return build_config(values)


def to_dict(cfg: Config, redact: bool = True) -> dict:
    """The resolved config as a dict; values of secret-looking keys are replaced when redact is set."""
    values = dataclasses.asdict(cfg)
    if redact:
        for key, value in values.items():
            if SECRET_KEY_PATTERN.search(key) and value:
                values[key] = "<redacted>"
    return values


def to_toml(cfg: Config) -> str:
    """Resolved config as TOML text (strings quoted, tables inline), readable back by load_config."""
    lines = []
    for key, value in to_dict(cfg).items():
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")
