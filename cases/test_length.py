"""length: truncation, context overflow, length growth and collapse. `pytest cases/ -k length`; each case runs on the musique and gsm8k runs."""
import pytest

pytestmark = pytest.mark.length


def test_truncation(judge_case):
    judge_case("length.truncation")


def test_context_overflow(judge_case):
    judge_case("length.context_overflow")


def test_growth(judge_case):
    judge_case("length.growth")


def test_collapse(judge_case):
    judge_case("length.collapse")
