"""sync: is the sampler the policy being trained. `pytest cases/ -k sync`; each case runs on the musique and gsm8k runs."""
import pytest

pytestmark = pytest.mark.sync


def test_sampler_mismatch(judge_case):
    judge_case("sync.sampler_mismatch")


def test_importance_weights(judge_case):
    judge_case("sync.importance_weights")


def test_sampling_semantics(judge_case):
    judge_case("sync.sampling_semantics")


def test_stale_weights(judge_case):
    judge_case("sync.stale_weights")
