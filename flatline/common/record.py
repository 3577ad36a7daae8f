"""The step record: what one optimizer step hands to its listeners (the probes), as one flat dataclass.

A training loop fills in what it has; a probe reads only these fields and skips what is None. flatline's trainer
fills every field; a TRL callback or a user's own loop fills the fields it can compute (the model, the optimizer
and the batch tensors it has), and the probes that need a missing field report nothing rather than guess.

Shapes: N completions (P prompts x G generations, the G completions of a prompt adjacent: rows i*G .. i*G+G-1
share a prompt), L prompt positions (left-padded), T completion positions (right-padded).

Listeners: any object with one or both hooks below, returning a dict of numbers (merged into the step's metrics
row) or None. A listener that raises is disabled for the rest of the run with one warning (flatline.common.listeners);
it must never change training.

    on_gradients(model, optimizer, step)  after backward, before clipping and the optimizer step
    on_step(record)                       after the optimizer step, with the StepRecord
    wants_pre_step_weights = True         asks the loop to copy the trainable weights before optimizer.step()
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# Probe levels, cheapest first: each level runs the probes of its own tier and of every cheaper one.
PROBE_LEVELS = ("none", "cheap", "full")
# Probe tiers: cheap probes read tensors the step already has; full ones may run extra forwards.
PROBE_TIERS = PROBE_LEVELS[1:]


def tiers_of(level: str) -> tuple[str, ...]:
    """The probe tiers a level runs: none -> (), cheap -> (cheap,), full -> (cheap, full)."""
    if level not in PROBE_LEVELS:
        raise ValueError(f"probe level must be one of {', '.join(PROBE_LEVELS)}, got {level!r}")
    return PROBE_TIERS[: PROBE_LEVELS.index(level)]


@dataclass
class StepRecord:
    """One optimizer step. Every tensor is detached, on any device, and must not be written to."""

    step: int  # optimizer steps taken so far, 1-based
    iteration: int = 0  # which of num_iterations passes over this batch (0: the first, sampled by the current policy)

    # --- the batch ---
    prompt_ids: Any = None  # [N, L] long, left-padded
    prompt_mask: Any = None  # [N, L] 1 on real prompt tokens
    completion_ids: Any = None  # [N, T] long, right-padded after the first EOS
    completion_mask: Any = None  # [N, T] the loss mask over completion positions
    prompt_loss_mask: Any = None  # [N, L] prompt tokens the loss trains on (None: none, the norm)
    env_mask: Any = None  # [N, T] True on tool / environment tokens among the completion positions (None: none)
    completion_lengths: Any = None  # [N] tokens up to and including the first EOS (T when truncated)
    truncated: Any = None  # [N] bool: reached max_completion_length without EOS
    group_ids: list | None = None  # [N] an id of each row's prompt (rows of one group must share it)
    prompts: list[str] | None = None  # [N] decoded prompt of each row
    completions: list[str] | None = None  # [N] decoded completion, up to EOS
    episodes: list[dict] | None = None  # [N] multi-turn: each episode's outcome, turns, tool-call counts, policy_step,
    # outcome_term and call_term (its reward's outcome and per-call parts), env_tokens (None: single-turn)

    # --- rewards and advantages ---
    rewards: Any = None  # [N] float, NaN where no reward component could be scored
    reward_components: dict[str, list] = field(default_factory=dict)  # name -> [N] values, None = not scored
    reward_weights: dict[str, float] | None = None  # name -> weight in the total (None: unknown)
    reward_errors: int = 0  # completions whose reward function raised
    advantages: Any = None  # [N]
    examples: list | None = None  # [P] the task's examples (flatline's trainer: the reward self-check); else None

    # --- log-probabilities ---
    sampler_logprobs: Any = None  # [N, T] the sampler's own, 0 past each completion's end
    trainer_logprobs: Any = None  # [N, T] from the forward that was backpropagated
    ref_logprobs: Any = None  # [N, T] under the KL reference (beta > 0)
    entropy: Any = None  # [N, T] nats per position, under the trainer's forward

    # --- the update ---
    loss_parts: dict = field(default_factory=dict)  # "loss", and "kl", "kl_loss" when beta > 0
    grad_norm: float = math.nan  # before clipping
    model: Any = None  # torch.nn.Module
    optimizer: Any = None  # torch.optim.Optimizer
    pre_step_weights: dict | None = None  # trainable name -> value before optimizer.step() (when asked for)
    metrics: dict = field(default_factory=dict)  # the step's metrics row so far
