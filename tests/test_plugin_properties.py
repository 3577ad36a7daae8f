"""Property tests of the plug points (flatline/harness/properties/): flatline's own advantage_fn, mask_fn and
loss_fn keep every property, the known-bad plug-ins (diagnostics/selftest/plugins.py, and masks written here)
break the ones they should, and a buggy advantage_fn named in a config fails `pytest cases/ -k advantage` with
Hypothesis's minimal counterexample. No model is loaded; about 30 s.

    .venv/bin/python -m pytest -q tests/test_plugin_properties.py
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flatline.harness.properties import find_violations, judge_plugin
from flatline.harness.properties.advantage import check_flat_group_is_zero
from flatline.harness.properties.loss import check_gradient_follows_advantage
from flatline.harness.properties.masks import chat_tokenizer
from flatline.harness.selftest import plugins as bad
from flatline.trainer.algorithm import completion_mask, group_advantages, policy_loss
from flatline.trainer.config import load_config

REPO = Path(__file__).resolve().parent.parent
LOSS_OPTIONS = dict(epsilon_low=0.2, epsilon_high=0.28, max_completion_length=8)
BUGGY_MODULE = '''
def advantages(rewards, num_generations, scale_rewards="group", eps=1e-4):
    """TRL's group normalisation in float32: a flat group of awkward rewards gets advantages of ~1e-3."""
    grouped = rewards.view(-1, num_generations)  # [P, G]
    return ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + eps)).reshape(-1)
'''


@pytest.fixture(scope="module")
def tokenizer():
    return chat_tokenizer()


def names(violations) -> list[str]:
    return [v.property.name for v in violations]


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_default_advantages_keep_every_property(scale):
    assert find_violations("advantage_fn", group_advantages, scale_rewards=scale, eps=1e-4) == []


def test_default_mask_keeps_every_property_on_smollm2_chats(tokenizer):
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # the pad == eos case the mask must survive
    assert find_violations("mask_fn", completion_mask, tokenizer=tokenizer) == []


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_default_loss_keeps_every_property(loss_type):
    assert find_violations("loss_fn", policy_loss, loss_type=loss_type, **LOSS_OPTIONS) == []


@pytest.mark.parametrize("plug_in, broken", [
    (bad.batch_normalised_advantages, "groups_sum_to_zero"),
    (bad.shifted_group_advantages, "groups_sum_to_zero"),
    (bad.float32_std_advantages, "flat_group_is_zero"),
])
def test_bad_advantages_are_caught_with_a_counterexample(plug_in, broken):
    found = find_violations("advantage_fn", plug_in, scale_rewards="group", eps=1e-4)
    assert broken in names(found)
    violation = found[names(found).index(broken)]
    assert violation.plug_in == f"flatline.harness.selftest.plugins.{plug_in.__name__}"
    assert violation.counterexample.startswith(f"{broken}(")
    assert "Falsifying example" in violation.describe() and violation.plug_in in violation.describe()


def test_float32_trap_breaks_only_the_flat_group_property():
    found = find_violations("advantage_fn", bad.float32_std_advantages, scale_rewards="group", eps=1e-4)
    assert names(found) == ["flat_group_is_zero"]
    assert "num_generations=8" in found[0].counterexample


def test_check_functions_raise_on_the_trap_value_and_pass_the_default():
    rewards = [1.350639] * 8
    check_flat_group_is_zero(group_advantages, rewards, 8, 0)
    with pytest.raises(AssertionError, match="identical rewards"):
        check_flat_group_is_zero(bad.float32_std_advantages, rewards, 8, 0)
    with pytest.raises(AssertionError, match="against its advantage"):
        check_gradient_follows_advantage(bad.sign_flipped_loss, [[-1.0, -2.0]], [0.5], [[1, 1]])


def test_a_mask_from_the_pad_id_drops_the_eos_when_pad_is_eos(tokenizer):
    def pad_mask(completion_ids, eos_token_ids):
        return (completion_ids != tokenizer.pad_token_id).long()  # [N, T]

    found = find_violations("mask_fn", pad_mask, tokenizer=tokenizer)
    assert names(found) == ["ends_at_first_eos"]
    assert "leaves the EOS itself out of the loss" in found[0].error


def test_a_mask_that_drops_truncated_completions_is_caught(tokenizer):
    def ended_only(completion_ids, eos_token_ids):
        ended = torch.isin(completion_ids, torch.tensor(eos_token_ids)).any(dim=1, keepdim=True)  # [N, 1]
        return completion_mask(completion_ids, eos_token_ids) * ended  # [N, T]

    assert names(find_violations("mask_fn", ended_only, tokenizer=tokenizer)) == ["keeps_truncated_whole"]


def test_a_loss_mask_copied_from_the_attention_mask_puts_the_prompt_in_the_loss(tokenizer):
    found = find_violations("mask_fn", bad.attention_mask_as_loss_mask, tokenizer=tokenizer)
    assert names(found) == ["leaves_prompt_out"]
    assert "the model would be trained to predict its own prompt" in found[0].error


def test_a_full_sequence_mask_that_leaves_the_prompt_out_keeps_every_property(tokenizer):
    def full_sequence(completion_ids, eos_token_ids, prompt_ids, prompt_mask):
        return torch.cat([torch.zeros_like(prompt_ids), completion_mask(completion_ids, eos_token_ids)], dim=1)

    assert find_violations("mask_fn", full_sequence, tokenizer=tokenizer) == []


def test_a_mask_of_the_wrong_width_fails_sane_with_the_shapes(tokenizer):
    def one_short(completion_ids, eos_token_ids):
        return completion_mask(completion_ids, eos_token_ids)[:, 1:]

    found = find_violations("mask_fn", one_short, tokenizer=tokenizer)
    assert "sane" in names(found) and "must be [N, T]" in found[0].error


@pytest.mark.parametrize("plug_in, message", [
    (bad.detached_loss, "no autograd graph"),
    (bad.sign_flipped_loss, "against its advantage"),
])
def test_bad_losses_are_caught(plug_in, message):
    found = find_violations("loss_fn", plug_in, loss_type="dapo", **LOSS_OPTIONS)
    assert "gradient_follows_advantage" in names(found)
    assert message in found[names(found).index("gradient_follows_advantage")].error


def test_a_loss_that_ignores_the_mask_is_caught():
    def unmasked(logps, old_logps, advantages, mask, **kwargs):
        return policy_loss(logps, old_logps, advantages, torch.ones_like(mask), **kwargs)

    assert names(find_violations("loss_fn", unmasked, loss_type="bnpo", **LOSS_OPTIONS)) == \
        ["masked_tokens_get_no_gradient"]


def test_verdicts_name_the_plug_in_and_carry_the_counterexample():
    cfg = load_config(None, ["model=tiny-random", "advantage_fn=flatline.harness.selftest.plugins:float32_std_advantages"])
    verdict, failure = judge_plugin("advantage_fn", cfg)
    assert verdict.id == "plugins.advantage_fn" and verdict.status == "fail"
    assert verdict.evidence["plug_in"] == "flatline.harness.selftest.plugins.float32_std_advantages"
    assert "FlatGroup(rewards=[1.35063898563385" in verdict.evidence["counterexample"]
    assert len(verdict.evidence["counterexample"]) <= 500 and verdict.prescription
    assert "Falsifying example" in failure and "flatline.harness.selftest.plugins.float32_std_advantages" in failure
    passed, failure = judge_plugin("loss_fn", load_config(None, ["model=tiny-random"]))
    assert passed.status == "pass" and passed.evidence["plug_in"] == "flatline.trainer.algorithm.policy_loss" and failure == ""


def test_cases_fail_a_buggy_advantage_fn_from_the_users_config(tmp_path):
    (tmp_path / "badplug.py").write_text(BUGGY_MODULE)
    config = tmp_path / "my.toml"
    config.write_text(f'task = "musique"\nmodel = "tiny-random"\nadvantage_fn = "badplug:advantages"\n'
                      f'report_dir = "{tmp_path / "reports"}"\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "FLATLINE_LOG": str(tmp_path / "log.md")}
    done = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "cases" / "test_plugins.py"), "-p",
                           "no:cacheprovider", "--flatline-config", str(config), "-k", "advantage"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "1 failed" in output and "2 deselected" in output  # only the advantage_fn case ran
    assert "Falsifying example" in output and "badplug.advantages violates advantage_fn.flat_group_is_zero" in output
    (report,) = (tmp_path / "reports").iterdir()  # no run trained: the verdict has a report of its own
    verdict, = json.loads((report / "diagnosis.json").read_text())["verdicts"]
    assert verdict["id"] == "plugins.advantage_fn" and verdict["status"] == "fail"
    assert "num_generations=8" in verdict["evidence"]["counterexample"]
    assert not (tmp_path / "log.md").exists()
