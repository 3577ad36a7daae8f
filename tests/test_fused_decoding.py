"""samplers/fused.py: the fused pieces compute what transformers' modules compute, and are put back afterwards.
(Compiled, on a GPU, they are checked by tests/test_device_path.py's bf16 gap test and timed by bench/gpu_step.py.)"""
import torch

from flatline.trainer.models import _smollm2_tokenizer, tiny_random_model
from flatline.trainer.samplers.fused import fused_decoding, rms_norm, silu_mul


def test_fused_pieces_give_the_models_own_logits_and_are_restored():
    tokenizer = _smollm2_tokenizer()
    model = tiny_random_model(len(tokenizer), 64, 2, 0, tokenizer.eos_token_id).to(torch.bfloat16).eval()
    ids = torch.randint(0, 40000, (3, 11), generator=torch.Generator().manual_seed(0))
    import transformers.models.llama.modeling_llama as llama

    rotary = llama.apply_rotary_pos_emb
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with fused_decoding(model, compile_kernels=False) as patched:
            assert patched == 2 * 2 + 1 + 2 + 1  # 2 norms per layer + the final one, 2 MLPs, the rotary function
            assert "forward" in vars(model.model.norm) and "forward" in vars(model.model.layers[0].mlp)
            fused = model(input_ids=ids).logits
    assert torch.equal(plain, fused)
    assert not any("forward" in vars(m) for m in model.modules()) and llama.apply_rotary_pos_emb is rotary


def test_pure_pieces_match_the_modules():
    tokenizer = _smollm2_tokenizer()
    model = tiny_random_model(len(tokenizer), 64, 2, 0, tokenizer.eos_token_id).to(torch.bfloat16)
    x = torch.randn(4, 3, 64, dtype=torch.bfloat16)
    norm = model.model.layers[0].input_layernorm
    with torch.no_grad():
        norm.weight.normal_()
        assert torch.equal(rms_norm(x, norm.weight, norm.variance_epsilon), norm(x))
        mlp = model.model.layers[0].mlp
        gate, up = mlp.gate_proj(x), mlp.up_proj(x)
        assert torch.equal(silu_mul(gate, up), mlp.act_fn(gate) * up)
