"""`DirectDecoder`: one decode step of a Llama / Qwen2 decoder written out, in as few kernels as the arithmetic allows.

At decode sizes (64 rows x 1 token) a step's time is the number of kernels it launches, each a few microseconds even
when replayed from a CUDA graph, more than the bytes it reads. transformers' layers, even with samplers/fused.py's
pieces, launch about 18 kernels per layer: the norm, a separate residual add, the rotary embedding of q and of k, two
index copies into the cache, the attention with its key/value heads repeated, the products. Here a layer is:

  add + RMSNorm (one kernel: the residual sum and the normalised value, both kept)       1
  q, k, v (one product over the stacked folded weights, samplers/folded.py)             1
  rotary of q and k, k and v written into the static cache at the step's position       1  (rope_store: Triton)
  attention: the G query heads of one key/value head read as G queries of that head     1  (no repeat of K and V)
  o_proj, add + RMSNorm, gate/up (one stacked product), SiLU x up, down_proj             5

The projections are called as the model's own modules (folded, peft or plain Linear: whatever they compute); only
the glue between them is replaced, by functions with the modules' own arithmetic, rounding where eager rounds (the
bf16 residual sum before the norm, each product of the rotary), so the logprobs are the model's up to the
summation order inside the attention and product kernels. `supports(model)` says where this holds (Llama and Qwen2
causal LMs with sdpa attention, full attention in every layer, a static rotary table, SiLU MLPs); elsewhere the
sampler runs the model's forward.

StaticSampler uses it where it captures decode steps as CUDA graphs; with compile_kernels=False (the CPU tests) the
same functions run uncompiled and the rotary/cache write runs as plain torch.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from flatline.trainer.samplers.fused import compiled, is_rms_norm, is_silu_mlp, rms_norm, silu_mul

MODEL_TYPES = ("llama", "qwen2")


def add_rms_norm(hidden: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float):
    """The decoder layer's `residual + hidden` followed by the next RMSNorm: (normalised sum, sum)."""
    summed = residual + hidden
    return rms_norm(summed, weight, eps), summed


def rope_tables(inv_freq: torch.Tensor, position_ids: torch.Tensor, scaling: float, dtype: torch.dtype):
    """The rotary embedding's cos and sin at `position_ids` [B, 1] -> [B, 1, D] each, as the model's rotary_emb."""
    freqs = position_ids[..., None].float() * inv_freq.float()
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * scaling).to(dtype), (emb.sin() * scaling).to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.size(-1) // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_store_reference(q, k, v, cos, sin, keys, values, position, heads: int, kv_heads: int) -> torch.Tensor:
    """q, k, v [B, 1, heads*D] (views allowed) -> q rotated [B, heads, 1, D]; k rotated and v written into
    keys / values [B, kv_heads, T, D] at `position` [1]. transformers' apply_rotary_pos_emb and cache write."""
    batch, dim = q.size(0), keys.size(-1)
    q = q.reshape(batch, 1, heads, dim).transpose(1, 2)
    k = k.reshape(batch, 1, kv_heads, dim).transpose(1, 2)
    v = v.reshape(batch, 1, kv_heads, dim).transpose(1, 2)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    keys.index_copy_(2, position, k_embed)
    values.index_copy_(2, position, v)
    return q_embed.contiguous()


_kernel = None
# The rotary kernel's launch options: no floating-point contraction (see the kernel), one warp (64 to 128 values).
KERNEL_OPTIONS = dict(num_warps=1, enable_fp_fusion=False)


def _triton_kernel():
    """The fused rotary + cache write, built on first use (Triton is imported only on a GPU)."""
    global _kernel
    if _kernel is not None:
        return _kernel
    import triton
    import triton.language as tl

    @triton.jit
    def rope_store_kernel(q_ptr, k_ptr, v_ptr, q_row, k_row, v_row, cos_ptr, sin_ptr, cs_row,
                          out_ptr, keys_ptr, values_ptr, pos_ptr, kv_b, kv_h, kv_t,
                          HEADS: tl.constexpr, KV_HEADS: tl.constexpr, DIM: tl.constexpr):
        # one program per (row, head) of q, k and v: heads of q first, then of k, then of v
        row = tl.program_id(0)
        head = tl.program_id(1)
        HALF: tl.constexpr = DIM // 2
        lanes = tl.arange(0, HALF)
        pos = tl.load(pos_ptr)
        if head < HEADS + KV_HEADS:
            if head < HEADS:
                src = q_ptr + row * q_row + head * DIM
                dst = out_ptr + (row * HEADS + head) * DIM
            else:
                src = k_ptr + row * k_row + (head - HEADS) * DIM
                dst = keys_ptr + row * kv_b + (head - HEADS) * kv_h + pos * kv_t
            x1 = tl.load(src + lanes)
            x2 = tl.load(src + HALF + lanes)
            c1 = tl.load(cos_ptr + row * cs_row + lanes)
            c2 = tl.load(cos_ptr + row * cs_row + HALF + lanes)
            s1 = tl.load(sin_ptr + row * cs_row + lanes)
            s2 = tl.load(sin_ptr + row * cs_row + HALF + lanes)
            kind = x1.dtype
            # eager's rounding: q * cos and rotate_half(q) * sin each rounded to the dtype, then their sum. The launch
            # turns floating-point contraction off: with it on, the compiler fuses a product and the sum into one
            # bf16 fma (one rounding instead of two; seen in the PTX, and as bf16 values one unit off on an H100)
            a1 = (x1.to(tl.float32) * c1.to(tl.float32)).to(kind).to(tl.float32)
            b1 = (-x2.to(tl.float32) * s1.to(tl.float32)).to(kind).to(tl.float32)
            a2 = (x2.to(tl.float32) * c2.to(tl.float32)).to(kind).to(tl.float32)
            b2 = (x1.to(tl.float32) * s2.to(tl.float32)).to(kind).to(tl.float32)
            tl.store(dst + lanes, (a1 + b1).to(kind))
            tl.store(dst + HALF + lanes, (a2 + b2).to(kind))
        else:
            full = tl.arange(0, DIM)
            index = head - HEADS - KV_HEADS
            x = tl.load(v_ptr + row * v_row + index * DIM + full)
            tl.store(values_ptr + row * kv_b + index * kv_h + pos * kv_t + full, x)

    _kernel = rope_store_kernel
    return _kernel


def rope_store_fused(q, k, v, cos, sin, keys, values, position, heads: int, kv_heads: int) -> torch.Tensor:
    """rope_store_reference in one Triton kernel (GPU tensors, last dims contiguous, D/2 a power of two)."""
    batch, dim = q.size(0), keys.size(-1)
    out = torch.empty(batch, heads, 1, dim, dtype=q.dtype, device=q.device)
    _triton_kernel()[(batch, heads + 2 * kv_heads)](
        q, k, v, q.stride(0), k.stride(0), v.stride(0), cos, sin, cos.stride(0), out, keys, values, position,
        keys.stride(0), keys.stride(1), keys.stride(2), HEADS=heads, KV_HEADS=kv_heads, DIM=dim,
        **KERNEL_OPTIONS)
    return out


def fusable_rope_store(q, k, v, cos, keys) -> bool:
    dim = keys.size(-1)
    return (q.is_cuda and dim >= 32 and dim & (dim - 1) == 0 and all(t.stride(-1) == 1 for t in (q, k, v, keys))
            and cos.is_contiguous() and keys.dtype == q.dtype == k.dtype == v.dtype == cos.dtype)


def grouped_attention(q, keys, values, mask, scale: float) -> torch.Tensor:
    """One query token per row: q [B, H, 1, D] against keys / values [B, Hkv, T, D], mask [B, 1, 1, T] additive.
    The H // Hkv query heads that share a key/value head (transformers' repeat_kv: head h reads h // G) are that
    head's G queries, so K and V are read once and never repeated. -> [B, 1, H*D], heads in order."""
    batch, heads, _, dim = q.shape
    kv_heads = keys.size(1)
    grouped = q.view(batch, kv_heads, heads // kv_heads, dim)
    out = F.scaled_dot_product_attention(grouped, keys, values, attn_mask=mask, scale=scale)
    return out.reshape(batch, 1, heads * dim)


def causal_lm(model):
    """The transformers causal LM under a peft wrapper (its LoRA layers in place), or the model itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def supports(model) -> bool:
    """Whether DirectDecoder computes what this model's forward computes (see the module's docstring)."""
    lm = causal_lm(model)
    config = getattr(lm, "config", None)
    inner = getattr(lm, "model", None)
    if config is None or inner is None or getattr(config, "model_type", None) not in MODEL_TYPES:
        return False
    if config._attn_implementation != "sdpa" or getattr(config, "final_logit_softcapping", None):
        return False
    if any(kind != "full_attention" for kind in (getattr(config, "layer_types", None) or ["full_attention"])):
        return False
    rotary = getattr(inner, "rotary_emb", None)
    if rotary is None or not isinstance(getattr(rotary, "inv_freq", None), torch.Tensor) or \
            any(word in str(getattr(rotary, "rope_type", "default")) for word in ("dynamic", "longrope")):
        return False
    if not (is_rms_norm(inner.norm) and hasattr(inner, "embed_tokens") and hasattr(lm, "lm_head")):
        return False
    for layer in inner.layers:
        attn = getattr(layer, "self_attn", None)
        if attn is None or not all(hasattr(attn, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj")):
            return False
        if any(hasattr(attn, name) for name in ("q_norm", "k_norm")) or not is_silu_mlp(layer.mlp):
            return False
        if not (is_rms_norm(layer.input_layernorm) and is_rms_norm(layer.post_attention_layernorm)):
            return False
    return True


class DirectDecoder:
    """logits(tokens, position_ids, mask, cache): the model's next-token logits [B, V] for one token per row, its
    keys and values written into `cache` (a StaticKVCache) at cache.position, as the model's forward would."""

    def __init__(self, model, compile_kernels: bool = True):
        lm = causal_lm(model)
        self.lm = lm
        self.inner = lm.model
        config = lm.config
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scale = self.dim ** -0.5
        self.rotary_scaling = float(getattr(self.inner.rotary_emb, "attention_scaling", 1.0))
        self.compile_kernels = compile_kernels
        self.fused_failed = False
        wrap = compiled if compile_kernels else (lambda function: function)
        self.rms_norm, self.add_rms_norm = wrap(rms_norm), wrap(add_rms_norm)
        self.silu_mul, self.rope_tables = wrap(silu_mul), wrap(rope_tables)

    def _cache_buffers(self, cache, index: int, like: torch.Tensor):
        """This layer's key and value buffers, allocated at the first step as StaticKVCache.update allocates them."""
        if index == len(cache.keys):
            batch = like.size(0)
            cache.keys.append(like.new_zeros(batch, self.kv_heads, cache.length, self.dim))
            cache.values.append(like.new_zeros(batch, self.kv_heads, cache.length, self.dim))
        return cache.keys[index], cache.values[index]

    def _rope_store(self, q, k, v, cos, sin, keys, values, position):
        if self.compile_kernels and not self.fused_failed and fusable_rope_store(q, k, v, cos, keys):
            try:  # the first call is an eager step before any capture: a kernel that cannot build falls back here
                return rope_store_fused(q, k, v, cos, sin, keys, values, position, self.heads, self.kv_heads)
            except Exception as exc:  # no Triton, or none that builds for this GPU: torch's kernels instead
                self.fused_failed = True
                warnings.warn(f"the fused rotary/cache kernel is not available ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); decoding with torch's kernels")
        return rope_store_reference(q, k, v, cos, sin, keys, values, position, self.heads, self.kv_heads)

    def logits(self, tokens: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor, cache) -> torch.Tensor:
        inner = self.inner
        hidden = inner.embed_tokens(tokens)  # [B, 1, H]
        cos, sin = self.rope_tables(inner.rotary_emb.inv_freq, position_ids, self.rotary_scaling, hidden.dtype)
        residual = None
        for index, layer in enumerate(inner.layers):
            norm = layer.input_layernorm
            if residual is None:
                x, residual = self.rms_norm(hidden, norm.weight, norm.variance_epsilon), hidden
            else:
                x, residual = self.add_rms_norm(hidden, residual, norm.weight, norm.variance_epsilon)
            attn = layer.self_attn
            q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
            keys, values = self._cache_buffers(cache, index, k)
            q = self._rope_store(q, k, v, cos, sin, keys, values, cache.position)
            hidden = attn.o_proj(grouped_attention(q, keys, values, mask, self.scale))
            norm = layer.post_attention_layernorm
            x, residual = self.add_rms_norm(hidden, residual, norm.weight, norm.variance_epsilon)
            mlp = layer.mlp
            hidden = mlp.down_proj(self.silu_mul(mlp.gate_proj(x), mlp.up_proj(x)))
        x, _ = self.add_rms_norm(hidden, residual, inner.norm.weight, inner.norm.variance_epsilon)
        return self.lm.lm_head(x)[:, -1]
