"""update: does the optimizer step really move the trainable weights. `pytest cases/ -k update`; each case runs on the musique and gsm8k runs."""
import pytest

pytestmark = pytest.mark.update


def test_weights_unchanged(judge_case):
    judge_case("update.weights_unchanged")


def test_optimizer_coverage(judge_case):
    judge_case("update.optimizer_coverage")


def test_precision_swallowed(judge_case):
    judge_case("update.precision_swallowed")


def test_too_small(judge_case):
    judge_case("update.too_small")


def test_base_drift(judge_case):
    judge_case("update.base_drift")


def test_clip_saturation(judge_case):
    judge_case("update.clip_saturation")


def test_nondeterministic_forward(judge_case):
    judge_case("update.nondeterministic_forward")
