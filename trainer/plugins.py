"""Plug points: a user's own `reward`, `advantage_fn`, `mask_fn` and `loss_fn`, given as 'module:function'.

Each is imported and its signature checked against the call the trainer will make, at start-up, so a typo or
a missing parameter is a one-line error instead of a crash after the model has loaded.

Every call into a plug-in crosses a boundary (guarded): it runs in a daemon worker thread that the caller waits on
for at most plugin_timeout_s. A call that does not return in time is a PluginTimeout naming the plug-in and the
call; Python cannot stop a thread, so the call goes on in the background until it returns or the process exits
(the run has failed by then; a daemon thread never holds the exit up). A plug-in that calls sys.exit() is a
PluginExit naming it, never a quiet exit 0. The worker starts with the caller's grad mode and CUDA device (both
thread-local in torch). plugin_timeout_s = 0 calls the plug-in in the caller's own thread, with no limit.
"""
from __future__ import annotations

import concurrent.futures
import functools
import importlib
import inspect
import numbers
import os
import reprlib
import sys
import threading
from collections.abc import Sized
from dataclasses import dataclass
from typing import Callable

import torch

from flatline.common.errors import ConfigError, PluginError, PluginExit, PluginTimeout
from flatline.trainer import algorithm


@dataclass(frozen=True)
class PlugPoint:
    """How the trainer calls one plug point: the one statement of its signature (README table, config checks)."""

    key: str
    positional: tuple[str, ...]  # in this order
    keywords: tuple[str, ...]  # always passed by name
    returns: str
    offered: tuple[str, ...] = ()  # passed by name only to a function that names them (or takes **kwargs)
    shapes: str = ""  # what the arguments hold

    def call_text(self) -> str:
        """e.g. `fn(rewards, num_generations, *, scale_rewards, eps) -> advantages [N]`"""
        args = ", ".join(self.positional)
        if self.key == "reward":
            args += ", **columns"
        if self.keywords:
            args += ", *, " + ", ".join(self.keywords)
        if self.offered:
            args += " [, " + ", ".join(self.offered) + "]"
        return f"fn({args}) -> {self.returns}"


PLUG_POINTS = {point.key: point for point in (
    PlugPoint("reward", ("prompts", "completions"), (), "list[float | None] or dict[str, list]",
              shapes="prompts, completions: list[str] of N; columns: the dataset row's fields, by name (TRL's "
                     "reward-function form)"),
    PlugPoint("advantage_fn", ("rewards", "num_generations"), ("scale_rewards", "eps"), "advantages [N]",
              shapes="rewards: [N] float32, the G completions of a prompt adjacent"),
    PlugPoint("mask_fn", ("completion_ids", "eos_token_ids"), (), "mask [N, T] or [N, L+T]",
              offered=("prompt_ids", "prompt_mask"),
              shapes="completion_ids: [N, T] right-padded; prompt_ids, prompt_mask: [N, L] left-padded; a [N, L+T] "
                     "mask covers cat(prompt_ids, completion_ids), and prompt tokens it marks are really trained on"),
    PlugPoint("loss_fn", ("logps", "old_logps", "advantages", "mask"),
              ("loss_type", "epsilon_low", "epsilon_high", "beta", "ref_logps", "max_completion_length",
               "num_items_in_batch", "gradient_accumulation_steps"), "(loss, parts)",
              shapes="logps, old_logps, ref_logps, mask: [N, T]; advantages: [N]; parts: a dict of scalars to log"),
)}


@dataclass(frozen=True)
class Plugins:
    """The functions the loop calls; the defaults are flatline.trainer.algorithm's."""

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
    point = PLUG_POINTS[key]
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # builtins and C functions: nothing to check
    try:
        if key == "reward":
            signature.bind(prompts=[], completions=[])
        else:
            offered = {name: None for name in point.offered if name in signature.parameters}
            signature.bind(*point.positional, **{name: None for name in point.keywords}, **offered)
    except TypeError as exc:
        raise ConfigError(f"config key '{key}': {function.__module__}.{function.__name__}{signature} cannot be called "
                          f"as {point.call_text()} ({exc})") from None


def load_plugins(cfg) -> Plugins:
    """The config's plug-ins, imported, their signatures checked, each behind its boundary (guarded)."""
    chosen = {}
    for key in PLUG_POINTS:
        target = getattr(cfg, key)
        if target:
            function = import_function(key, target)
            check_signature(key, function)
            chosen[key] = guarded(key, function, cfg.plugin_timeout_s)
    return Plugins(**chosen)


def guarded(key: str, function: Callable, timeout_s: float) -> Callable:
    """`function` behind the plug-in boundary: called in a worker thread for at most timeout_s (0: in this thread,
    no limit); PluginTimeout when it overruns, PluginExit when it calls sys.exit(); its own exceptions pass through
    unchanged (their traceback still ends in the user's file). Keeps the function's name and signature."""

    @functools.wraps(function)
    def call(*args, **kwargs):
        if not timeout_s:
            try:
                return function(*args, **kwargs)
            except SystemExit as exc:
                raise PluginExit(exit_text(key, function, exc)) from None
        future = in_daemon_thread(function, args, kwargs, f"flatline-{key}")
        try:
            return future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            raise PluginTimeout(f"{key} {function_name(function)} did not return within plugin_timeout_s = "
                                f"{timeout_s:g} s (called as {PLUG_POINTS[key].call_text()}); a hang (a lock, a "
                                f"network call without a timeout, an endless loop) or a slow plug-in: fix it, or "
                                f"raise plugin_timeout_s") from None
        except SystemExit as exc:
            raise PluginExit(exit_text(key, function, exc)) from None

    call.plugin_timeout_s = timeout_s
    return call


def exit_text(key: str, function: Callable, exc: SystemExit) -> str:
    return (f"{key} {function_name(function)} called sys.exit({exc.code!r}) (raised SystemExit) while called as "
            f"{PLUG_POINTS[key].call_text()}; a plug-in must return its value or raise an exception")


def in_daemon_thread(function: Callable, args: tuple, kwargs: dict, name: str) -> concurrent.futures.Future:
    """Start function(*args, **kwargs) in a new daemon thread (one that never holds the process's exit up) with
    this thread's grad mode and CUDA device; its Future holds the result or whatever it raised (SystemExit too)."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    grad_enabled = torch.is_grad_enabled()
    device = torch.cuda.current_device() if torch.cuda.is_available() and torch.cuda.is_initialized() else None

    def work() -> None:
        future.set_running_or_notify_cancel()
        try:
            if device is not None:
                torch.cuda.set_device(device)
            with torch.set_grad_enabled(grad_enabled):
                result = function(*args, **kwargs)
        except BaseException as exc:  # the caller's thread re-raises it; SystemExit must not end this thread quietly
            future.set_exception(exc)
        else:
            future.set_result(result)

    threading.Thread(target=work, name=name, daemon=True).start()
    return future


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
    extra = keywords_taken(function, dict(zip(PLUG_POINTS["mask_fn"].offered, (prompt_ids, prompt_mask))))
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


def call_reward(function: Callable, prompts: list[str], completions: list[str], columns: dict[str, list]):
    """Call a TRL-style reward function and return what it returned (reward_components checks it). Columns go only
    where the function takes them."""
    return function(prompts=prompts, completions=completions, **keywords_taken(function, columns))


def function_name(function: Callable) -> str:
    """`module:function`, as a config names a plug-in."""
    name = getattr(function, "__qualname__", None) or getattr(function, "__name__", None) or repr(function)
    return f"{getattr(function, '__module__', None) or '?'}:{name}"


def reward_components(function: Callable, result, count: int) -> dict[str, list[float | None]]:
    """A reward's return as {component: [count] floats or None}: a list (one component, named after the function) or a
    dict of lists. Anything else is a PluginError naming the function, what it returned and what was expected."""
    single = not isinstance(result, dict)
    items = [(getattr(function, "__name__", "reward"), result)] if single else list(result.items())
    expected = f"{count} floats or None, one per completion (a list, or a dict of such lists, one per component)"
    if not items:
        raise PluginError(f"reward {function_name(function)} returned an empty dict; expected {expected}")
    components = {}
    for name, values in items:
        problem = reward_values_problem(values, count)
        if problem:
            where = "" if single else f" for component {name!r}"
            raise PluginError(f"reward {function_name(function)} returned{where} {problem}; expected {expected}")
        components[str(name)] = [None if v is None else float(v) for v in as_list(values)]
    return components


def as_list(values) -> list:
    """A list, a tuple, or a 1-D array or tensor as a list of Python values."""
    return values.tolist() if hasattr(values, "tolist") else list(values)


def reward_values_problem(values, count: int) -> str:
    """What is wrong with `values` as one reward value per completion, as a phrase ("" when nothing is)."""
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, Sized) or getattr(values, "ndim", 1) != 1:
        return "None" if values is None else f"{type(values).__name__} {short_repr(values)}"
    items = as_list(values)
    described = f"{type(values).__name__} of {len(items)} value{'s' * (len(items) != 1)} {short_repr(items)}"
    if len(items) != count:
        return described
    for index, value in enumerate(items):
        if value is not None and not isinstance(value, numbers.Real):
            return f"{described} (position {index} is {type(value).__name__} {short_repr(value)})"
    return ""


def short_repr(value) -> str:
    """A value's repr for an error message: shortened, on one line."""
    short = reprlib.Repr()
    short.maxstring, short.maxother, short.maxlist, short.maxtuple = 40, 40, 4, 4
    return " ".join(short.repr(value).split())
