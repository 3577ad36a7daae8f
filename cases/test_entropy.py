"""entropy: sampling diversity. `pytest cases/ -k entropy`; each case runs on the musique and gsm8k runs."""
import pytest

pytestmark = pytest.mark.entropy


def test_collapse(judge_case):
    judge_case("entropy.collapse")
