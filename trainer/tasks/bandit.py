"""Bandit: the one-token probe task, GRPO's form of Andy Jones' probe environment 4 (one step, reward
depends on the action, optimum known by hand).

One prompt; the completion is ONE token (run it with max_completion_length = 1). The vocabulary is split into
`bandit_arms` arms by token_id % bandit_arms; arm 0 pays 1.0 and the others 0.0. A uniformly random policy
earns about 1/arms, a policy that has learnt earns 1.0. The reward is dense on purpose: with a random model a
sparse one (one good token in 49k) gives groups with no reward variance and nothing to learn from.

There is no held-out split: eval is the same prompt (under another id), and measures the same arm choice
greedily. The score reads `completion_ids[0]` only; the text is ignored, so the reference is given as ids.
"""
from __future__ import annotations

from flatline.common.errors import ConfigError
from flatline.trainer.tasks.base import Example, Task, resolve_weights

PROMPT = "Pick a token."
GOOD_ARM = 0
DEFAULT_ARMS = 4
DEFAULT_WEIGHTS = {"reward": 1.0}


def arm_of(token_id: int, arms: int) -> int:
    """The arm a token id belongs to."""
    return token_id % arms


def arm_reward(token_id: int, arms: int) -> float:
    """1.0 for a token of the good arm, else 0.0."""
    return 1.0 if arm_of(token_id, arms) == GOOD_ARM else 0.0


def chance_reward(vocab_size: int, arms: int) -> float:
    """Expected reward of a policy uniform over the vocabulary: the good arm's share of the ids."""
    return sum(arm_reward(token_id, arms) for token_id in range(vocab_size)) / vocab_size


def make_example(example_id: str) -> Example:
    """The single prompt; its reference completion is token 0 (arm 0)."""
    return Example(id=example_id, messages=[{"role": "user", "content": PROMPT}], row={"prompt": PROMPT},
                   reference="", reference_ids=(GOOD_ARM,))


class BanditTask(Task):
    """Component "reward": 1.0 when the first completion token is in arm 0, else 0.0 (no tokens: 0.0)."""

    name = "bandit"
    components = tuple(DEFAULT_WEIGHTS)

    def __init__(self, arms: int, weights: dict[str, float]):
        super().__init__([make_example("bandit-train")], [make_example("bandit-eval")], weights)
        self.arms = arms

    def score(self, completion: str, example: Example, completion_ids: list[int]) -> dict[str, float | None]:
        reward = arm_reward(int(completion_ids[0]), self.arms) if len(completion_ids) else 0.0
        return {"reward": reward}


def from_config(config) -> BanditTask:
    """`bandit_arms` arms (>= 2); `train_size` and `eval_size` do not apply (one prompt)."""
    if config.data or config.eval_data:
        raise ConfigError("data: task bandit has a single built-in prompt; leave data and eval_data empty")
    if config.bandit_arms < 2:
        raise ConfigError(f"bandit_arms: must be >= 2 (one arm is always right, nothing to learn), got {config.bandit_arms}")
    return BanditTask(config.bandit_arms, resolve_weights("bandit", DEFAULT_WEIGHTS, config.reward_weights))
