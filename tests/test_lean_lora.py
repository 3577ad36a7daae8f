"""The lean LoRA backward (trainer/lean_lora.py): same forward and gradients as peft's, without a float32 copy of
each adapter's input kept for the backward pass; float32 models keep peft's own forward."""
import copy

import torch

from flatline.trainer.lean_lora import LeanLoraLinear, make_lean
from flatline.trainer.models import _smollm2_tokenizer, tiny_random_model


def adapted(dtype, seed: int = 0):
    """A tiny Llama in `dtype` with float32 LoRA r8 on every linear layer, B drawn at random (peft starts it at 0)."""
    from peft import LoraConfig, get_peft_model

    tokenizer = _smollm2_tokenizer()
    model = tiny_random_model(len(tokenizer), 64, 2, seed, tokenizer.eos_token_id).to(dtype)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"))
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            parameter.data = parameter.data.float()
            if "lora_B" in name:
                parameter.data.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model


def loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size() if tensor.dtype == torch.float32 else 0)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        logits = model(input_ids=ids).logits.float()
    loss = logits.log_softmax(-1)[..., 7].mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads, sum(saved)


def test_lean_backward_matches_peft_in_bf16_and_keeps_less():
    peft_model = adapted(torch.bfloat16)
    lean_model = copy.deepcopy(peft_model)
    assert make_lean(lean_model) == 2 * 7
    ids = torch.randint(0, 40000, (3, 20), generator=torch.Generator().manual_seed(1))
    logits, grads, kept = loss_and_grads(peft_model, ids)
    lean_logits, lean_grads, lean_kept = loss_and_grads(lean_model, ids)
    assert torch.equal(logits, lean_logits)  # the same operations on the same values
    assert grads.keys() == lean_grads.keys() and len(grads) == 2 * 2 * 7
    for name, grad in grads.items():
        assert torch.allclose(grad, lean_grads[name], rtol=1e-4, atol=1e-6 * float(grad.abs().max())), name
    assert lean_kept < 0.5 * kept  # float32 bytes kept for the backward pass


def test_float32_model_and_disabled_adapters_run_pefts_forward():
    reference = adapted(torch.float32)
    model = copy.deepcopy(reference)
    make_lean(model)
    assert all(type(m) is LeanLoraLinear for m in model.modules() if hasattr(m, "lora_A"))
    ids = torch.randint(0, 40000, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, reference(input_ids=ids).logits)
        with model.disable_adapter(), reference.disable_adapter():
            assert torch.equal(model(input_ids=ids).logits, reference(input_ids=ids).logits)
    assert type(copy.deepcopy(model).base_model.model.model.layers[0].self_attn.q_proj) is LeanLoraLinear
