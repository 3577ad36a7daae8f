"""attach() on a plain PyTorch policy-gradient loop (no language model): numbers each step, training unchanged."""
import warnings

import pytest
import torch

from flatline.probes.attach import attach

STEPS = 5


class Policy(torch.nn.Module):
    """A frozen feature layer (a pretrained encoder) under a small trainable MLP over 4 actions."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Linear(6, 16)
        self.body = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
        self.features.requires_grad_(False)

    def forward(self, states):
        return self.body(torch.relu(self.features(states)))


TRAINABLE = 16 * 32 + 32 + 32 * 4 + 4


def run(optimizer_name: str, monitored: bool, max_grad_norm: float = 0.05, every: int = 1, on_monitor=None):
    """REINFORCE on random states, reward 1 for action 0; returns the final weights, the metrics rows and the
    pre-clip norms clip_grad_norm_ returned."""
    torch.manual_seed(0)
    policy = Policy()
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = (torch.optim.Adam(params, lr=1e-2, weight_decay=0.01) if optimizer_name == "adam"
                 else torch.optim.SGD(params, lr=0.1, momentum=0.9))
    monitor = attach(policy, optimizer, max_grad_norm=max_grad_norm, every=every) if monitored else None
    if on_monitor:
        on_monitor(monitor)
    rows, norms = [], []
    for _ in range(STEPS):
        dist = torch.distributions.Categorical(logits=policy(torch.randn(32, 6)))
        actions = dist.sample()
        rewards = (actions == 0).float()
        loss = -(dist.log_prob(actions) * (rewards - rewards.mean())).mean()
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm)))
        optimizer.step()
        optimizer.zero_grad()
        if monitor is not None:
            rows.append(monitor.metrics())
    weights = {name: t.clone() for name, t in policy.state_dict().items()}
    return weights, rows, norms, monitor


@pytest.mark.parametrize("optimizer_name", ["adam", "sgd"])
def test_attach_reports_each_step_and_leaves_training_bit_identical(optimizer_name):
    bare, _, bare_norms, _ = run(optimizer_name, monitored=False)
    probed, rows, norms, monitor = run(optimizer_name, monitored=True)
    assert bare.keys() == probed.keys() and all(torch.equal(bare[k], probed[k]) for k in bare)
    assert norms == bare_norms and len(rows) == STEPS and monitor.step == STEPS
    for row, norm in zip(rows, norms):
        assert row["update/rel_update"] > 0 and row["update/changed_frac"] == 1.0
        assert row["update/trainable_params"] == TRAINABLE and row["update/optimizer_params"] == TRAINABLE
        assert row["update/trainable_not_in_optimizer"] == 0 and row["update/frozen_in_optimizer"] == 0
        assert row["update/base_drift_tensors"] == 0  # the frozen feature layer stayed put
        assert row["gradients/global_norm"] == pytest.approx(norm, rel=1e-5)  # pre-clip, though the loop clipped
        assert row["gradients/clip_coef"] == pytest.approx(min(1.0, 0.05 / norm), rel=1e-5)
        assert {k for k in row if k.startswith("gradients/norm/")} == {"gradients/norm/body.0", "gradients/norm/body.2"}
        assert row["gradients/nonfinite"] == 0 and row["gradients/params_without_grad"] == 0
        if optimizer_name == "adam":
            assert row["update/precision_kept"] == pytest.approx(1.0, abs=1e-3) and row["update/swallowed_frac"] == 0.0
        else:
            assert "update/precision_kept" not in row
    assert any(row["gradients/clip_coef"] < 1 for row in rows), "clipping never acted; lower max_grad_norm"


def test_unclipped_steps_report_the_optimizer_gradients():
    _, rows, norms, _ = run("adam", monitored=True, max_grad_norm=1e3)
    for row, norm in zip(rows, norms):
        assert row["gradients/global_norm"] == pytest.approx(norm, rel=1e-5) and row["gradients/clip_coef"] == 1.0


def test_schedule_detach_and_empty_before_the_first_step():
    seen = []
    _, rows, _, monitor = run("adam", monitored=True, every=2,
                              on_monitor=lambda m: seen.append(m.metrics()))
    assert seen == [{}]
    assert [bool(row) for row in rows] == [True, False, True, False, True]
    monitor.detach()
    optimizer = monitor.optimizer
    optimizer.step()  # no gradients: a no-op step, and the hooks are gone
    assert monitor.step == STEPS and monitor.metrics() == rows[-1]


def test_a_raising_probe_is_disabled_with_one_warning_and_training_is_unchanged():
    def break_update(monitor):
        def broken(record):
            raise ZeroDivisionError("probe bug")

        monitor.probes.probes[1].on_step = broken

    bare, _, _, _ = run("adam", monitored=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probed, rows, _, _ = run("adam", monitored=True, on_monitor=break_update)
    assert [str(w.message) for w in caught if "probe bug" in str(w.message)] == [
        "probe update raised ZeroDivisionError: probe bug; it is disabled for the rest of the run"]
    assert all(torch.equal(bare[k], probed[k]) for k in bare)
    assert all("gradients/global_norm" in row and not any(k.startswith("update/") for k in row) for row in rows)
