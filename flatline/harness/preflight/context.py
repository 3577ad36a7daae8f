"""Does the longest prompt plus the completion budget fit the model's context and the sampler's max_model_len?

A rollout that cannot fit makes vLLM hang at "0/8 rollouts" or cut it; the model itself has no trained positions
past its context. The arithmetic is flatline.trainer.limits.context_shortfall, the one `flatline train` refuses with.
"""
from __future__ import annotations

from flatline.harness.preflight.findings import Finding
from flatline.trainer.limits import context_shortfall


def context_findings(max_prompt_length: int, max_completion_length: int, longest_prompt: int,
                     model_context: int | None, max_model_len: int | None = None) -> list[Finding]:
    """A refusal for each limit (the model's context, the sampler's max_model_len) the rollout cannot fit, else one
    info line with the room left."""
    needed = longest_prompt + max_completion_length
    numbers = {"longest_prompt": longest_prompt, "max_completion_length": max_completion_length, "needed": needed}
    findings = []
    limits = [("the model's context", "context", model_context), ("the sampler's max_model_len", "max_model_len",
                                                                    max_model_len)]
    for label, name, limit in limits:
        shortfall = context_shortfall(max_prompt_length, max_completion_length, limit, longest_prompt)
        if shortfall is None:
            continue
        key, allowed = shortfall
        if key == "max_prompt_length":
            message = f"max_prompt_length {max_prompt_length} is more than {label} of {limit} positions"
            fix = f"set max_prompt_length <= {allowed}"
        else:
            message = (f"the longest prompt ({longest_prompt} tokens) plus max_completion_length "
                       f"({max_completion_length}) needs {needed} positions, more than {label} of {limit}")
            fix = f"set max_completion_length <= {allowed}"
            if name == "max_model_len" and (model_context is None or model_context >= needed):
                fix += f", or raise max_model_len to >= {needed}"
        findings.append(Finding("context", "refuse", message, {**numbers, name: limit, "max_prompt_length":
                                                               max_prompt_length}, fix))
    if findings:
        return findings
    known = [(label, limit) for label, _, limit in limits if limit is not None]
    if not known:
        return [Finding("context", "info", f"the model's context is unknown (its config names no length): "
                        f"{needed} positions needed are unchecked", numbers)]
    label, limit = min(known, key=lambda item: item[1])
    return [Finding("context", "info", f"longest prompt {longest_prompt} + max_completion_length "
                    f"{max_completion_length} = {needed} positions of {limit} ({label})", {**numbers, "limit": limit})]


def episode_findings(longest_prompt: int, max_completion_length: int, max_turns: int, tool_answer: int | None,
                     max_episode_length: int) -> list[Finding]:
    """A multi-turn episode's context budget (max_episode_length) against the longest prompt, max_turns model turns
    of max_completion_length and a tool answer (with the next turn's header) between turns: refuse when the prompt
    leaves no room for a turn; warn when an episode that uses all its turns cannot fit (it ends as context_full)."""
    answer = tool_answer or 0
    full = longest_prompt + max_turns * max_completion_length + (max_turns - 1) * answer
    numbers = {"longest_prompt": longest_prompt, "max_completion_length": max_completion_length, "max_turns": max_turns,
               "tool_answer_tokens": tool_answer, "full_episode": full, "max_episode_length": max_episode_length}
    if longest_prompt >= max_episode_length:
        return [Finding("episode", "refuse", f"the longest prompt ({longest_prompt} tokens) fills the episode's context "
                        f"budget (max_episode_length {max_episode_length}): no turn can be sampled", numbers,
                        f"set max_episode_length >= {full}")]
    if full > max_episode_length:
        answers = f", {max_turns - 1} tool answers of {answer}" if tool_answer else ""
        return [Finding("episode", "warn", f"an episode that takes its {max_turns} turns needs up to {full} tokens (the "
                        f"longest prompt {longest_prompt}, {max_turns} turns of {max_completion_length}{answers}), more "
                        f"than max_episode_length {max_episode_length}: episodes that need the room end as context_full "
                        "(episodes.early_termination)", numbers,
                        f"set max_episode_length >= {full}, or lower max_turns or max_completion_length")]
    return [Finding("episode", "info", f"an episode of {max_turns} turns fits: up to {full} tokens of "
                    f"max_episode_length {max_episode_length}", numbers)]
