"""How an episode ends: one typed outcome per rollout.

- finished: the model gave a final answer (a turn with no tool call), which was graded;
- max_turns: still calling tools after max_turns turns;
- context_full: the episode's context budget (max_episode_length) ran out;
- env_budget_exhausted: the environment's step budget was empty when the model called a tool;
- tool_error: the environment itself raised (infrastructure, not the model's fault);
- timeout: the episodes' wall-clock limit (episode_timeout_s) passed;
- grader_error: grading the final answer raised or overran grader_timeout_s.

The last three are infrastructure failures: never the model's doing, so never silently a reward of 0. With
infra_failure = "exclude" they get no reward (NaN: advantage 0); with "zero" they are scored 0 and flagged.
"""
OUTCOMES = ("finished", "max_turns", "context_full", "env_budget_exhausted", "tool_error", "timeout", "grader_error")
INFRA_OUTCOMES = ("tool_error", "timeout", "grader_error")
# Episodes cut short by a limit that is not the model's turn budget.
EARLY_OUTCOMES = ("context_full", "env_budget_exhausted")
