"""episodes: multi-turn tool-use episodes (`pytest cases/ -k episodes`). Each is skipped on a single-turn run (no
episodes/* metrics); run the cases with `--flatline-config configs/tools.toml` to judge the tools environment."""
import pytest

pytestmark = pytest.mark.episodes


def test_early_termination(judge_case):
    judge_case("episodes.early_termination")


def test_infra_scored_as_reward(judge_case):
    judge_case("episodes.infra_scored_as_reward")


def test_tool_call_failures(judge_case):
    judge_case("episodes.tool_call_failures")


def test_bonus_dominates(judge_case):
    judge_case("episodes.bonus_dominates")


def test_template_not_prefix_preserving(judge_case):
    judge_case("episodes.template_not_prefix_preserving")
