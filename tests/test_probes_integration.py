"""Probes in a real run: they never change training, they reach metrics.jsonl, `--probes` selects the tiers."""
import json

import pytest
import torch

from flatline.harness.cli import main
from flatline.probes import for_trainer
from flatline.trainer.loop import build_trainer
from tests.conftest import tiny_config

FAMILIES = ("advantage", "reward", "masks", "gradients", "update", "sync", "length", "policy")


def final_weights(level: str, *overrides: str) -> dict[str, torch.Tensor]:
    cfg = tiny_config(f"probes={level}", "max_steps=4", "seed=5", *overrides, task="arithmetic")
    trainer = build_trainer(cfg)
    trainer.listeners.extend(for_trainer(trainer))
    for _ in range(cfg.max_steps):
        trainer.step()
    return {name: p.detach().clone() for name, p in trainer.model.state_dict().items()}


@pytest.mark.parametrize("overrides", [(), ("lora_r=4", "lora_dropout=0.1", "learning_rate=1e-3")],
                         ids=["full-finetune", "lora-with-dropout"])
def test_probes_leave_training_bit_identical(overrides):
    bare = final_weights("none", *overrides)
    probed = final_weights("full", *overrides)
    assert bare.keys() == probed.keys()
    for name in bare:
        assert torch.equal(bare[name], probed[name]), name


def test_cli_probes_reach_metrics_jsonl(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('task = "arithmetic"\nmodel = "tiny-random"\nlora_r = 4\nmax_steps = 2\nreport_to = "none"\n'
                      'num_generations = 4\nper_device_train_batch_size = 8\nmax_completion_length = 4\n'
                      'train_size = 16\neval_size = 4\nprogress_bar = false\n')
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--probes", "full"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for family in FAMILIES:
        assert any(key.startswith(f"{family}/") for key in rows[0]), family
    assert "masks/alignment_max_diff" in rows[0]
    assert main(["train", str(config), "--out", str(tmp_path / "bare"), "--probes", "none"]) == 0
    bare = json.loads((tmp_path / "bare" / "metrics.jsonl").read_text().splitlines()[0])
    assert not any(key.startswith(f"{family}/") for family in FAMILIES for key in bare)


def test_a_failing_probe_disables_itself_with_one_warning():
    from flatline.probes import Probe, ProbeSet

    class Broken(Probe):
        family = "broken"

        def on_step(self, record):
            raise ZeroDivisionError("probe bug")

    trainer = build_trainer(tiny_config())
    probes = ProbeSet([Broken()])
    trainer.listeners.append(probes)
    with pytest.warns(UserWarning, match="probe broken raised ZeroDivisionError"):
        trainer.step()
    trainer.step()
    assert probes.probes == []
