"""gradients: do gradients flow, stay finite, and survive clipping. `pytest cases/ -k gradients`; each case runs on the musique and gsm8k runs."""
import pytest

pytestmark = pytest.mark.gradients


def test_no_flow(judge_case):
    judge_case("gradients.no_flow")


def test_non_finite(judge_case):
    judge_case("gradients.non_finite")


def test_clipping_dominates(judge_case):
    judge_case("gradients.clipping_dominates")


def test_spikes(judge_case):
    judge_case("gradients.spikes")


def test_zero_loss_is_no_fault(judge_case):
    judge_case("gradients.zero_loss")
