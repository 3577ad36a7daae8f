"""The loop on the tiny random model: learning, the step record seam, plug points, determinism, accumulation."""
import json
import math
from types import SimpleNamespace

import pytest
import torch

from flatline.common.errors import ConfigError
from flatline.trainer.config import load_config
from flatline.trainer.loop import build_trainer, lr_factor
from flatline.trainer.rollout import combine_rewards
from flatline.trainer.run import train
from tests.conftest import Recorder, tiny_config

TRL_NAMES = ("reward", "reward_std", "frac_reward_zero_std", "completions/clipped_ratio", "completions/mean_length",
             "grad_norm", "entropy", "loss", "learning_rate")


def test_bandit_config_learns_from_chance_to_above_0_9(tmp_path):
    cfg = load_config("configs/bandit.toml", ["progress_bar=false"])
    run_dir = train(cfg, out=tmp_path / "bandit", log=lambda *_: None)
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert summary["reward_first"] < 0.6  # chance is 1/bandit_arms = 0.25
    assert summary["reward_last"] >= 0.9
    assert len(rows) == cfg.max_steps
    for name in TRL_NAMES:
        assert all(isinstance(row[name], (int, float)) for row in rows), name
    assert "eval/reward" in rows[0] and "eval/reward" in rows[-1]
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == cfg.max_steps and {"prompt", "completion", "masked_text", "reward", "advantage"} <= set(samples[0])
    assert load_config(run_dir / "config.toml") == cfg


def test_run_directory_is_never_overwritten(tmp_path):
    cfg = tiny_config("max_steps=1")
    first = train(cfg, out=tmp_path / "run", log=lambda *_: None)
    before = (first / "metrics.jsonl").read_bytes()
    second = train(cfg, out=tmp_path / "run", log=lambda *_: None)
    assert second == tmp_path / "run-2"
    assert (first / "metrics.jsonl").read_bytes() == before


def test_same_seed_same_run():
    rows = []
    for _ in range(2):
        trainer = build_trainer(tiny_config("seed=3"))
        rows.append([trainer.step() for _ in range(2)])
    for a, b in zip(*rows):
        for key in ("reward", "loss", "grad_norm", "entropy"):
            assert a[key] == b[key], key


def test_sampler_and_trainer_agree_on_logprobs():
    trainer = build_trainer(tiny_config("max_completion_length=8", "temperature=0.7", task="arithmetic"))
    rollout = trainer.rollout()
    trainer_logps = trainer.logprobs_no_grad(rollout, trainer.model)
    mask = rollout.completion_mask.bool()
    assert (trainer_logps - rollout.samples.sampler_logprobs)[mask].abs().max() < 1e-4


def test_listeners_get_the_step_record_and_their_numbers_are_logged():
    recorder = Recorder()
    counter = SimpleNamespace(on_step=lambda record: {"test/seen_step": record.step})
    trainer = build_trainer(tiny_config(), listeners=[recorder, counter])
    row = trainer.step()
    record = recorder.records[0]
    N = trainer.cfg.per_device_train_batch_size
    assert record.step == 1 and len(record.prompts) == N and len(record.completions) == N
    assert record.trainer_logprobs.shape == record.sampler_logprobs.shape == record.completion_ids.shape
    assert record.advantages.shape == record.rewards.shape == record.completion_lengths.shape == (N,)
    G = trainer.cfg.num_generations
    assert record.group_ids == [e.id for e in trainer.last_rollout.examples for _ in range(G)]
    assert row["test/seen_step"] == 1
    assert record.optimizer is trainer.optimizer
    changed = [name for name, p in trainer.trainable if not torch.equal(record.pre_step_weights[name], p)]
    assert changed or row["grad_norm"] == 0  # the snapshot is from before the step


def test_a_raising_listener_is_disabled_with_one_warning():
    calls = []

    def broken(record):
        calls.append(record.step)
        raise RuntimeError("probe bug")

    trainer = build_trainer(tiny_config(), listeners=[SimpleNamespace(name="broken", on_step=broken)])
    with pytest.warns(UserWarning, match="listener broken raised RuntimeError: probe bug; it is disabled"):
        trainer.step()
    row = trainer.step()
    assert calls == [1] and trainer.listeners == [] and row["step"] == 2


def test_no_listener_no_step_record(monkeypatch):
    import flatline.trainer.loop as loop

    def refuse(*args, **kwargs):
        raise AssertionError("a StepRecord was built with nothing listening")

    trainer = build_trainer(tiny_config())
    monkeypatch.setattr(loop, "StepRecord", refuse)
    assert trainer.step()["step"] == 1


def test_gradient_accumulation_matches_one_big_batch():
    def grads(*overrides):
        trainer = build_trainer(tiny_config("loss_type=dapo", "max_grad_norm=0", *overrides))
        for group in trainer.optimizer.param_groups:
            group["lr"] = 0.0  # keep weights; look at gradients only
        captured = {}
        original = trainer.optimizer.zero_grad
        trainer.optimizer.zero_grad = lambda set_to_none=True: (captured.update(
            {n: p.grad.clone() for n, p in trainer.trainable if p.grad is not None}), original(set_to_none))
        trainer.step()
        return captured

    one = grads("per_device_train_batch_size=8", "gradient_accumulation_steps=1")
    two = grads("per_device_train_batch_size=4", "gradient_accumulation_steps=2")
    assert one.keys() == two.keys()
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-6, rtol=1e-4), name


def test_num_iterations_reuses_the_rollout_with_old_logprobs():
    trainer = build_trainer(tiny_config("num_iterations=2", "max_steps=2"))
    trainer.step()
    first = trainer.last_rollout
    assert first.old_logprobs is not None
    row = trainer.step()
    assert trainer.last_rollout is first
    assert "clip_ratio/region_mean" in row


@pytest.mark.parametrize("lora_r", [0, 4])
def test_kl_to_the_reference(lora_r):
    trainer = build_trainer(tiny_config("beta=0.1", f"lora_r={lora_r}", "lora_target_modules=['q_proj','v_proj']"))
    rows = [trainer.step() for _ in range(3)]
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference before any update
    moved = [i for i, row in enumerate(rows[:-1]) if row["grad_norm"] > 0]
    assert moved, "no step had a gradient; pick another seed"
    assert rows[moved[0] + 1]["kl"] > 0 and "kl_loss" in rows[-1]


def test_plug_points_replace_the_defaults(tmp_path, monkeypatch):
    (tmp_path / "user_plugins.py").write_text(
        "import torch\n"
        "CALLS = []\n"
        "def batch_advantages(rewards, num_generations, scale_rewards, eps):\n"
        "    CALLS.append('advantage')\n"
        "    return rewards - rewards.mean()\n"
        "def length_reward(prompts, completions, **columns):\n"
        "    CALLS.append('reward')\n"
        "    return [float(len(c)) for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    trainer = build_trainer(tiny_config("advantage_fn=user_plugins:batch_advantages", "reward=user_plugins:length_reward"))
    row = trainer.step()
    import user_plugins

    assert user_plugins.CALLS == ["reward", "advantage"]
    assert "rewards/length_reward/mean" in row


def test_a_raising_reward_is_counted_not_fatal(tmp_path, monkeypatch):
    (tmp_path / "flaky.py").write_text(
        "def reward(prompts, completions):\n    raise ValueError('cannot parse')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    trainer = build_trainer(tiny_config("reward=flaky:reward"))
    with pytest.warns(UserWarning, match="cannot parse"):
        row = trainer.step()
    assert row["rewards/errors"] == 8 and row["rewards/unscored"] == 8
    assert row["grad_norm"] == 0.0  # unscored completions get zero advantage


def test_missing_plugin_function_is_a_config_error(tmp_path, monkeypatch):
    (tmp_path / "empty_mod.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="'mask_fn': module 'empty_mod' has no function 'mask'"):
        build_trainer(tiny_config("mask_fn=empty_mod:mask"))


def test_combine_rewards_weights_and_unscorable():
    rewards = combine_rewards({"em": [1.0, None, None], "format": [1.0, 1.0, None]}, {"em": 0.5, "format": 0.2})
    assert rewards[:2].tolist() == pytest.approx([0.7, 0.2])
    assert math.isnan(rewards[2])


def test_lr_schedule():
    assert [lr_factor(s, 10, 0.2, "constant") for s in range(4)] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])
    assert lr_factor(2, 10, 0.2, "linear") == 1.0 and lr_factor(9, 10, 0.2, "linear") == pytest.approx(1 / 8)
    assert lr_factor(6, 10, 0.2, "cosine") == pytest.approx(0.5)


def test_eval_metrics_per_component():
    trainer = build_trainer(tiny_config(task="arithmetic"))
    row = trainer.evaluate()
    assert set(row) >= {"eval/reward", "eval/correct", "eval/mean_length", "eval/clipped_ratio"}
    assert row["eval/reward"] == row["eval/correct"]  # one component, weight 1
    assert 1 <= row["eval/mean_length"] <= trainer.cfg.max_completion_length


FULL_SEQUENCE_MASKS = (
    "import torch\n"
    "from flatline.trainer.algorithm import completion_mask\n"
    "def no_prompt(completion_ids, eos_token_ids, prompt_ids, prompt_mask):\n"
    "    return torch.cat([torch.zeros_like(prompt_mask), completion_mask(completion_ids, eos_token_ids)], dim=1)\n"
    "def with_prompt(completion_ids, eos_token_ids, **batch):\n"
    "    return torch.cat([batch['prompt_mask'], completion_mask(completion_ids, eos_token_ids)], dim=1)\n"
    "def wrong_width(completion_ids, eos_token_ids):\n"
    "    return completion_mask(completion_ids, eos_token_ids)[:, :-1]\n")


@pytest.fixture
def mask_plugins(tmp_path, monkeypatch):
    (tmp_path / "full_masks.py").write_text(FULL_SEQUENCE_MASKS)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_a_full_sequence_mask_without_prompt_tokens_trains_exactly_as_the_default(mask_plugins):
    rows = [build_trainer(tiny_config("max_completion_length=4", *extra), listeners=[Recorder()]).step()
            for extra in ((), ("mask_fn=full_masks:no_prompt",))]
    for key in ("loss", "grad_norm", "reward"):
        assert rows[0][key] == rows[1][key], key


@pytest.mark.parametrize("extra", [(), ("num_iterations=2", "beta=0.1")])
def test_prompt_tokens_in_a_full_sequence_mask_are_really_trained_on(mask_plugins, extra):
    from flatline.probes.base import ProbeContext
    from flatline.probes.masks import MaskProbe

    recorder = Recorder()
    trainer = build_trainer(tiny_config("mask_fn=full_masks:with_prompt", "max_completion_length=4", *extra),
                            listeners=[recorder])
    rollout = trainer.rollout()
    assert rollout.prompt_loss_mask is not None and rollout.loss_mask.shape == (
        rollout.completion_mask.size(0), rollout.samples.prompt_ids.size(1) + rollout.completion_mask.size(1))
    logps = trainer.logprobs_no_grad(rollout, trainer.model)  # [N, L+T]
    samples = rollout.samples
    sequence = torch.cat([samples.prompt_ids, samples.completion_ids], dim=1)
    attention = torch.cat([samples.prompt_mask, torch.ones_like(samples.completion_ids)], dim=1)
    with torch.no_grad():
        logits = trainer.model(input_ids=sequence, attention_mask=attention,
                               position_ids=(attention.cumsum(1) - 1).clamp(min=0)).logits
    expected = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, sequence[:, 1:, None]).squeeze(-1)
    real = rollout.loss_mask[:, 1:].bool()
    assert (logps[:, 1:] - expected)[real].abs().max() < 1e-4  # prompt and completion tokens alike
    row = trainer.step()
    assert math.isfinite(row["loss"]) and row["grad_norm"] > 0
    stats = MaskProbe(ProbeContext.from_trainer(trainer)).on_step(recorder.records[0])
    assert stats["prompt_frac"] > 0.5  # the bandit's prompt is longer than its completion


def test_a_mask_of_the_wrong_shape_names_the_plug_point_and_the_shapes(mask_plugins):
    from flatline.common.errors import PluginError

    trainer = build_trainer(tiny_config("mask_fn=full_masks:wrong_width", "max_completion_length=4"))
    with pytest.raises(PluginError, match=r"mask_fn wrong_width returned a mask of shape .*must be \[N, T\]"):
        trainer.step()
