"""One generation batch and what is computed from it before any gradient: decoded completions, reward components,
their weighted total, advantages, and the TRL-compatible metrics of the batch.

    scorer = RewardScorer(task, plugins.reward, task_weights)
    components, errors, weights = scorer.score(examples, completions, token_ids, num_generations)
    rewards = combine_rewards(components, weights)                    # [N], NaN where nothing could be scored
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from flatline.common.errors import PluginError, PluginExit, PluginTimeout
from flatline.common.groups import group_reward_std
from flatline.trainer.plugins import call_reward, function_name, reward_components, short_repr
from flatline.trainer.samplers import SampleBatch
from flatline.trainer.tasks.base import Example, Task

# The largest finite float32: rewards are held in float32, beyond this they are inf.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


@dataclass
class Rollout:
    """One generation batch: G completions for each of its prompts, scored, with advantages."""

    examples: list[Example]  # [P]
    samples: SampleBatch  # tensors [N, ...], N = P * G
    completion_mask: torch.Tensor  # [N, T] the loss mask (mask_fn's)
    completion_lengths: torch.Tensor  # [N] tokens up to and including EOS (the default mask's, whatever mask_fn says)
    completions: list[str]  # [N] decoded up to EOS
    rewards: torch.Tensor  # [N] float32, NaN where no component could be scored
    reward_components: dict[str, list]  # name -> [N] values (None: not scored)
    reward_weights: dict[str, float]  # name -> weight in the total
    reward_errors: int
    advantages: torch.Tensor  # [N]
    old_logprobs: torch.Tensor | None = None  # [N, T], only when num_iterations > 1
    ref_logprobs: torch.Tensor | None = None  # [N, T], only when beta > 0
    # [N, L] prompt tokens a full-sequence mask_fn put in the loss (None: none, the norm); when set, the logprob
    # tensors above are [N, L+T], prompt positions first
    prompt_loss_mask: torch.Tensor | None = None
    env_mask: torch.Tensor | None = None  # [N, T] True on environment (tool) tokens of multi-turn episodes
    episodes: list[dict] | None = None  # [N] each episode's summary (flatline.trainer.episodes), multi-turn only

    @property
    def loss_mask(self) -> torch.Tensor:
        """What the loss trains on: [N, T], or [N, L+T] when prompt tokens are in it."""
        if self.prompt_loss_mask is None:
            return self.completion_mask
        return torch.cat([self.prompt_loss_mask, self.completion_mask], dim=1)


def decode_completions(tokenizer, samples: SampleBatch) -> list[str]:
    """Completion texts up to and including the first EOS (independent of any mask_fn), special tokens dropped."""
    return tokenizer.batch_decode([row[:n] for row, n in zip(samples.completion_ids, samples.completion_lengths)],
                                  skip_special_tokens=True)


class RewardScorer:
    """Reward components of completions, by the task's scorer or a plug-in `reward`. A scorer that raises leaves
    those completions unscored (counted in rewards/errors, warned about once): the judges diagnose that. A scorer
    that returns something unusable (the wrong length, strings) is a PluginError at once, naming the function, what
    it returned and what was expected; non-finite values are warned about once and passed on to be diagnosed."""

    def __init__(self, task: Task, plugin: Callable | None, plugin_weights: dict, prompt_text: Callable[[Example], str]):
        self.task, self.plugin, self.plugin_weights, self.prompt_text = task, plugin, plugin_weights, prompt_text
        self.warned = False
        self.warned_non_finite = False

    def score(self, examples: list[Example], completions: list[str], token_ids: list[list[int]],
              num_generations: int) -> tuple[dict[str, list], int, dict[str, float]]:
        """(components {name: [N] values or None}, errors, weights) for N completions, G per example."""
        owners = [examples[i // num_generations] for i in range(len(completions))]
        if self.plugin is not None:
            return self._plugin_score(owners, completions)
        components: dict[str, list] = {name: [] for name in self.task.components}
        errors = 0
        for completion, example, ids in zip(completions, owners, token_ids):
            try:
                values = self.task.score(completion, example, ids)
            except Exception as exc:
                self._warn(exc)
                values, errors = {}, errors + 1
            check_task_values(self.task, values)
            for name in components:
                components[name].append(values.get(name))
        self._warn_non_finite(f"task {self.task.name}'s reward", components)
        return components, errors, dict(self.task.weights)

    def _plugin_score(self, owners: list[Example], completions: list[str]):
        prompts = [self.prompt_text(e) for e in owners]
        columns = {key: [e.row.get(key) for e in owners] for key in (owners[0].row if owners else {})}
        try:
            result = call_reward(self.plugin, prompts, completions, columns)
        except (PluginTimeout, PluginExit):  # the boundary's own verdicts end the run, naming the plug-in
            raise
        except Exception as exc:
            self._warn(exc)
            components = {self.plugin.__name__: [None] * len(completions)}
            errors = len(completions)
        else:
            components, errors = reward_components(self.plugin, result, len(completions)), 0
            self._warn_non_finite(f"reward {function_name(self.plugin)}", components)
        weights = {name: float(self.plugin_weights.get(name, 1.0)) for name in components}
        return components, errors, weights

    def _warn(self, exc: Exception) -> None:
        if not self.warned:
            warnings.warn(f"the reward function raised {type(exc).__name__}: {exc}; such completions are unscored "
                          f"(counted in rewards/errors)")
            self.warned = True

    def _warn_non_finite(self, who: str, components: dict[str, list]) -> None:
        bad = sum(1 for values in components.values() for v in values if v is not None and not finite_reward(v))
        if bad and not self.warned_non_finite:
            total = sum(len(values) for values in components.values())
            warnings.warn(f"{who} returned {bad} non-finite values (NaN, inf, or beyond float32's range) among "
                          f"{total}; training goes on so flatline can diagnose them (advantage.numerics), but such "
                          f"rewards poison their groups' advantages (trained on as 0)")
            self.warned_non_finite = True


def finite_reward(value: float) -> bool:
    """Finite as the float32 reward tensor holds it: 1e300 is finite in Python and inf in float32."""
    return math.isfinite(value) and abs(value) <= FLOAT32_MAX


def check_task_values(task: Task, values) -> None:
    """A task's score for one completion must be {component: float or None}; anything else is a PluginError."""
    scorer = f"{type(task).__module__}:{type(task).__qualname__}.score"
    if not isinstance(values, dict):
        raise PluginError(f"task scorer {scorer} returned {type(values).__name__} {short_repr(values)}; expected a dict "
                          f"of component -> float or None for one completion")
    for name, value in values.items():
        if value is not None and not isinstance(value, numbers.Real):
            raise PluginError(f"task scorer {scorer} returned {type(value).__name__} {short_repr(value)} for component "
                              f"{name!r}; expected a float or None")


def combine_rewards(components: dict[str, list], weights: dict[str, float]) -> torch.Tensor:
    """Weighted sum per completion; NaN when no component could be scored (its advantage is then 0). -> [N]"""
    names = list(components)
    count = len(next(iter(components.values()))) if components else 0
    totals = []
    for i in range(count):
        values = [components[name][i] for name in names]
        if all(v is None for v in values):
            totals.append(math.nan)
        else:
            totals.append(sum(weights.get(name, 0.0) * float(v or 0.0) for name, v in zip(names, values)))
    return torch.tensor(totals, dtype=torch.float32)


def rollout_metrics(rollout: Rollout, num_generations: int) -> dict:
    """TRL-compatible reward and completion metrics of one generation batch."""
    rewards = rollout.rewards
    lengths = rollout.completion_lengths.float()  # [N]
    truncated = rollout.samples.truncated
    terminated = lengths[~truncated]
    std = group_reward_std(rewards, num_generations)  # [P]
    row = {
        "reward": float(torch.nanmean(rewards)),
        "reward_std": float(std.mean()),
        "frac_reward_zero_std": float((std == 0).float().mean()),
        "rewards/errors": rollout.reward_errors,
        "rewards/unscored": int(torch.isnan(rewards).sum()),
        "completions/mean_length": float(lengths.mean()),
        "completions/min_length": float(lengths.min()),
        "completions/max_length": float(lengths.max()),
        "completions/clipped_ratio": float(truncated.float().mean()),
        "completions/mean_terminated_length": float(terminated.mean()) if terminated.numel() else 0.0,
    }
    for name, values in rollout.reward_components.items():
        scored = torch.tensor([v for v in values if v is not None], dtype=torch.float64)
        row[f"rewards/{name}/mean"] = float(scored.mean()) if scored.numel() else math.nan
        row[f"rewards/{name}/std"] = float(scored.std()) if scored.numel() > 1 else 0.0
    return row


def logged_samples(rollout: Rollout, tokenizer, prompt_text: Callable[[Example], str], step: int,
                   num_generations: int, count: int) -> list[dict]:
    """The first completion of the first `count` groups, with what the loss actually saw (samples.jsonl rows)."""
    out = []
    for group in range(min(count, len(rollout.examples))):
        i = group * num_generations
        sequence = torch.cat([rollout.samples.prompt_ids[i], rollout.samples.completion_ids[i]])  # [L+T]
        mask = rollout.loss_mask[i]  # [T], or [L+T] with prompt tokens in the loss
        ids = sequence[-mask.size(0):][mask.bool()]
        out.append({
            "step": step, "example": rollout.examples[group].id,
            "prompt": prompt_text(rollout.examples[group]),
            "completion": rollout.completions[i],
            "masked_text": tokenizer.decode(ids),
            "reward": float(rollout.rewards[i]),
            "components": {k: v[i] for k, v in rollout.reward_components.items()},
            "advantage": float(rollout.advantages[i]),
            "truncated": bool(rollout.samples.truncated[i]),
        })
    return out
