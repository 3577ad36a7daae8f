"""advantage: groups without reward variance, and advantage numerics. `pytest cases/ -k advantage`; each case runs on the musique and gsm8k runs."""
import pytest

pytestmark = pytest.mark.advantage


def test_degenerate_groups(judge_case):
    judge_case("advantage.degenerate_groups")


def test_numerics(judge_case):
    judge_case("advantage.numerics")


def test_grouping(judge_case):
    judge_case("advantage.grouping")
