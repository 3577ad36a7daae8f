"""progress: is the run still improving. `pytest cases/ -k progress`; each case runs on the musique and gsm8k runs."""
import pytest

pytestmark = pytest.mark.progress


def test_plateau(judge_case):
    judge_case("progress.plateau")
