"""Models: the tiny random Llama, the embedded SmolLM2 (converted once, cached), LoRA and full fine-tuning."""
import math

import pytest
import torch

from flatline.common.errors import ModelError
from flatline.trainer.loop import build_trainer, prepare
from flatline.trainer.models import (
    embedded_dir,
    load_model,
    load_tokenizer,
    resolve_source,
)
from tests.conftest import tiny_config


def count(model, trainable=None):
    return sum(p.numel() for p in model.parameters() if trainable is None or p.requires_grad == trainable)


def test_tiny_random_uses_smollm2_tokenizer_with_pad_equal_eos():
    cfg = tiny_config()
    tokenizer = load_tokenizer(resolve_source(cfg.model))
    assert len(tokenizer) == 49152
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == 2
    assert tokenizer.padding_side == "left"
    model = load_model(resolve_source(cfg.model), tokenizer, cfg)
    assert 3_000_000 < count(model) < 4_000_000
    assert count(model, trainable=False) == 0  # lora_r = 0: full fine-tuning


def test_lora_freezes_the_base_and_trains_only_adapters():
    cfg = tiny_config("lora_r=4", "lora_target_modules=['q_proj','v_proj']")
    trainer = build_trainer(cfg)
    names = [name for name, _ in trainer.trainable]
    assert names and all("lora_" in name for name in names)
    assert all("lora_A" in n or "lora_B" in n for n in names)
    # 2 layers x (q_proj 64->64, v_proj 64->32 with 2 of 4 heads for keys/values) x r=4
    assert sum(p.numel() for _, p in trainer.trainable) == 2 * 4 * ((64 + 64) + (64 + 32))
    assert len(trainer.optimizer.param_groups[0]["params"]) == len(names)


def test_lora_targets_that_match_nothing_are_refused():
    cfg = tiny_config("lora_r=4", "lora_target_modules=['query_proj']")
    with pytest.raises(ModelError, match="lora_target_modules.*q_proj"):
        build_trainer(cfg)


def test_bfloat16_parameters():
    cfg = tiny_config("dtype=bfloat16")
    trainer = build_trainer(cfg)
    assert all(p.dtype == torch.bfloat16 for p in trainer.model.parameters())
    row = trainer.step()
    assert all(p.dtype == torch.bfloat16 for p in trainer.model.parameters())  # the step kept the dtype
    assert math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"])


def test_hub_ids_and_paths_are_told_apart(tmp_path):
    assert resolve_source("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
    with pytest.raises(ModelError, match="no config.json"):
        resolve_source(str(tmp_path))
    with pytest.raises(ModelError, match="neither"):
        resolve_source("not a model")


@pytest.mark.slow
def test_embedded_smollm2_loads_from_its_cached_conversion():
    cfg = tiny_config("model=smollm2-135m", "lora_r=16", "task=arithmetic")
    prepared = prepare(cfg)
    assert (embedded_dir() / "model.safetensors").is_file()  # converted once, cached
    model = load_model(prepared.source, prepared.tokenizer, cfg)
    assert count(model, trainable=False) == pytest.approx(134.5e6, rel=0.01)
    assert count(model, trainable=True) == 30 * 4 * 16 * (576 + 576) - 30 * 2 * 16 * (576 - 192)  # q,o 576->576; k,v 576->192
    ids = prepared.tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}],
                                                 add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = prepared.tokenizer.decode(out[0, ids["input_ids"].size(1):], skip_special_tokens=True)
    assert "5" in text  # a real instruction-tuned model, not random weights
