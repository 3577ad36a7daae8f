"""The GPU path's pieces, checked where they also run: the static-cache decoder (eagerly on the CPU), the sliced
output layer and activation checkpointing against the plain logprob path, bf16 with fp32 adapters, devices, and
per-phase timings. The CUDA-only parts (graph capture, speed) are in tests marked `cuda` and in bench/gpu_step.py."""
import pytest
import torch

from flatline.common.errors import ModelError
from flatline.trainer import logprobs as lp
from flatline.trainer.algorithm import completion_mask
from flatline.trainer.config import load_config
from flatline.trainer.loop import build_trainer, prepare
from flatline.trainer.models import _smollm2_tokenizer, resolve_device, tiny_random_model
from flatline.trainer.samplers import HFSampler, StaticSampler
from flatline.trainer.samplers.static import pick_tokens, Settings
from tests.conftest import tiny_config

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def tiny():
    tokenizer = _smollm2_tokenizer()
    model = tiny_random_model(len(tokenizer), 64, 2, 0, tokenizer.eos_token_id).eval()
    prompts = [tokenizer("What is 1+1?")["input_ids"], tokenizer("Hello there, how are you today?")["input_ids"], [5, 6]]
    return model, tokenizer, prompts


def trainer_logprobs(model, batch, num_generations, temperature=1.0):
    rows = torch.arange(batch.completion_ids.size(0))
    logits = lp.completion_logits(model, batch.prompt_ids[::num_generations], batch.prompt_mask[::num_generations],
                                  rows // num_generations, batch.completion_ids)
    return lp.token_logprobs(logits, batch.completion_ids, temperature)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_static_sampler_logprobs_are_the_trainers(tiny, temperature):
    model, tokenizer, prompts = tiny
    torch.manual_seed(0)
    batch = StaticSampler(model, tokenizer.pad_token_id, (tokenizer.eos_token_id,)).sample(prompts, 4, 12, temperature)
    assert batch.completion_ids.shape == (12, 12)
    mask = completion_mask(batch.completion_ids, (tokenizer.eos_token_id,)).bool()
    gap = (trainer_logprobs(model, batch, 4, temperature) - batch.sampler_logprobs)[mask].abs().max()
    assert gap < 1e-4
    assert (batch.sampler_logprobs[mask] < 0).all()


def test_static_sampler_greedy_equals_transformers_generate(tiny):
    model, tokenizer, prompts = tiny
    eos = (tokenizer.eos_token_id,)
    ours = StaticSampler(model, tokenizer.pad_token_id, eos).sample(prompts, 2, 10, 0.0)
    theirs = HFSampler(model, tokenizer.pad_token_id, eos).sample(prompts, 2, 10, 0.0)
    assert torch.equal(ours.completion_ids, theirs.completion_ids)
    assert torch.equal(ours.prompt_ids, theirs.prompt_ids)
    assert (ours.sampler_logprobs - theirs.sampler_logprobs).abs().max() < 1e-4


def test_static_sampler_stops_rows_at_eos_and_pads_after(tiny):
    model, tokenizer, prompts = tiny
    eos = tuple(range(100, 20_000))  # a third of the vocabulary ends a row: most rows end early
    torch.manual_seed(1)
    batch = StaticSampler(model, tokenizer.pad_token_id, eos).sample(prompts, 4, 16, 1.0)
    lengths = batch.completion_lengths
    assert (lengths < 16).any() and not batch.truncated[lengths < 16].any()
    for row, length in enumerate(lengths.tolist()):
        assert batch.completion_ids[row, length - 1].item() in eos or batch.truncated[row]
        assert (batch.completion_ids[row, length:] == tokenizer.pad_token_id).all()
        assert (batch.sampler_logprobs[row, length:] == 0).all()
    assert batch.completion_ids.size(1) == int(lengths.max())  # cut to the longest row


def test_min_new_tokens_bans_eos_until_then(tiny):
    model, tokenizer, prompts = tiny
    eos = tuple(range(100, 20_000))
    sampler = StaticSampler(model, tokenizer.pad_token_id, eos)
    sampler.min_new_tokens = 9
    batch = sampler.sample(prompts, 4, 9, 1.0)
    assert (batch.completion_lengths == 9).all()


def test_pick_tokens_respects_top_k_and_top_p():
    torch.manual_seed(0)
    logits = torch.randn(64, 50)
    ids = torch.tensor([0])
    top_k = Settings(64, 8, 4, 1.0, 1.0, 3, 0)
    tokens, logprobs = pick_tokens(logits, top_k, ids, torch.tensor([True]))
    allowed = logits.topk(3, dim=-1).indices
    assert (allowed == tokens[:, None]).any(dim=1).all()
    assert torch.allclose(logprobs, logits.log_softmax(-1).gather(1, tokens[:, None]).squeeze(1))  # before filtering
    top_p = Settings(64, 8, 4, 1.0, 0.5, 0, 0)
    tokens, _ = pick_tokens(logits, top_p, ids, torch.tensor([True]))
    probs = logits.softmax(-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    for row, token in enumerate(tokens.tolist()):
        rank = (order[row] == token).nonzero().item()
        assert sorted_probs[row, :rank].sum() < 0.5  # the nucleus: tokens before it hold less than top_p
    greedy = Settings(64, 8, 4, 0.0, 1.0, 0, 0)
    tokens, _ = pick_tokens(logits, greedy, ids, torch.tensor([True]))
    assert torch.equal(tokens, logits.argmax(-1))


def test_sliced_output_layer_and_checkpointing_give_the_same_logprobs_and_gradients(monkeypatch):
    # on the CPU: the same arithmetic in a different order agrees to 1e-6 there, not under a GPU's TF32 matmuls
    cfg = tiny_config("device=cpu", "max_completion_length=10", "num_generations=4", "per_device_train_batch_size=16",
                      "lora_r=8", "lora_target_modules=['all-linear']", task="arithmetic")
    trainer = build_trainer(cfg)
    rollout = trainer.rollout()
    rows = torch.arange(16)

    def run():
        trainer.model.zero_grad()
        logps, entropy = trainer.logprobs(trainer.model, rollout, rows, with_entropy=True)
        (logps * rollout.completion_mask).sum().backward()
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        return logps.detach(), entropy, grads

    plain = run()
    monkeypatch.setattr(lp, "LEAN_LOGITS_ELEMENTS", 0)
    monkeypatch.setattr(lp, "HEAD_SLICE_ELEMENTS", 7 * len(trainer.tokenizer))  # 7 positions a slice
    assert lp.head_splits(trainer.model)
    sliced = run()
    trainer.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert lp.is_checkpointed(trainer.model)
    checkpointed = run()
    for other in (sliced, checkpointed):
        assert (other[0] - plain[0]).abs().max() < 1e-4
        assert (other[1] - plain[1]).abs().max() < 1e-3
        assert plain[2].keys() == other[2].keys() and plain[2]
        for name, grad in plain[2].items():
            assert (other[2][name] - grad).norm() <= 1e-4 * grad.norm() + 1e-12, name


def test_bf16_base_keeps_lora_adapters_in_fp32():
    trainer = build_trainer(tiny_config("dtype=bfloat16", "lora_r=4", "max_completion_length=4"))
    dtypes = {("lora_" in name, p.dtype) for name, p in trainer.model.named_parameters()}
    assert dtypes == {(True, torch.float32), (False, torch.bfloat16)}
    row = trainer.step()
    assert row["grad_norm"] > 0


def test_step_reports_time_per_phase():
    trainer = build_trainer(tiny_config("max_completion_length=4", "num_iterations=2", "beta=0.1", "lora_r=4"))
    row = trainer.step()
    phases = ("sample", "score", "logprobs", "backward", "optimizer", "probes")
    for phase in phases:
        assert row[f"time/{phase}"] >= 0, phase
    assert row["time/sample"] > 0 and row["time/backward"] > 0 and row["time/logprobs"] > 0
    assert row["time/probes"] < 0.05  # no listener: nothing but the bookkeeping around where probes would run
    # the phases tile the step: what the clock reads between its marks is the whole step, nothing counted twice
    assert sum(row[f"time/{p}"] for p in phases) == pytest.approx(row["step_time"], abs=0.05)


def test_device_cuda_without_a_gpu_is_refused_before_loading(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ModelError, match="config key 'device': cuda, but torch .* sees no GPU"):
        prepare(load_config(None, ["model=tiny-random", "task=bandit", "device=cuda"]))


@cuda
def test_graphs_replay_the_eager_decoder_exactly(tiny):
    model, tokenizer, prompts = tiny
    model = model.to("cuda")
    eos = (tokenizer.eos_token_id,)
    eager = StaticSampler(model, tokenizer.pad_token_id, eos, use_graphs=False).sample(prompts, 4, 32, 0.0)
    graphed_sampler = StaticSampler(model, tokenizer.pad_token_id, eos)
    graphed = graphed_sampler.sample(prompts, 4, 32, 0.0)
    assert next(iter(graphed_sampler._states.values())).graph is not None
    assert torch.equal(eager.completion_ids, graphed.completion_ids)
    assert (eager.sampler_logprobs - graphed.sampler_logprobs).abs().max() < 1e-3


@pytest.mark.parametrize("implementation, static_decoding, expected", [
    ("sdpa", "on", StaticSampler), ("eager", "on", StaticSampler), ("flash_attention_2", "on", HFSampler),
    ("sdpa", "off", HFSampler), ("sdpa", "auto", HFSampler),  # auto on the CPU: generate
])
def test_build_sampler_decodes_statically_only_where_it_can_mask(tiny, implementation, static_decoding, expected):
    from types import SimpleNamespace

    from flatline.trainer.samplers import build_sampler

    _, tokenizer, _ = tiny
    model = torch.nn.Linear(2, 2)
    model.config = SimpleNamespace(_attn_implementation=implementation)
    cfg = SimpleNamespace(sampler="hf", static_decoding=static_decoding)
    sampler = build_sampler(cfg, model, tokenizer, None, (tokenizer.eos_token_id,), 8)
    assert type(sampler) is expected


@cuda
@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_every_probe_runs_on_a_gpu_step_without_being_disabled(beta):
    # a GPU sampler's logprobs live on the GPU, the trainer's on the CPU: each probe must take both (a probe that
    # raises is disabled for the rest of the run, with a warning naming it)
    import warnings
    from flatline.probes import for_trainer
    trainer = build_trainer(tiny_config("device=cuda", "max_completion_length=6", "lora_r=4", f"beta={beta}",
                                        "probes=full"))
    trainer.listeners.extend(for_trainer(trainer))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = [trainer.step() for _ in range(2)]
    disabled = [str(w.message) for w in caught if "disabled for the rest of the run" in str(w.message)]
    assert disabled == []
    # the sampler and the trainer score the same weights: within what verl calls a fine gap
    from flatline.diagnostics.hypotheses.sync import LOGP_DIFF_OK
    gaps = [row["sync/logprob_diff_mean"] for row in rows]
    assert all(0 <= gap < LOGP_DIFF_OK for gap in gaps), gaps


def with_random_adapters(model, std: float, seed: int = 0, dtype=torch.float32):
    """`model` wrapped with LoRA r16 on every linear layer, adapters in `dtype` and B drawn at `std` (as if trained:
    peft starts B at zero, where a missing adapter would go unnoticed)."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"))
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            parameter.data = parameter.data.to(dtype)
            if "lora_B" in name:
                parameter.data.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return model.eval()


def mean_gap(model, batch, num_generations, eos):
    """Mean |trainer - sampler| logprob over the completion tokens, the trainer's on the model's device."""
    device = next(model.parameters()).device
    mask = completion_mask(batch.completion_ids, eos).bool()
    rows = torch.arange(batch.completion_ids.size(0))
    with torch.no_grad():
        logits = lp.completion_logits(model, batch.prompt_ids[::num_generations].to(device),
                                      batch.prompt_mask[::num_generations].to(device),
                                      (rows // num_generations).to(device), batch.completion_ids.to(device))
        trainer = lp.token_logprobs(logits, batch.completion_ids.to(device), 1.0).float().cpu()
    return float((trainer - batch.sampler_logprobs)[mask].abs().mean()), mask


def test_folded_adapters_decode_what_the_adapter_path_decodes(tiny):
    from flatline.trainer.samplers.folded import FoldedWeights

    _, tokenizer, prompts = tiny
    model = with_random_adapters(tiny_random_model(len(tokenizer), 64, 2, 0, tokenizer.eos_token_id), std=0.05)
    eos = (tokenizer.eos_token_id,)
    folded = FoldedWeights(model)
    assert len(folded.layers) == 2 * 7  # q k v o gate up down in each of 2 layers
    assert sum(layer.stacked is not None for layer in folded.layers) == 2 * 5  # q k v and gate up: one product each
    sampler = StaticSampler(model, tokenizer.pad_token_id, eos, fold_adapters=True)
    torch.manual_seed(0)
    gap, _ = mean_gap(model, sampler.sample(prompts, 4, 12, 1.0), 4, eos)
    assert gap < 1e-5  # float32: the fold is exact up to summation order
    with torch.no_grad():  # an optimizer step, in place: the next rollout must see it
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.add_(torch.randn_like(parameter) * 0.5)
    torch.manual_seed(1)
    gap, _ = mean_gap(model, sampler.sample(prompts, 4, 12, 1.0), 4, eos)
    assert gap < 1e-5
    assert not any("forward" in vars(layer.module) for layer in sampler._folded.layers)  # restored after sampling
    base = [p.clone() for n, p in model.named_parameters() if "lora_" not in n]
    assert all(torch.equal(a, b) for a, b in zip(base, [p for n, p in model.named_parameters() if "lora_" not in n]))


@cuda
def test_folded_bf16_sampler_stays_within_verls_fine_gap_at_real_size():
    # Qwen2.5-0.5B's architecture, random weights, bf16 base with fp32 adapters as the trainer runs it; the decode
    # reads the folded bf16 weights through the captured graph. The output embedding is scaled so that the next-token
    # distributions are peaked (random init gives nearly uniform ones, where any two models agree).
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from flatline.diagnostics.hypotheses.sync import LOGP_DIFF_OK

    tokenizer = _smollm2_tokenizer()
    config = Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6,
                         rms_norm_eps=1e-6, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    with torch.device("cuda"):
        base = Qwen2ForCausalLM._from_config(config, dtype=torch.bfloat16)
    with torch.no_grad():
        base.model.embed_tokens.weight.mul_(8)
    model = with_random_adapters(base, std=2e-3).to("cuda")
    eos = (tokenizer.eos_token_id,)
    prompts = [tokenizer(text)["input_ids"] for text in
               ("What is 12 times 7?", "Name a prime above 100.", "Write a haiku about rain.", "Sort 3, 1, 2.")]
    sampler = StaticSampler(model, tokenizer.pad_token_id, eos)
    torch.manual_seed(0)
    batch = sampler.sample(prompts, 8, 64, 1.0)
    state = next(iter(sampler._states.values()))
    assert state.graph is not None and len(sampler._folded.layers) == 24 * 7
    assert state.direct is not None and state.pick_plain is not None  # samplers/decoder.py's step is what ran
    gap, mask = mean_gap(model, batch, 8, eos)
    # the adapters matter at this size: without them the logprobs move by more than the line being asserted
    with model.disable_adapter():
        gap_without, _ = mean_gap(model, batch, 8, eos)
    with torch.no_grad():  # an optimizer step, in place, after the graph was captured
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.add_(torch.randn_like(parameter) * 2e-3)
    torch.manual_seed(1)
    gap_after, _ = mean_gap(model, sampler.sample(prompts, 8, 64, 1.0), 8, eos)
    print(f"bf16 folded sampler vs trainer, mean |logprob gap| over {int(mask.sum())} tokens: {gap:.5f}; after an "
          f"in-place update: {gap_after:.5f}; against the model without adapters: {gap_without:.5f} "
          f"(verl's fine line {LOGP_DIFF_OK})")
    assert gap_without > LOGP_DIFF_OK
    assert gap < LOGP_DIFF_OK and gap_after < LOGP_DIFF_OK


@cuda
def test_triton_rope_store_is_the_reference_exactly_on_the_gpu():
    from tests.test_direct_decoder import rope_store_both

    # The same bits as eager: each product rounded, then the sum (no fused multiply-add: decoder.KERNEL_OPTIONS).
    for dtype in (torch.bfloat16, torch.float32):
        for dim in (64, 128):
            ours, theirs = rope_store_both(dtype, "cuda", heads=14, kv_heads=2, dim=dim)
            print(f"rope_store {dtype} D={dim}: " + ", ".join(
                f"{name} equal {torch.equal(a, b)}" for name, a, b in zip(("q", "keys", "values"), ours, theirs)))
            assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
