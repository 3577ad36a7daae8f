"""samplers/decoder.py: the written-out decode step gives the model's own logits and cache entries, and the sampler
that uses it (with pick_plain for the vocabulary pass) still samples the trainer's logprobs. Uncompiled here; on a
GPU the compiled pieces and the Triton rotary/cache kernel are checked by tests/test_device_path.py."""
import math

import pytest
import torch

from flatline.trainer.models import _smollm2_tokenizer, tiny_random_model
from flatline.trainer.samplers import StaticSampler
from flatline.trainer.samplers import decoder
from flatline.trainer.samplers.static import (Settings, StaticKVCache, attention_mask_4d, pick_plain, pick_tokens,
                                              plain_sampling)


def tiny_qwen2(dtype=torch.float32):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=49152, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6,
                         rms_norm_eps=1e-6, use_sliding_window=False, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(dtype).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "bias" in name or "norm" in name:  # not the init's zeros and ones, which hide a missing term
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def tiny_llama(dtype=torch.float32):
    tokenizer = _smollm2_tokenizer()
    model = tiny_random_model(len(tokenizer), 64, 2, 0, tokenizer.eos_token_id).to(dtype).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def one_step(model, dtype, prompt_len=5, rows=3):
    """The model's forward over a prompt then one more token, against DirectDecoder's step from the same cache."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 40000, (rows, prompt_len + 1), generator=generator)
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, -1].float()
        cache = StaticKVCache(prompt_len + 4, "cpu")
        allowed = torch.zeros(rows, 1, prompt_len + 1, prompt_len + 4, dtype=torch.bool)
        allowed[:, :, :, : prompt_len + 1] = torch.ones(prompt_len + 1, prompt_len + 1, dtype=torch.bool).tril()
        mask = attention_mask_4d(allowed[:, :, :prompt_len, :], "sdpa", dtype)
        model(input_ids=ids[:, :prompt_len], attention_mask=mask, past_key_values=cache, use_cache=True,
              position_ids=torch.arange(prompt_len).expand(rows, -1))
        theirs_keys = [k.clone() for k in cache.keys]
        cache.position.fill_(prompt_len)
        step_mask = attention_mask_4d(allowed[:, :, prompt_len:, :], "sdpa", dtype)
        positions = torch.full((rows, 1), prompt_len)
        ours = decoder.DirectDecoder(model, compile_kernels=False).logits(ids[:, prompt_len:], positions, step_mask,
                                                                           cache)
        reference = StaticKVCache(prompt_len + 4, "cpu")
        model(input_ids=ids, attention_mask=attention_mask_4d(allowed[:, :, :, :], "sdpa", dtype),
              past_key_values=reference, use_cache=True, position_ids=torch.arange(prompt_len + 1).expand(rows, -1))
    return full, ours.float(), cache, reference, theirs_keys


@pytest.mark.parametrize("build", [tiny_qwen2, tiny_llama])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_direct_step_gives_the_models_logits_and_cache(build, dtype):
    model = build(dtype)
    assert decoder.supports(model)
    full, ours, cache, reference, _ = one_step(model, dtype)
    tolerance = 1e-4 if dtype == torch.float32 else 0.05  # bf16: the attention kernel's summation order
    assert (full - ours).abs().max() < tolerance * full.abs().max()
    for mine, theirs in zip(cache.keys + cache.values, reference.keys + reference.values):
        assert torch.allclose(mine[:, :, :6].float(), theirs[:, :, :6].float(), atol=1e-5 if dtype == torch.float32
                              else 2e-2)


def test_direct_decoder_reads_through_peft_layers():
    from tests.test_device_path import with_random_adapters

    model = with_random_adapters(tiny_qwen2(), std=0.05)
    assert decoder.supports(model)
    full, ours, *_ = one_step(model, torch.float32)
    assert (full - ours).abs().max() < 1e-4 * full.abs().max()


def test_a_rotary_kernel_that_cannot_build_falls_back_to_torch(monkeypatch):
    model = tiny_qwen2()
    full, *_ = one_step(model, torch.float32)

    def broken(*args, **kwargs):
        raise RuntimeError("no Triton here")

    made = []
    real = decoder.DirectDecoder

    class Compiled(real):  # compile_kernels on, the pieces themselves left uncompiled (CPU)
        def __init__(self, model, compile_kernels=True):
            super().__init__(model, compile_kernels=False)
            self.compile_kernels = True
            made.append(self)

    monkeypatch.setattr(decoder, "DirectDecoder", Compiled)
    monkeypatch.setattr(decoder, "fusable_rope_store", lambda *args: True)
    monkeypatch.setattr(decoder, "rope_store_fused", broken)
    with pytest.warns(UserWarning, match="fused rotary/cache kernel is not available"):
        _, ours, *_ = one_step(model, torch.float32)
    assert made[0].fused_failed and (full - ours).abs().max() < 1e-4 * full.abs().max()


def test_supports_refuses_what_it_does_not_compute():
    model = tiny_qwen2()
    model.config._attn_implementation = "eager"
    assert not decoder.supports(model)
    assert not decoder.supports(torch.nn.Linear(2, 2))


def test_rope_store_reference_is_transformers_rotary():
    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

    torch.manual_seed(0)
    batch, heads, kv_heads, dim = 3, 4, 2, 16
    qkv = torch.randn(batch, 1, (heads + 2 * kv_heads) * dim, dtype=torch.bfloat16)
    q, k, v = qkv[..., :heads * dim], qkv[..., heads * dim:(heads + kv_heads) * dim], qkv[..., (heads + kv_heads) * dim:]
    inv_freq = 1.0 / (1e6 ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    cos, sin = decoder.rope_tables(inv_freq, torch.tensor([[7], [3], [9]]), 1.0, torch.bfloat16)
    keys, values = torch.zeros(batch, kv_heads, 12, dim, dtype=torch.bfloat16), torch.zeros(batch, kv_heads, 12, dim,
                                                                                             dtype=torch.bfloat16)
    out = decoder.rope_store_reference(q, k, v, cos, sin, keys, values, torch.tensor([5]), heads, kv_heads)
    q4, k4 = (t.reshape(batch, 1, -1, dim).transpose(1, 2) for t in (q, k))
    q_ref, k_ref = apply_rotary_pos_emb(q4, k4, cos, sin)
    assert torch.equal(out, q_ref) and torch.equal(keys[:, :, 5:6], k_ref)
    assert torch.equal(values[:, :, 5:6], v.reshape(batch, 1, kv_heads, dim).transpose(1, 2))
    assert keys[:, :, :5].abs().sum() == 0 and keys[:, :, 6:].abs().sum() == 0


def rope_store_both(dtype, device="cpu", batch=3, heads=4, kv_heads=2, dim=32):
    """(fused, reference) outputs of rope_store on the same random inputs: q out, keys, values."""
    torch.manual_seed(0)
    qkv = torch.randn(batch, 1, (heads + 2 * kv_heads) * dim, dtype=dtype, device=device)
    q, k, v = qkv[..., :heads * dim], qkv[..., heads * dim:(heads + kv_heads) * dim], qkv[..., (heads + kv_heads) * dim:]
    inv_freq = 1.0 / (1e6 ** (torch.arange(0, dim, 2, dtype=torch.float, device=device) / dim))
    cos, sin = decoder.rope_tables(inv_freq, torch.tensor([[7], [3], [9000]], device=device)[:batch], 1.0, dtype)
    buffers = [torch.randn(batch, kv_heads, 12, dim, dtype=dtype, device=device) for _ in range(2)]
    theirs = [b.clone() for b in buffers]
    position = torch.tensor([5], device=device)
    ours = decoder.rope_store_fused(q, k, v, cos, sin, *buffers, position, heads, kv_heads)
    reference = decoder.rope_store_reference(q, k, v, cos, sin, *theirs, position, heads, kv_heads)
    return (ours, *buffers), (reference, *theirs)


def test_triton_rope_store_matches_the_reference(monkeypatch):
    # The Triton kernel through Triton's interpreter (CPU tensors). The interpreter truncates where a GPU rounds
    # to nearest when it narrows float32 to bf16, so bf16 is held to a few units in the last place here (three roundings,
    # and the sum can cancel) and to equality on the GPU (tests/test_device_path.py).
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    decoder._kernel = None
    try:
        ours, theirs = rope_store_both(torch.float32)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
        ours, theirs = rope_store_both(torch.bfloat16)
        assert all((a.float() - b.float()).abs().max() <= 2 ** -6 * b.float().abs().max() for a, b in zip(ours, theirs))
        assert torch.equal(ours[2], theirs[2])  # v is copied, not computed
    finally:
        decoder._kernel = None


def test_triton_rope_store_compiles_without_fused_multiply_adds():
    # Compiled for an H100 (sm_90) here, with Triton's own ptxas: a product fused with the sum (fma) would round once
    # where eager rounds twice, as the first GPU run of this kernel showed (bf16 values one unit off).
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget

    kernel = decoder._triton_kernel()
    try:
        for kind in ("bf16", "fp32"):
            signature = {name: f"*{kind}" for name in ("q_ptr", "k_ptr", "v_ptr", "cos_ptr", "sin_ptr", "out_ptr",
                                                       "keys_ptr", "values_ptr")}
            signature.update({name: "i32" for name in ("q_row", "k_row", "v_row", "cs_row", "kv_b", "kv_h", "kv_t")})
            signature.update(pos_ptr="*i64", HEADS="constexpr", KV_HEADS="constexpr", DIM="constexpr")
            source = triton.compiler.ASTSource(fn=kernel, signature=signature,
                                               constexprs={"HEADS": 14, "KV_HEADS": 2, "DIM": 64})
            ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=decoder.KERNEL_OPTIONS).asm["ptx"]
            assert "fma" not in ptx and ("mul.rn.bf16" in ptx if kind == "bf16" else "mul.rn.f32" in ptx)
    except (RuntimeError, OSError, FileNotFoundError) as exc:  # no ptxas on this machine: nothing to check
        pytest.skip(f"Triton cannot compile for sm_90 here: {exc}")
    finally:
        decoder._kernel = None


def test_pick_plain_samples_what_pick_tokens_samples():
    settings = Settings(rows=6, prompt_width=8, max_new_tokens=4, temperature=0.7, top_p=1.0, top_k=0,
                        min_new_tokens=2)
    assert plain_sampling(settings)
    logits = torch.randn(6, 1000, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    eos_ids = torch.tensor([3, 17])
    eos_mask = torch.zeros(1000, dtype=torch.bool)
    eos_mask[eos_ids] = True
    logits[:, 17] = 30.0  # EOS would win every draw
    for allowed in (False, True):
        eos_allowed = torch.tensor([allowed])
        torch.manual_seed(1)
        theirs = pick_tokens(logits, settings, eos_ids, eos_allowed)
        torch.manual_seed(1)
        noise = torch.empty(logits.shape, dtype=torch.float32).exponential_()
        ours = pick_plain(logits, noise, settings.temperature, eos_mask, eos_allowed)
        assert torch.equal(ours[0], theirs[0]) and torch.allclose(ours[1], theirs[1], atol=1e-6)
        assert (ours[0] == 17).all() == allowed


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_sampler_on_the_direct_decoder_keeps_the_trainers_logprobs(temperature):
    from tests.test_device_path import mean_gap, with_random_adapters

    tokenizer = _smollm2_tokenizer()
    model = with_random_adapters(tiny_qwen2(), std=0.05)
    eos = (tokenizer.eos_token_id,)
    prompts = [tokenizer("What is 1+1?")["input_ids"], tokenizer("Hello there, how are you today?")["input_ids"]]
    plain = StaticSampler(model, tokenizer.pad_token_id, eos, fold_adapters=True)
    direct = StaticSampler(model, tokenizer.pad_token_id, eos, fold_adapters=True)
    direct.direct_decoding, direct.compile_kernels = True, False
    torch.manual_seed(0)
    ours = direct.sample(prompts, 4, 12, temperature)
    assert next(iter(direct._states.values())).direct is not None
    gap, _ = mean_gap(model, ours, 4, eos)
    assert gap < 1e-4
    torch.manual_seed(0)
    theirs = plain.sample(prompts, 4, 12, temperature)
    assert next(iter(plain._states.values())).direct is None
    assert torch.equal(ours.completion_ids, theirs.completion_ids)  # the same draws from the same distributions
    assert math.isclose(float(ours.sampler_logprobs.sum()), float(theirs.sampler_logprobs.sum()), rel_tol=1e-4)
