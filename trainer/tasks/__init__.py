"""Tasks: data, prompt and reward for each task the trainer can run.

    from flatline.trainer.tasks import build_task
    task = build_task(config)            # loads and validates every row now, before any model
    for example in task.examples("train"): ...
    components = task.score(completion, example, completion_ids); reward = task.total(components)

bandit (one-token probe), arithmetic (generated sums, the control task), gsm8k (JSONL or hub), musique (JSONL,
hub, or generated offline), tools (multi-turn key-value lookup through a tool; flatline.trainer.episodes). Each example's `reference` (and the bandit's `reference_ids`) scores the maximum
total, so a reward self-check can run before training.
"""
from __future__ import annotations

import difflib

from flatline.common.errors import ConfigError
from flatline.trainer.tasks import arithmetic, bandit, gsm8k, musique, tools
from flatline.trainer.tasks.base import Example, Task

TASK_NAMES = ("bandit", "arithmetic", "gsm8k", "musique", "tools")
_BUILDERS = {"bandit": bandit.from_config, "arithmetic": arithmetic.from_config,
             "gsm8k": gsm8k.from_config, "musique": musique.from_config,
             "tools": tools.from_config}

__all__ = ["TASK_NAMES", "Example", "Task", "build_task"]


def build_task(config) -> Task:
    """The task `config.task`, with all rows loaded and validated (DataError) and weights resolved (ConfigError).

    Reads task, data, eval_data, train_size, eval_size, seed, reward_weights, bandit_arms, arithmetic_max_operand.
    """
    if config.task not in _BUILDERS:
        nearest = difflib.get_close_matches(str(config.task), TASK_NAMES, n=1)
        hint = f" (did you mean '{nearest[0]}'?)" if nearest else ""
        raise ConfigError(f"task: unknown task {config.task!r}{hint}; valid tasks: {', '.join(TASK_NAMES)}")
    for name in ("train_size", "eval_size"):
        if getattr(config, name) < 0:
            raise ConfigError(f"{name}: must be >= 0 (0 = all), got {getattr(config, name)}")
    if not isinstance(config.reward_weights, dict):
        raise ConfigError(f"reward_weights: must be a table of component = weight, got {type(config.reward_weights).__name__}")
    return _BUILDERS[config.task](config)
