"""reward: is there a reward signal, and is it the right one. `pytest cases/ -k reward`; each case runs on the musique and gsm8k runs."""
import pytest

pytestmark = pytest.mark.reward


def test_no_signal(judge_case):
    judge_case("reward.no_signal")


def test_component_dominance(judge_case):
    judge_case("reward.component_dominance")


def test_parse_failures(judge_case):
    judge_case("reward.parse_failures")


def test_hacking(judge_case):
    judge_case("reward.hacking")
