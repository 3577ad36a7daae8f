"""Plug-ins: Hypothesis property tests of the config's advantage_fn, mask_fn and loss_fn (flatline's defaults when
it names none). No model is trained; each case runs once, whatever the task.

    pytest cases/ --flatline-config my.toml -k advantage     # advantage_fn (with the advantage cases)
    pytest cases/test_plugins.py -k masking                  # mask_fn only
    pytest cases/test_plugins.py -k gradients                # loss_fn only
"""
import pytest

pytest.importorskip("hypothesis", reason="the plug-in property cases need Hypothesis: pip install hypothesis")


@pytest.mark.advantage
def test_advantage_fn(judge_plugin):
    judge_plugin("advantage_fn")


@pytest.mark.masking
def test_mask_fn(judge_plugin):
    judge_plugin("mask_fn")


@pytest.mark.gradients
def test_loss_fn(judge_plugin):
    judge_plugin("loss_fn")
