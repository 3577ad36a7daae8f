"""Dropout probes: active dropout modules (cheap) and two train-mode forwards compared (full), on the tiny trainer."""
import torch

from flatline.probes.dropout import DropoutModulesProbe, RepeatedForwardProbe, active_dropout_modules
from tests.conftest import step_once, tiny_config


def probe_numbers(*overrides):
    trainer, record = step_once(tiny_config("lora_r=4", "learning_rate=1e-3", *overrides))
    state = torch.random.get_rng_state()
    numbers = {**DropoutModulesProbe().on_step(record), **RepeatedForwardProbe().on_step(record)}
    assert torch.equal(torch.random.get_rng_state(), state) and trainer.model.training  # left as found
    return numbers


def test_lora_dropout_is_seen_as_active_modules_and_a_forward_that_does_not_repeat():
    numbers = probe_numbers("lora_dropout=0.3")
    assert numbers["dropout_modules_active"] > 0 and numbers["repeat_forward_logprob_gap"] > 1e-3


def test_without_dropout_the_training_forward_repeats_exactly():
    numbers = probe_numbers("lora_dropout=0.0")
    assert numbers == {"dropout_modules_active": 0, "repeat_forward_logprob_gap": 0.0}


def test_dropout_in_eval_mode_does_not_count():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    assert active_dropout_modules(model) == 1
    assert active_dropout_modules(model.eval()) == 0
