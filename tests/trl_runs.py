"""Real TRL GRPOTrainer runs on CPU for the callback's tests and benches: the embedded SmolLM2 (LoRA) or a tiny
random Llama with SmolLM2's tokenizer, a few arithmetic prompts, and a reward that pays the right sum.

    trainer = trl_trainer(tmp_path, model="tiny", callbacks=[FlatlineCallback(run_dir=tmp_path / "run")])
    trainer.train()
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

PROMPTS = [(a, b) for a in (2, 3, 4, 5, 6, 7) for b in (1, 2, 3)]


def correct_sum(completions, a, b, **kwargs) -> list[float]:
    """1.0 when the last number in the completion is a + b ("2 + 3 = 5" and "The answer is 5." both pay)."""
    out = []
    for completion, x, y in zip(completions, a, b):
        text = completion[0]["content"] if isinstance(completion, list) else completion
        numbers = re.findall(r"-?\d+", text)
        out.append(1.0 if numbers and int(numbers[-1]) == x + y else 0.0)
    return out


def text_length(completions, **kwargs) -> list[float]:
    """Characters in the completion / 100: varies from the first step, even for a random model."""
    return [len(c[0]["content"] if isinstance(c, list) else c) / 100 for c in completions]


class FreezeAdapterAtStart:
    """A planted fault: the adapter's B matrices frozen after the optimizer was built. B stays at its zero init, so
    no gradient reaches A either: the adapter never moves, while the loss and the rest of the step look normal.
    Put it before FlatlineCallback in `callbacks`."""

    def __getattr__(self, event):
        if event.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(event)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.requires_grad_(False)


def dataset():
    from datasets import Dataset
    question = "What is {} + {}? Reply with just the number."
    return Dataset.from_list([{"prompt": [{"role": "user", "content": question.format(a, b)}],
                               "a": a, "b": b} for a, b in PROMPTS])


def tiny_model(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256)
    return LlamaForCausalLM(config)


def trl_trainer(out: Path, model: str = "tiny", callbacks=(), reward_funcs=None, lora: bool | None = None,
                **overrides):
    """A GRPOTrainer ready to train: `model` "tiny" or "smollm2" (LoRA r8 on all linear layers by default)."""
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from flatline.trainer.models import convert_embedded

    path = str(convert_embedded())
    tokenizer = AutoTokenizer.from_pretrained(path)
    policy = tiny_model(len(tokenizer)) if model == "tiny" else path
    reward_funcs = reward_funcs or ((text_length,) if model == "tiny" else (correct_sum,))
    lora = (model != "tiny") if lora is None else lora
    settings = dict(output_dir=str(out / "trl"), max_steps=4, per_device_train_batch_size=8, num_generations=4,
                    max_completion_length=12 if model == "tiny" else 32,
                    learning_rate=1e-3 if model == "tiny" else 2e-4, logging_steps=1,
                    report_to=[], seed=0, use_cpu=True, save_strategy="no", bf16=False, temperature=1.0,
                    disable_tqdm=True, gradient_checkpointing=False)
    settings.update(overrides)
    peft_config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM") if lora else None
    return GRPOTrainer(model=policy, reward_funcs=list(reward_funcs), args=GRPOConfig(**settings),
                       train_dataset=dataset(), processing_class=tokenizer, callbacks=list(callbacks),
                       peft_config=peft_config)
