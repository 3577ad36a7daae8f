"""masking: which tokens the loss trains on. `pytest cases/ -k masking`; each case runs on the musique and gsm8k runs."""
import pytest

pytestmark = pytest.mark.masking


def test_prompt_in_loss(judge_case):
    judge_case("masking.prompt_in_loss")


def test_padding_in_loss(judge_case):
    judge_case("masking.padding_in_loss")


def test_eos_excluded(judge_case):
    judge_case("masking.eos_excluded")


def test_env_tokens_in_loss(judge_case):
    judge_case("masking.env_tokens_in_loss")


def test_completion_excluded(judge_case):
    judge_case("masking.completion_excluded")
