"""Update probe: relative update, coverage, base drift, bf16 precision and the LoRA effective update, good and bad."""
import math

import pytest
import torch

from flatline.common.record import StepRecord
from flatline.probes.base import ProbeSet
from flatline.probes.gradients import GradientProbe
from flatline.probes.update import UpdateProbe, bit_sums, lora_delta_sq, optimizer_coverage
from flatline.trainer.loop import build_trainer
from tests.conftest import tiny_config

LORA = ("lora_r=4", "lora_target_modules=['q_proj','v_proj']", "seed=1", "learning_rate=1e-3")


def probed_step(probe: UpdateProbe, model, optimizer, loss_fn, scheduler=None, call_on_gradients=True) -> dict:
    """One step of a plain loop with the probe's hooks where the trainer calls them."""
    optimizer.zero_grad()
    loss_fn().backward()
    if call_on_gradients:
        probe.on_gradients(model, optimizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return probe.on_step(StepRecord(1, model=model, optimizer=optimizer, pre_step_weights=before))


def linear_step(dtype: torch.dtype, lr: float, **kwargs) -> dict:
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 64).to(dtype)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=0.0)
    x = torch.randn(16, 64, dtype=dtype)
    return probed_step(UpdateProbe(), layer, optimizer, lambda: layer(x).float().pow(2).mean(), **kwargs)


def test_bf16_swallows_a_1e_7_relative_update():
    # Adam's first step moves each weight by ~lr; weights ~0.07, so lr 1e-8 is a ~1e-7 relative update, far below
    # bf16's resolution (2**-8 relative)
    bf16 = linear_step(torch.bfloat16, lr=1e-8)
    assert bf16["precision_kept"] == 0.0 and bf16["swallowed_frac"] == 1.0
    assert bf16["changed_frac"] == 0.0 and bf16["rel_update"] == 0.0
    fp32 = linear_step(torch.float32, lr=1e-8)
    assert fp32["rel_update"] == pytest.approx(1.3e-7, rel=0.2)
    assert fp32["swallowed_frac"] == 0.0 and fp32["precision_kept"] > 0.8  # fp32 resolution is 1.2e-7: kept, rounded


def test_fp32_keeps_the_update_bf16_loses_most_of_it():
    fp32, bf16 = linear_step(torch.float32, lr=1e-5), linear_step(torch.bfloat16, lr=1e-5)  # ~1e-4 relative
    assert fp32["precision_kept"] == pytest.approx(1.0, abs=1e-3) and fp32["swallowed_frac"] == 0.0
    assert bf16["precision_kept"] < 0.5 and bf16["swallowed_frac"] > 0.9


def test_precision_uses_the_learning_rate_the_step_used():
    def halve_each_step(optimizer):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 ** s)

    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 8)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-2, weight_decay=0.1)
    x = torch.randn(4, 8)
    noted = probed_step(UpdateProbe(), layer, optimizer, lambda: layer(x).pow(2).mean(), halve_each_step(optimizer))
    assert noted["precision_kept"] == pytest.approx(1.0, abs=1e-5)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-2, weight_decay=0.1)
    unnoted = probed_step(UpdateProbe(), layer, optimizer, lambda: layer(x).pow(2).mean(), halve_each_step(optimizer),
                          call_on_gradients=False)  # the scheduler already halved the lr the probe reads
    assert unnoted["precision_kept"] == pytest.approx(2.0, rel=1e-2)


def test_sgd_has_no_precision_keys():
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 8)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    row = probed_step(UpdateProbe(), layer, optimizer, lambda: layer(torch.randn(4, 8)).pow(2).mean())
    assert "precision_kept" not in row and "swallowed_frac" not in row
    assert row["rel_update"] > 0 and row["changed_frac"] == 1.0 and row["trainable_params"] == 72


def test_base_drift_counts_a_changed_frozen_tensor():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    model[0].requires_grad_(False)
    optimizer = torch.optim.AdamW(model[1].parameters(), lr=1e-3)
    probe = UpdateProbe()

    def loss():
        return model(torch.randn(4, 4)).pow(2).mean()

    first = probed_step(probe, model, optimizer, loss)
    assert first["base_drift_tensors"] == 0 and first["base_drift_max_rel"] == 0.0
    sumsq = float(model[0].weight.double().pow(2).sum())
    with torch.no_grad():
        model[0].weight[0, 0] += 0.5  # a "frozen" weight changes between steps
    new_sumsq = float(model[0].weight.double().pow(2).sum())
    second = probed_step(probe, model, optimizer, loss)
    assert second["base_drift_tensors"] == 1
    assert second["base_drift_max_rel"] == pytest.approx(abs(new_sumsq - sumsq) / sumsq, rel=1e-9)
    assert second["frozen_in_optimizer"] == 0 and second["trainable_params"] == 18


def test_lora_delta_sq_matches_the_product():
    torch.manual_seed(0)
    a0, a1, b0, b1 = (torch.randn(*shape, dtype=torch.float64) for shape in ((4, 7), (4, 7), (5, 4), (5, 4)))
    direct = (b1 @ a1 - b0 @ a0).pow(2).sum()
    assert lora_delta_sq(a0, a1, b0, b1) == pytest.approx(float(direct), rel=1e-10)


def test_lora_trainer_healthy_then_optimizer_without_b():
    probe = UpdateProbe()
    trainer = build_trainer(tiny_config(*LORA), listeners=[ProbeSet([probe])])
    named = dict(trainer.trainable)
    a = sum(p.numel() for n, p in named.items() if "lora_A" in n)
    b = sum(p.numel() for n, p in named.items() if "lora_B" in n)

    good = trainer.step()
    assert good["grad_norm"] > 0, "no reward variance in the first batch; pick another seed"
    assert (good["update/trainable_params"], good["update/optimizer_params"]) == (a + b, a + b)
    assert (good["update/trainable_not_in_optimizer"], good["update/frozen_in_optimizer"]) == (0, 0)
    assert good["update/base_drift_tensors"] == 0
    assert good["update/precision_kept"] == pytest.approx(1.0, abs=1e-3)
    # B starts at 0: its relative update is inf, A (zero gradient, no weight decay) does not move on step 1
    assert good["update/rel_update/q_proj.lora_B"] == math.inf and good["update/rel_update/q_proj.lora_A"] == 0.0
    assert good["update/changed_frac"] == pytest.approx(b / (a + b), rel=1e-3)
    expected = []  # B was 0 before the step and A did not move: delta(scale * B @ A) = scale * B_after @ A
    for name, module in trainer.model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            delta = module.scaling["default"] * module.lora_B["default"].weight.detach() @ module.lora_A["default"].weight.detach()
            expected.append(float(delta.norm() / module.base_layer.weight.norm()))
    assert len(expected) == 4
    assert good["update/lora_effective_rel_update"] == pytest.approx(sum(expected) / 4, rel=1e-5)

    # the bug: an optimizer that holds only the A matrices
    b_before = {n: p.detach().clone() for n, p in named.items() if "lora_B" in n}
    trainer.optimizer = torch.optim.AdamW([p for n, p in named.items() if "lora_A" in n], lr=1e-3)
    rows = [trainer.step() for _ in range(2)]
    for row in rows:
        assert row["update/trainable_not_in_optimizer"] == b and row["update/optimizer_params"] == a
        assert row["update/rel_update/q_proj.lora_B"] == 0.0 and row["update/rel_update/v_proj.lora_B"] == 0.0
    assert all(torch.equal(b_before[n], named[n]) for n in b_before)
    assert rows[-1]["update/rel_update/q_proj.lora_A"] > 0  # A moves now that B is non-zero


def test_frozen_adapter_has_nothing_to_train():
    trainer = build_trainer(tiny_config(*LORA))
    lora = sum(p.numel() for _, p in trainer.trainable)
    for _, p in trainer.trainable:
        p.requires_grad_(False)  # PeftModel.from_pretrained(..., is_trainable=False)
    coverage = optimizer_coverage(trainer.model, trainer.optimizer)
    assert coverage == {"trainable_params": 0, "optimizer_params": lora, "trainable_not_in_optimizer": 0,
                        "frozen_in_optimizer": lora}
    row = UpdateProbe().on_step(StepRecord(1, model=trainer.model, optimizer=trainer.optimizer, pre_step_weights={}))
    assert row["trainable_params"] == 0 and "rel_update" not in row
    grads = GradientProbe().on_gradients(trainer.model, trainer.optimizer)
    assert grads["global_norm"] == 0.0 and math.isnan(grads["zero_grad_frac"])  # no fraction of nothing


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64, torch.uint8])
def test_bit_sums_change_with_any_single_stored_value(dtype):
    torch.manual_seed(0)
    weight = (torch.randn(64, 33) * 50).to(dtype)
    before = bit_sums([("w", weight)])["w"]
    assert bit_sums([("w", weight.clone())])["w"] == before
    for index in (0, 1000, 64 * 33 - 1):
        nudged = weight.clone().reshape(-1)
        if dtype.is_floating_point:  # the next representable value: the smallest change a dtype can store
            nudged[index] = torch.nextafter(nudged[index], torch.tensor(float("inf"), dtype=dtype))
        else:
            nudged[index] += 1
        assert bit_sums([("w", nudged)])["w"] != before, index
