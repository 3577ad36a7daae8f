"""Capture: what the TRL callback reads of a GRPOTrainer step, never changing it.

- the model level: the gradient and update probes on the optimizer's step (`model_monitor`);
- the batch level: TRL exposes no hook for its batch tensors, so `BatchCapture` wraps the smallest methods that carry
  them and keeps their results as they are: `_calculate_rewards` (rewards per reward function) and
  `_generate_and_score_completions` (TRL's generation output: ids, masks, advantages, log-probs), and, when TRL has
  them, `_compute_loss` and `_get_per_token_logps_and_entropies` (the last micro-batch as the loss saw it).

A capture that raises (a TRL whose tensors differ) turns the batch capture off with one warning; training goes on.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from flatline.common.listeners import warn_disabled
from flatline.integrations.trl_parts import trl_version


def model_monitor(trainer, model, optimizer, max_grad_norm):
    """The gradient and update probes: on DeepSpeed's engine step (its optimizer is not torch's), else on the torch
    optimizer's step hooks. One that cannot attach is a warning (None); training goes on without it."""
    from flatline.probes import attach

    engine = getattr(trainer, "deepspeed", None) if getattr(trainer, "is_deepspeed_enabled", False) else None
    try:
        if engine is not None:
            from flatline.probes.sharded import engine_monitor

            return engine_monitor(engine, max_grad_norm=max_grad_norm)
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
        return attach(model, inner, max_grad_norm=max_grad_norm)
    except Exception as exc:
        warn_disabled("monitor", "flatline gradient and update probes", exc)
        return None


@dataclass
class Captured:
    """One optimizer step's batch tensors, as TRL computed them (None: not seen this step)."""

    batch: dict | None = None  # rewards_per_func, names, weights, and the generation output's tensors
    loss_inputs: dict | None = None  # the last micro-batch the loss saw
    loss_logps: tuple | None = None  # (log-probs, entropies) of the loss's own forward on it


class BatchCapture:
    """Wraps a GRPOTrainer's batch methods and keeps what they return until the step takes it (`take`).

    on_reward_error(exc) is called when a reward function raises (TRL then stops; the exception goes on)."""

    def __init__(self, trainer, on_reward_error):
        self.trainer = trainer
        self.on = True
        self.sees_loss = hasattr(trainer, "_compute_loss") and hasattr(trainer, "_get_per_token_logps_and_entropies")
        self.current = Captured()
        self._wrap(on_reward_error)

    def take(self) -> Captured:
        """This step's tensors; the capture starts over for the next step."""
        captured, self.current = self.current, Captured()
        return captured

    def off(self) -> None:
        self.on = False
        self.current = Captured()

    def rewards(self, rewards_per_func) -> None:
        trainer = self.trainer
        self.current.batch = {"rewards_per_func": rewards_per_func.detach().float().cpu(),
                              "names": list(trainer.reward_func_names),
                              "weights": [float(w) for w in trainer.reward_weights.tolist()]}

    def generation(self, output: dict) -> None:
        if self.current.batch is None:
            self.current.batch = {}
        self.current.batch.update({key: value.detach() for key, value in output.items() if torch.is_tensor(value)})

    def _note(self, capture) -> None:
        """Run a capture; one that raises turns the capture off with one warning, training goes on."""
        if not self.on:
            return
        try:
            with torch.no_grad():
                capture()
        except Exception as exc:
            warn_disabled("probe", f"flatline.integrations.trl batch capture (TRL {trl_version()})", exc)
            self.off()

    def _wrap(self, on_reward_error) -> None:
        trainer = self.trainer
        rewards_method, generate_method = trainer._calculate_rewards, trainer._generate_and_score_completions

        def calculate_rewards(*a, **kw):
            try:
                rewards = rewards_method(*a, **kw)
            except Exception as exc:
                on_reward_error(exc)
                raise
            if trainer.model.training:  # evaluation scores its own batches: not this step's
                self._note(lambda: self.rewards(rewards))
            return rewards

        def generate_and_score(*a, **kw):
            output = generate_method(*a, **kw)
            if trainer.model.training:
                self._note(lambda: self.generation(output))
            return output

        trainer._calculate_rewards = calculate_rewards
        trainer._generate_and_score_completions = generate_and_score
        if not self.sees_loss:
            return
        loss_method, logps_method = trainer._compute_loss, trainer._get_per_token_logps_and_entropies

        def compute_loss(model, inputs, *a, **kw):
            self._note(lambda: setattr(self.current, "loss_inputs", inputs))
            return loss_method(model, inputs, *a, **kw)

        def logps_and_entropies(*a, **kw):
            result = logps_method(*a, **kw)
            if torch.is_grad_enabled():  # the loss's own forward (old and reference log-probs run under no_grad)
                self._note(lambda: setattr(self.current, "loss_logps", (result[0].detach(), result[1])))
            return result

        trainer._compute_loss = compute_loss
        trainer._get_per_token_logps_and_entropies = logps_and_entropies
