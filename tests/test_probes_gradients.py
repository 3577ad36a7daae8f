"""Gradient probe: grouping, pre-clip norms, clip coefficient, flow and non-finite counts, on good and bad gradients."""
import math

import pytest
import torch

from flatline.probes.base import ProbeSet
from flatline.probes.gradients import (
    MAX_GROUPS,
    OTHER_GROUP,
    GradientProbe,
    clip_coefficient,
    gradient_metrics,
    group_names,
    param_group,
)
from flatline.trainer.loop import build_trainer
from tests.conftest import tiny_config


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


@pytest.mark.parametrize("name, group", [
    ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight", "q_proj.lora_A"),
    ("base_model.model.model.layers.1.mlp.down_proj.lora_B.default.weight", "down_proj.lora_B"),
    ("base_model.model.model.embed_tokens.lora_embedding_A.default", "embed_tokens.lora_embedding_A"),
    ("model.layers.3.mlp.down_proj.weight", "mlp.down_proj"),
    ("model.layers.3.self_attn.q_proj.bias", "self_attn.q_proj"),
    ("model.layers.0.input_layernorm.weight", "input_layernorm"),
    ("model.embed_tokens.weight", "embed_tokens"),
    ("lm_head.weight", "lm_head"),
    ("base_model.model.lm_head.modules_to_save.default.weight", "lm_head"),
    ("policy.net.2.weight", "net.2"),
])
def test_param_group(name, group):
    assert param_group(name) == group


def test_groups_are_capped():
    names = [f"model.layers.0.block{i}.weight" for i in range(MAX_GROUPS + 4)]
    groups = group_names(names)
    assert len(set(groups.values())) == MAX_GROUPS
    assert groups[names[0]] == "block0" and groups[names[-1]] == OTHER_GROUP


def test_healthy_gradients():
    model = small_model()
    model(torch.randn(16, 4)).pow(2).mean().backward()
    row = GradientProbe(max_grad_norm=1e-3).on_gradients(model, None)
    total = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3))  # pre-clip norm, as the trainer logs
    assert row["global_norm"] == pytest.approx(total, rel=1e-6)
    assert row["norm/0"] ** 2 + row["norm/2"] ** 2 == pytest.approx(row["global_norm"] ** 2, rel=1e-12)
    assert row["clip_coef"] == pytest.approx(1e-3 / total, rel=1e-6)
    assert (row["zero_grad_frac"], row["params_without_grad"], row["nonfinite"]) == (0.0, 0, 0)


def test_clip_coef_for_a_known_norm():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0]), torch.tensor([4.0])  # global norm 5
    named = [("x.a", a), ("x.b", b)]
    assert gradient_metrics(named, max_grad_norm=1.0)["global_norm"] == 5.0
    assert gradient_metrics(named, max_grad_norm=1.0)["clip_coef"] == pytest.approx(0.2)
    assert gradient_metrics(named, max_grad_norm=10.0)["clip_coef"] == 1.0
    assert "clip_coef" not in gradient_metrics(named, max_grad_norm=None)
    assert "clip_coef" not in gradient_metrics(named, max_grad_norm=0.0)  # the trainer's "no clipping"
    assert math.isnan(clip_coefficient(math.inf, 1.0))


def test_detached_loss_gives_no_gradients():
    model = small_model()
    dummy = torch.zeros((), requires_grad=True)  # so backward runs at all, as a stray requires_grad tensor would
    (model(torch.randn(16, 4)).detach().sum() + dummy).backward()
    row = GradientProbe().on_gradients(model, None)
    assert row["params_without_grad"] == 4 and row["zero_grad_frac"] == 1.0 and row["global_norm"] == 0.0


def test_zero_advantages_give_all_zero_gradients():
    model = small_model()
    (0.0 * model(torch.randn(16, 4)).sum()).backward()  # every advantage 0: gradients exist but are 0
    row = GradientProbe().on_gradients(model, None)
    assert row["params_without_grad"] == 0 and row["zero_grad_frac"] == 1.0


def test_nan_and_inf_gradients_are_counted():
    model = small_model()
    model(torch.randn(16, 4)).pow(2).mean().backward()
    model[0].weight.grad[0, :2] = torch.tensor([math.nan, math.inf])
    model[2].bias.grad[1] = -math.inf
    row = GradientProbe(max_grad_norm=1.0).on_gradients(model, None)
    assert row["nonfinite"] == 3
    assert not math.isfinite(row["global_norm"]) and math.isnan(row["clip_coef"])


def test_in_the_trainer_norm_matches_grad_norm_and_lora_a_starts_without_gradient():
    cfg = tiny_config("lora_r=4", "lora_target_modules=['q_proj','v_proj']", "seed=1")
    trainer = build_trainer(cfg, listeners=[ProbeSet([GradientProbe(max_grad_norm=cfg.max_grad_norm)])])
    row = trainer.step()
    assert row["grad_norm"] > 0, "no reward variance in the first batch; pick another seed"
    assert row["gradients/global_norm"] == pytest.approx(row["grad_norm"], rel=1e-5)
    assert row["gradients/clip_coef"] == pytest.approx(min(1.0, cfg.max_grad_norm / row["grad_norm"]), rel=1e-5)
    groups = {k for k in row if k.startswith("gradients/norm/")}
    assert groups == {f"gradients/norm/{m}.lora_{x}" for m in ("q_proj", "v_proj") for x in "AB"}
    # B starts at zero, so A gets exactly zero gradient on the first step: A's share of the elements
    a = sum(p.numel() for n, p in trainer.trainable if "lora_A" in n)
    assert row["gradients/zero_grad_frac"] == pytest.approx(a / sum(p.numel() for _, p in trainer.trainable))
    assert row["gradients/norm/q_proj.lora_A"] == 0.0 and row["gradients/norm/q_proj.lora_B"] > 0
