"""kl: the KL penalty and drift from the reference. `pytest cases/ -k kl`; each case runs on the musique and gsm8k runs."""
import pytest

pytestmark = pytest.mark.kl


def test_penalty_dominates(judge_case):
    judge_case("kl.penalty_dominates")


def test_drift(judge_case):
    judge_case("kl.drift")
