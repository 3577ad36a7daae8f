"""entropy: sampling diversity (collapse) and entropy running away (explosion). `pytest cases/ -k entropy`; each case runs on the musique and gsm8k runs."""
import pytest

pytestmark = pytest.mark.entropy


def test_collapse(judge_case):
    judge_case("entropy.collapse")


def test_explosion(judge_case):
    judge_case("entropy.explosion")
