"""Plug points: a user's own `reward`, `advantage_fn`, `mask_fn` and `loss_fn`, given as 'module:function'.

Each is imported and its signature checked against the call the trainer will make, at start-up, so a typo or
a missing parameter is a one-line error instead of a crash after the model has loaded.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Callable

import torch

from flatline.trainer import algorithm
from flatline.common.errors import ConfigError, PluginError

# The keyword arguments each plug point is called with (positional ones first, in order).
CALLS = {
    "reward": (("prompts", "completions"), ()),
    "advantage_fn": (("rewards", "num_generations"), ("scale_rewards", "eps")),
    "mask_fn": (("completion_ids", "eos_token_ids"), ()),
    "loss_fn": (("logps", "old_logps", "advantages", "mask"),
                ("loss_type", "epsilon_low", "epsilon_high", "beta", "ref_logps", "max_completion_length",
                 "num_items_in_batch", "gradient_accumulation_steps")),
}

# Keyword arguments a plug point gets only when its function names them.
OFFERED = {"mask_fn": ("prompt_ids", "prompt_mask")}


@dataclass(frozen=True)
class Plugins:
    """The functions the loop calls; the defaults are trainer.algorithm's."""

    advantage_fn: Callable = algorithm.group_advantages
    mask_fn: Callable = algorithm.completion_mask
    loss_fn: Callable = algorithm.policy_loss
    reward: Callable | None = None


def import_function(key: str, target: str) -> Callable:
    module_name, _, function_name = target.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may fail in any way on import
        raise ConfigError(f"config key '{key}': cannot import module '{module_name}' ({type(exc).__name__}: {exc})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"config key '{key}': module '{module_name}' has no function '{function_name}'")
    return function


def check_signature(key: str, function: Callable) -> None:
    positional, keywords = CALLS[key]
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # builtins and C functions: nothing to check
    try:
        if key == "reward":
            signature.bind(prompts=[], completions=[])
        else:
            offered = {name: None for name in OFFERED.get(key, ()) if name in signature.parameters}
            signature.bind(*positional, **{name: None for name in keywords}, **offered)
    except TypeError as exc:
        wanted = ", ".join(positional) + (", *, " + ", ".join(keywords) if keywords else "")
        raise ConfigError(f"config key '{key}': {function.__module__}.{function.__name__}{signature} cannot be called "
                          f"as {key}({wanted}) ({exc})") from None


def load_plugins(cfg) -> Plugins:
    chosen = {}
    for key in CALLS:
        target = getattr(cfg, key)
        if target:
            function = import_function(key, target)
            check_signature(key, function)
            chosen[key] = function
    return Plugins(**chosen)


def keywords_taken(function: Callable, available: dict) -> dict:
    """The entries of `available` that `function` takes by name (all of them if it has **kwargs)."""
    parameters = inspect.signature(function).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return {k: v for k, v in available.items() if takes_all or k in parameters}


def call_mask_fn(function: Callable, completion_ids: torch.Tensor, eos_token_ids, prompt_ids: torch.Tensor,
                 prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Call a mask_fn; returns (completion part [N, T], prompt part [N, L] or None when no prompt token is marked).

    completion_ids: [N, T]; prompt_ids, prompt_mask: [N, L] left-padded, passed only to a function that names them
    (or takes **kwargs). It may return [N, T] (completion positions) or [N, L+T] (positions of
    cat(prompt_ids, completion_ids), as a loop that builds its mask over the whole sequence does).
    """
    extra = keywords_taken(function, dict(zip(OFFERED["mask_fn"], (prompt_ids, prompt_mask))))
    mask = torch.as_tensor(function(completion_ids, eos_token_ids, **extra)).long()
    (N, T), L = completion_ids.shape, prompt_ids.size(1)
    if mask.shape == (N, T):
        return mask, None
    if mask.shape == (N, L + T):
        prompt_part = mask[:, :L]
        return mask[:, L:], (prompt_part if prompt_part.any() else None)
    raise PluginError(f"mask_fn {getattr(function, '__name__', function)} returned a mask of shape {tuple(mask.shape)}; "
                      f"it must be [N, T] = {(N, T)} (completion positions) or [N, L+T] = {(N, L + T)} (prompt and "
                      f"completion positions)")


def call_reward(function: Callable, prompts: list[str], completions: list[str], columns: dict[str, list]) -> dict[str, list]:
    """Call a TRL-style reward function; returns {component: values}. Columns go only where the function takes them."""
    result = function(prompts=prompts, completions=completions, **keywords_taken(function, columns))
    if isinstance(result, dict):
        return {name: list(values) for name, values in result.items()}
    return {function.__name__: list(result)}
