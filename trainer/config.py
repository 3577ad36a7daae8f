"""The one config schema: a dataclass with a docstring under every field, loaded from TOML plus `--set` overrides.

Names follow TRL's GRPOConfig where the concept is the same, so a user's sweep keys carry over.
Everything is validated before any model or data loads: an unknown key or a bad value raises ConfigError
naming the key, the reason and the nearest valid name. Each numeric field states its accepted range and the reason
for it where it is declared (`ranged(default, low, high, why)`); RANGES collects them for the validator. What needs
the model (context length, vocabulary) is checked in flatline.trainer.limits before any weights load.

    cfg = load_config("configs/bandit.toml", ["temperature=0.7"])
    text = checked_toml(cfg)        # config.toml's text, already read back and compared
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import reprlib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w
import tomllib

from flatline.common.errors import ConfigError
from flatline.common.record import PROBE_LEVELS
from flatline.trainer.plugins import PLUG_POINTS

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")
SCALE_REWARDS = ("group", "batch", "none")
DTYPES = ("float32", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")
STATIC_DECODING = ("auto", "on", "off")
SCHEDULERS = ("constant", "linear", "cosine")
REPORT_TO = ("wandb", "none")
SAMPLERS = ("hf", "vllm")
VLLM_SYNC_MODES = ("lora", "merged")
VLLM_LOGPROBS = ("processed", "raw")
VLLM_DTYPES = ("auto", "float32", "bfloat16")
INFRA_FAILURE = ("exclude", "zero")
EPISODE_PROMPTS = ("append", "render")
TOOLS_QUESTIONS = ("value", "sum")
SECRET_KEY_PATTERN = re.compile(r"(key|token|secret|password)", re.IGNORECASE)


# The longest context of current open models (128k tokens): no prompt or completion budget can usefully exceed it,
# and a completion budget far beyond it only hangs generation.
MAX_SEQUENCE_TOKENS = 131_072
CONTEXT_REASON = "tokens; at most 128k, and the longest prompt plus the completion must fit the model's context"
TEMPERATURE_REASON = ("0: greedy; below 0.01 sampling is greedy in all but name and logits / temperature overflow; "
                      "above ~2 sampled text is noise")
# Characters no config string may hold: control characters (a newline in a name or path is a quoting slip) and lone
# surrogates (not encodable as UTF-8, so config.toml could not be written).
BAD_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# A run name becomes one directory inside output_dir: at most this many UTF-8 bytes leaves room for a "-NN"
# collision suffix under the 255-byte limit of common filesystems.
MAX_NAME_BYTES = 200


@dataclass(frozen=True)
class Range:
    """The values a numeric config field accepts, and why; the validator and its error message read it."""

    low: float
    high: float
    why: str
    low_open: bool = False  # low itself is refused
    high_open: bool = False  # high itself is refused
    multiple_of: int = 1
    zero_ok: bool = False  # 0 is accepted too (a switch such as greedy sampling), below low

    def admits(self, value) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.zero_ok and value == 0:
            return True
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below and (self.multiple_of == 1 or value % self.multiple_of == 0)

    def text(self, integer: bool) -> str:
        """e.g. `a finite number in (0, 1] (a probability mass)`."""
        def show(v) -> str:
            return str(int(v)) if integer or (float(v).is_integer() and abs(v) < 1e7) else f"{v:g}"

        interval = f"{'(' if self.low_open else '['}{show(self.low)}, {show(self.high)}{')' if self.high_open else ']'}"
        kind = "an integer" if integer else "a finite number"
        multiple = f", a multiple of {self.multiple_of}" if self.multiple_of > 1 else ""
        return f"{'0 or ' if self.zero_ok else ''}{kind} in {interval}{multiple} ({self.why})"


def ranged(default, low, high, why: str, **bounds):
    """A numeric field with its accepted range and the reason for it, stated where the field is declared."""
    return field(default=default, metadata={"range": Range(low, high, why, **bounds)})


def ranged_table(low, high, why: str):
    """A table field (name -> number), empty by default, whose every value has this range."""
    return field(default_factory=dict, metadata={"range": Range(low, high, why)})


@dataclass
class Config:
    # --- run ---
    task: str = "arithmetic"
    """Task: bandit | arithmetic | gsm8k | musique (data, prompt and reward together)."""
    model: str = "smollm2-135m"
    """smollm2-135m (embedded GGUF, converted and cached on first use), tiny-random, a local HF directory, or a hub id."""
    dtype: str = "float32"
    """Base weights' dtype: float32 | bfloat16. LoRA adapters stay float32 either way (peft keeps them so); with
    lora_r = 0 every weight is in this dtype, and bf16 then rounds small updates away (update.precision_swallowed)."""
    device: str = "auto"
    """Where the model trains and samples: auto (the GPU when torch sees one, else the CPU) | cpu | cuda."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass instead of storing them (less memory, about
    a third more compute); the loss then runs prompt and completion as one sequence per row."""
    seed: int = ranged(0, 0, 2**32 - 1, "numpy's seeds run 0 .. 2**32 - 1")
    """Seeds python, numpy and torch; the same seed and config give the same run."""
    max_steps: int = ranged(20, 1, 1_000_000, "optimizer steps")
    """Optimizer steps to run."""
    output_dir: str = "runs"
    """Parent folder of run directories (the CLI's --out names the run directory itself)."""
    run_name: str = ""
    """Run directory and W&B name; empty: exp{major}.{minor}-{task}-{MMDD} when exp_major is set, else {task}-{MMDD-HHMMSS}."""
    exp_major: int = ranged(-1, -1, 1_000_000, "-1: unset")
    """Experiment number for the run name (-1: unset)."""
    exp_minor: int = ranged(0, 0, 1_000_000, "a sub-experiment number")
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
    train_size: int = ranged(256, 0, 100_000, "0: all; every prompt is tokenized before training starts")
    """Rows to generate for generated tasks, or the most rows kept from data (0: all)."""
    eval_size: int = ranged(16, 0, 100_000, "every held-out prompt is tokenized before training starts")
    """Held-out rows used by each evaluation."""
    reward_weights: dict = ranged_table(0.0, 1000.0, "only the ratios of the weights matter")
    """Weights per reward component, e.g. {em = 0.4, f1 = 0.4, format = 0.2}; empty: the task's defaults."""
    bandit_arms: int = ranged(4, 2, 2**20, "at most the vocabulary, checked with the tokenizer")
    """bandit: the vocabulary is split into this many arms by token id; arm 0 pays 1 (chance = 1/arms)."""
    arithmetic_max_operand: int = ranged(20, 1, 500, "all (n + 1)**2 sums and differences are generated: 377k at 500")
    """arithmetic: operands are drawn from 0..this."""

    # --- model and LoRA ---
    lora_r: int = ranged(16, 0, 1024, "0: full fine-tuning; above 1024 a LoRA is no longer low-rank")
    """LoRA rank; 0 trains all parameters (full fine-tuning)."""
    lora_alpha: int = ranged(32, 1, 65_536, "the numerator of the LoRA scale alpha / r")
    """LoRA scaling numerator (scale = lora_alpha / lora_r)."""
    lora_dropout: float = ranged(0.0, 0.0, 1.0, "a probability; 1 would drop every input", high_open=True)
    """Dropout on the LoRA input."""
    lora_target_modules: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module names that get adapters, or ["all-linear"]."""
    tiny_hidden_size: int = ranged(64, 8, 4096, "4 attention heads of an even size, for rotary embeddings", multiple_of=8)
    """tiny-random: hidden size of the randomly initialised Llama."""
    tiny_num_layers: int = ranged(2, 1, 64, "decoder layers of the test model")
    """tiny-random: number of decoder layers."""

    # --- sampling ---
    sampler: str = "hf"
    """Generation backend: hf (the policy itself, in-process) | vllm (in-process, colocated; needs the [vllm] extra)."""
    static_decoding: str = "auto"
    """hf sampler: decode with a preallocated key/value cache, one step replayed as a CUDA graph (on) or with
    transformers' generate (off); auto: on for a GPU, off on the CPU (where graphs do not exist)."""
    vllm_sync_mode: str = "lora"
    """vllm: how trained weights reach the engine: lora (save the adapter, load it as a new LoRARequest) | merged (W + the LoRA delta, or all weights, reloaded into the engine; the trainer's weights are never modified)."""
    sync_every: int = ranged(1, 1, 1_000_000, "optimizer steps between weight syncs; above 1 the sampler lags")
    """vllm: push the trainer's weights to the engine every this many optimizer steps (1: always on-policy)."""
    vllm_logprobs: str = "processed"
    """vllm: processed (after temperature, what the trainer scores) | raw (logprobs before temperature: a planted sampling-semantics fault)."""
    vllm_dtype: str = "auto"
    """vllm: the engine's weight dtype: auto (the trainer's dtype) | float32 | bfloat16."""
    vllm_max_model_len: int = ranged(0, 0, MAX_SEQUENCE_TOKENS, "0: the longest prompt plus max_completion_length")
    """vllm: the engine's context (max_model_len); must hold the longest prompt plus max_completion_length."""
    vllm_kv_cache_gib: float = ranged(1.0, 0.0625, 1024.0, "GiB of KV cache; it must hold one full-length sequence")
    """vllm: memory for the engine's KV cache (CPU: VLLM_CPU_KVCACHE_SPACE; GPU: kv_cache_memory_bytes)."""
    num_generations: int = ranged(8, 2, 1024, "GRPO compares at least 2 completions of a prompt")
    """Completions sampled per prompt (the GRPO group size)."""
    per_device_train_batch_size: int = ranged(32, 2, 65_536, "whole groups of num_generations completions")
    """Completions per micro-batch (prompts per micro-batch = this / num_generations)."""
    max_prompt_length: int = ranged(512, 1, MAX_SEQUENCE_TOKENS, CONTEXT_REASON)
    """Prompts longer than this many tokens are refused with an error naming the example (never silently cut)."""
    max_completion_length: int = ranged(48, 1, MAX_SEQUENCE_TOKENS, CONTEXT_REASON)
    """New tokens per completion; a completion that reaches it without EOS is truncated."""
    temperature: float = ranged(1.0, 0.01, 10.0, TEMPERATURE_REASON, zero_ok=True)
    """Sampling temperature; 0 is greedy (every completion of a group is then identical)."""
    top_p: float = ranged(1.0, 0.0, 1.0, "a probability mass", low_open=True)
    """Nucleus sampling mass."""
    top_k: int = ranged(0, 0, 1_000_000, "0: off")
    """Top-k sampling (0: off)."""

    # --- algorithm ---
    loss_type: str = "dapo"
    """grpo (mean per sequence) | dr_grpo (sum / (batch * max_completion_length)) | dapo (tokens of the whole batch) | bnpo (tokens of the micro-batch), as TRL."""
    scale_rewards: str = "group"
    """Divide advantages by the reward std of the group | batch | none (Dr. GRPO)."""
    advantage_eps: float = ranged(1e-4, 0.0, 1.0, "TRL uses 1e-4; above 1 it flattens every advantage")
    """Added to the std before dividing (TRL uses 1e-4)."""
    beta: float = ranged(0.0, 0.0, 100.0, "KL coefficient; at 50 the KL term already swamps the policy gradient")
    """KL coefficient (k3 estimator, reference = the model with the adapter disabled); 0 skips the reference."""
    epsilon: float = ranged(0.2, 0.0, 1.0, "the ratio's lower clip 1 - epsilon must stay >= 0")
    """Lower clip range of the importance ratio (1 - epsilon)."""
    epsilon_high: float = ranged(-1.0, -1.0, 10.0, "negative: same as epsilon; DAPO uses 0.28")
    """Upper clip range (1 + epsilon_high); negative: same as epsilon. DAPO uses 0.28."""
    num_iterations: int = ranged(1, 1, 100, "optimizer steps per generated batch")
    """Optimizer steps per generated batch (mu); above 1 the clipped ratio matters."""

    # --- optimisation ---
    learning_rate: float = ranged(1e-5, 0.0, 1.0, "AdamW moves a weight by about this per step", low_open=True)
    """AdamW peak learning rate."""
    lr_scheduler_type: str = "constant"
    """constant | linear | cosine decay after warmup."""
    warmup_ratio: float = ranged(0.0, 0.0, 1.0, "a fraction of max_steps")
    """Fraction of max_steps spent warming up linearly from 0."""
    weight_decay: float = ranged(0.0, 0.0, 1.0, "weights shrink by learning_rate * this per step; 0 to 0.1 is usual")
    """AdamW weight decay."""
    adam_beta1: float = ranged(0.9, 0.0, 1.0, "a moving-average factor; torch refuses 1", high_open=True)
    """AdamW beta1."""
    adam_beta2: float = ranged(0.999, 0.0, 1.0, "a moving-average factor; torch refuses 1", high_open=True)
    """AdamW beta2."""
    adam_epsilon: float = ranged(1e-8, 0.0, 1.0, "above 1 Adam turns into plain SGD", low_open=True)
    """AdamW epsilon."""
    max_grad_norm: float = ranged(1.0, 0.0, 1e6, "0: no clipping; NaN or inf would silently switch clipping off")
    """Clip the global gradient norm to this (0: no clipping)."""
    gradient_accumulation_steps: int = ranged(1, 1, 1024, "micro-batches per optimizer step")
    """Micro-batches per optimizer step."""

    # --- evaluation and logging ---
    eval_every: int = ranged(0, 0, 1_000_000, "0: never")
    """Evaluate on the held-out split every this many steps, and after the last (0: never)."""
    eval_temperature: float = ranged(0.0, 0.01, 10.0, TEMPERATURE_REASON, zero_ok=True)
    """Temperature of evaluation sampling (0: greedy)."""
    log_completions: int = ranged(2, 0, 1024, "completions written per step")
    """Completions per step written to samples.jsonl."""

    # --- multi-turn episodes (environment tasks: tools) ---
    max_turns: int = ranged(4, 1, 64, "model turns per episode; each is one sampling pass")
    """Model turns per episode; an episode still calling tools after this many ends as max_turns."""
    max_episode_length: int = ranged(1024, 16, MAX_SEQUENCE_TOKENS, CONTEXT_REASON)
    """Context budget of an episode in tokens (prompt, model turns and tool outputs); each turn may generate
    min(max_completion_length, what is left); an episode that runs out ends as context_full."""
    env_step_budget: int = ranged(0, 0, 1_000_000, "0: unlimited")
    """Tool calls an environment budget allows (0: unlimited); see env_budget_shared."""
    env_budget_shared: bool = False
    """One env_step_budget shared by the num_generations rollouts of a prompt (they compete for it), instead of one each."""
    tool_call_reward_cap: float = ranged(1.0, 0.0, 1000.0, "0: uncapped")
    """The per-call reward term (+1 per call that ran, -1 per failed call) is clipped to [-cap, cap]; 0: uncapped."""
    tools_store_size: int = ranged(4, 1, 16, "keys per generated store")
    """tools: keys in each example's key-value store."""
    tools_question: str = "value"
    """tools: value (look one key up, reply with its value) | sum (look two keys up, reply with the sum: two hops)."""
    infra_failure: str = "exclude"
    """A grader or environment failure (grader_error, tool_error, timeout): exclude (no reward, advantage 0) | zero
    (scored 0, as many loops do; flatline flags it: episodes.infra_scored_as_reward)."""
    grader_timeout_s: float = ranged(10.0, 0.001, 3600.0, "seconds one episode's grading may take")
    """A grader that takes longer than this on an episode is a grader_error for that episode."""
    episode_timeout_s: float = ranged(0.0, 0.0, 86_400.0, "0: none")
    """Wall-clock limit of one batch of episodes (0: none); episodes still running then end as timeout."""
    episode_prompts: str = "append"
    """Each turn's prompt: append (the sampled tokens plus the tool's, token in, token out) | render (the chat
    template re-rendered over the messages so far, as many agent loops do; safe only with a prefix-preserving template)."""

    # --- plug points (module:function); each is called as flatline.trainer.plugins.PLUG_POINTS[key] says ---
    reward: str = ""
    """Your reward instead of the task's: TRL's reward-function form, a list of floats (None: unscorable) or a dict of components."""
    advantage_fn: str = ""
    """Your advantages instead of group_advantages: rewards [N] -> advantages [N]."""
    mask_fn: str = ""
    """Your loss mask instead of completion_mask: [N, T] over the completion, or [N, L+T] over prompt and completion."""
    loss_fn: str = ""
    """Your loss instead of policy_loss: per-token logprobs, old logprobs, advantages and mask -> (loss, parts)."""
    plugin_timeout_s: float = ranged(300.0, 0.001, 86_400.0, "0: no limit, e.g. under a debugger", zero_ok=True)
    """Seconds one call of a plug-in above may take; longer is a PluginTimeout naming the plug-in and the call:
    preflight refuses, a run fails. A reward scores a whole generation batch in one call: raise it for slow graders.
    0: no limit, and the plug-in is called in the trainer's own thread."""

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
    "device": DEVICES,
    "static_decoding": STATIC_DECODING,
    "lr_scheduler_type": SCHEDULERS,
    "report_to": REPORT_TO,
    "sampler": SAMPLERS,
    "vllm_sync_mode": VLLM_SYNC_MODES,
    "vllm_logprobs": VLLM_LOGPROBS,
    "vllm_dtype": VLLM_DTYPES,
    "probes": PROBE_LEVELS,
    "infra_failure": INFRA_FAILURE,
    "episode_prompts": EPISODE_PROMPTS,
    "tools_question": TOOLS_QUESTIONS,
}
RANGES = {f.name: f.metadata["range"] for f in dataclasses.fields(Config) if "range" in f.metadata}
INTEGER_FIELDS = frozenset(f.name for f in dataclasses.fields(Config) if f.type in ("int", int))
# Fields whose values become one path component (a directory inside output_dir).
NAME_FIELDS = ("run_name",)


def nearest(name: str, candidates) -> str:
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""


def shown(value) -> str:
    """A value as an error message quotes it: its repr, shortened, on one line."""
    short = reprlib.Repr()
    short.maxstring, short.maxother, short.maxlong = 60, 60, 40
    return short.repr(value)


def _coerce(key: str, value, annotation: str):
    """Check (and gently convert) one value against the field's annotation; raise ConfigError on mismatch."""
    kind = {"int": int, "float": float, "str": str, "bool": bool, "dict": dict, "list": list}[annotation]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"config key '{key}': must be {RANGES[key].text(False)}, got {shown(value)}") from None
    if kind is list and isinstance(value, str):
        return [value]
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise ConfigError(f"config key '{key}': expected {annotation}, got {type(value).__name__} {shown(value)}")
    return value


def check_number(key: str, value, accepted: Range, integer: bool) -> None:
    """ConfigError naming the key, the range and its reason unless `value` is a number inside `accepted`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not accepted.admits(value):
        raise ConfigError(f"config key '{key}': must be {accepted.text(integer)}, got {shown(value)}")


def check_text(key: str, value: str) -> None:
    """Config strings name files, modules, models and W&B projects: no control characters, nothing unencodable."""
    bad = BAD_TEXT.search(value)
    if bad:
        raise ConfigError(f"config key '{key}': holds the unprintable character {bad.group()!r} at position "
                          f"{bad.start()} (in {shown(value)}); a name or path is one line of printable text")


def check_name(key: str, value: str) -> None:
    """A run name is one directory inside output_dir: no path separators, not '.' or '..', not too long."""
    if "/" in value or "\\" in value or value in (".", ".."):
        raise ConfigError(f"config key '{key}': {shown(value)} is not a plain name (no '/' or '\\', not '.' or '..'): "
                          f"it names one directory inside output_dir; choose the folder with output_dir or --out")
    if len(value.encode("utf-8")) > MAX_NAME_BYTES:
        raise ConfigError(f"config key '{key}': {len(value.encode('utf-8'))} bytes long, more than {MAX_NAME_BYTES} "
                          f"(a directory name must fit the filesystem's 255-byte limit)")


def _check_values(cfg: Config) -> None:
    for key, choices in CHOICES.items():
        value = getattr(cfg, key)
        if value not in choices:
            raise ConfigError(f"config key '{key}': {shown(value)} is not one of {', '.join(choices)}{nearest(str(value), choices)}")
    for key, accepted in RANGES.items():
        if key == "reward_weights":
            continue
        check_number(key, getattr(cfg, key), accepted, key in INTEGER_FIELDS)
    for key in FIELD_NAMES:
        if isinstance(getattr(cfg, key), str):
            check_text(key, getattr(cfg, key))
    for module in cfg.lora_target_modules:
        if not isinstance(module, str) or not module:
            raise ConfigError(f"config key 'lora_target_modules': each entry must be a module name, got {shown(module)}")
        check_text("lora_target_modules", module)
    for key in NAME_FIELDS:
        check_name(key, getattr(cfg, key))
    for key, weight in cfg.reward_weights.items():
        check_text("reward_weights", key)
        check_number(f"reward_weights.{key}", weight, RANGES["reward_weights"], integer=False)
    if cfg.per_device_train_batch_size % cfg.num_generations:
        raise ConfigError(
            f"config key 'per_device_train_batch_size': {cfg.per_device_train_batch_size} is not a multiple of "
            f"num_generations={cfg.num_generations}; set it to {cfg.num_generations * max(1, cfg.prompts_per_micro_batch)}")
    if cfg.lora_r > 0 and not cfg.lora_target_modules:
        raise ConfigError("config key 'lora_target_modules': empty; name modules such as [\"q_proj\", \"v_proj\"] or use [\"all-linear\"]")
    if cfg.sampler == "vllm" and cfg.vllm_sync_mode == "lora" and cfg.lora_r == 0:
        raise ConfigError("config key 'vllm_sync_mode': 'lora' needs a LoRA adapter (lora_r > 0); "
                          "set vllm_sync_mode = \"merged\" for full fine-tuning")
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
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                              f"{exc.start}); a config is a TOML text file such as configs/default.toml") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: invalid TOML ({exc})") from None
        except RecursionError:
            raise ConfigError(f"config file {path}: nested too deeply to be a config; a config is a flat TOML file "
                              f"such as configs/default.toml") from None
        except OSError as exc:
            raise ConfigError(f"config file {path}: cannot be read ({exc.strerror})") from None
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
    """The resolved config (secrets redacted) as TOML, written by tomli-w so any accepted string round-trips."""
    return tomli_w.dumps(to_dict(cfg))


def checked_toml(cfg: Config) -> str:
    """to_toml(cfg), read back with tomllib and compared before it is used: config.toml must say exactly what ran,
    or the run could not be judged later. A difference is a ConfigError naming the first key that changed."""
    text = to_toml(cfg)
    expected = to_dict(cfg)
    try:
        read_back = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config.toml would not read back ({exc}); please report this config") from None
    changed = [key for key in expected if read_back.get(key) != expected[key]]
    if changed:
        raise ConfigError(f"config key '{changed[0]}': {shown(expected[changed[0]])} reads back from config.toml as "
                          f"{shown(read_back.get(changed[0]))}; please report this config")
    return text
