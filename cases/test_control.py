"""control: does the same trainer and config learn the GSM8K-format control (infrastructure vs task signal). `pytest cases/ -k control`; each case runs on the musique and gsm8k runs."""
import pytest

pytestmark = pytest.mark.control


def test_learns(judge_case):
    judge_case("control.learns")
