"""Limits that only the tokenizer and the model's config can tell, checked in `prepare` before any weights load.

The config's own ranges (flatline.trainer.config) cap every number; these checks bound two of them by the model:
the completion budget by the model's context, and the bandit's arms by the vocabulary.

    check_context(cfg, context=2048, longest_prompt=37, model="tiny-random")     # ConfigError when it cannot fit
    check_bandit_arms(cfg, vocab_size=49152)
"""
from __future__ import annotations

from flatline.common.errors import ConfigError


def context_shortfall(max_prompt_length: int, max_completion_length: int, context: int | None,
                      longest_prompt: int) -> tuple[str, int] | None:
    """(the config key that does not fit, the largest value that would) when the longest prompt plus
    max_completion_length cannot fit `context` positions (a model's context or a sampler's max_model_len); None when
    they fit or the context is unknown. Pure: check_context and `flatline preflight` both ask it."""
    if context is None:
        return None
    if max_prompt_length > context:
        return "max_prompt_length", context
    room = context - longest_prompt
    if max_completion_length > room:
        return "max_completion_length", max(room, 0)
    return None


def check_context(cfg, context: int | None, longest_prompt: int, model: str) -> None:
    """The longest prompt plus max_completion_length must fit the model's context: past it there are no trained
    positions (models with learned position embeddings fail outright, rotary ones produce noise), and a budget far
    beyond it only makes generation hang. context None (unknown): nothing to check."""
    shortfall = context_shortfall(cfg.max_prompt_length, cfg.max_completion_length, context, longest_prompt)
    if shortfall is None:
        return
    key, allowed = shortfall
    if key == "max_prompt_length":
        raise ConfigError(f"config key 'max_prompt_length': {cfg.max_prompt_length} tokens is more than model {model}'s "
                          f"context of {context} positions; set max_prompt_length <= {allowed}")
    raise ConfigError(f"config key 'max_completion_length': {cfg.max_completion_length} new tokens after the longest "
                      f"prompt ({longest_prompt} tokens) exceed model {model}'s context of {context} positions; "
                      f"set max_completion_length <= {allowed}")


def check_bandit_arms(cfg, vocab_size: int) -> None:
    """The bandit splits the vocabulary into arms by token id: more arms than token ids leaves arms without a token,
    and the paying arm's share (chance) shrinks to a reward that is always 0."""
    if cfg.task == "bandit" and cfg.bandit_arms > vocab_size:
        raise ConfigError(f"config key 'bandit_arms': {cfg.bandit_arms} arms for a vocabulary of {vocab_size} tokens "
                          f"leaves arms with no token; set bandit_arms <= {vocab_size} (4 gives chance = 0.25)")
