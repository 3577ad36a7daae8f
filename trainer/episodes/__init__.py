"""Multi-turn episodes against tool environments (the `tools` task).

    toolcall.py   Hermes-style <tool_call> parser with typed errors
    env.py        the environment contract (reset, step -> StepResult), StepBudget, the shipped KeyValueEnv
    outcomes.py   how an episode ends (finished, max_turns, context_full, env_budget_exhausted, tool_error, timeout,
                  grader_error)
    runner.py     EpisodeRunner and episode_rollout: episodes -> one GRPO batch (the model's tokens in the loss only)

Trainer.rollout hands an environment task (task.is_environment) to episode_rollout; the rest of the step (logprobs,
loss, probes) is the single-turn trainer's, with the transcript as the completion and env_mask marking the
environment's tokens.
"""
