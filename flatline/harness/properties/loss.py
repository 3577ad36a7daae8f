"""Properties of a loss_fn(logps, old_logps, advantages, mask, *, ...) -> (loss, parts): finite, and its gradient on
each token pushes the way the token's advantage says (none on masked or zero-advantage tokens).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flatline.harness.properties.advantage import show


class PolicyBatch(NamedTuple):
    logps: list[list[float]]  # [N, T] the trainer's logprobs; on-policy, old_logps are the same values
    advantages: list[float]  # [N]
    mask: list[list[int]]  # [N, T]


def _loss_and_gradient(loss_fn, logps, advantages, mask, loss_type, epsilon_low, epsilon_high,
                       max_completion_length) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Call loss_fn on-policy with beta 0 as the trainer does; returns (loss, d loss / d logps [N, T] or None
    when the loss has no autograd graph back to logps)."""
    policy = torch.tensor(logps, dtype=torch.float32, requires_grad=True)  # [N, T]
    token_mask = torch.tensor(mask, dtype=torch.long)  # [N, T]
    result = loss_fn(policy, policy.detach(), torch.tensor(advantages, dtype=torch.float32), token_mask,
                     loss_type=loss_type, epsilon_low=epsilon_low, epsilon_high=epsilon_high, beta=0.0,
                     ref_logps=None, max_completion_length=max(max_completion_length, policy.size(1)),
                     num_items_in_batch=int(token_mask.sum()), gradient_accumulation_steps=1)
    assert isinstance(result, tuple) and len(result) == 2, f"returned {type(result).__name__}, not (loss, parts)"
    loss = torch.as_tensor(result[0])
    assert loss.numel() == 1, f"returned a loss of shape {tuple(loss.shape)}, not a scalar"
    if not loss.requires_grad:
        return loss, None
    (grad,) = torch.autograd.grad(loss.sum(), policy, allow_unused=True)
    return loss, (torch.zeros_like(policy) if grad is None else grad).double()


def check_loss_finite(loss_fn, logps, advantages, mask, *, loss_type="dapo", epsilon_low=0.2, epsilon_high=0.2,
                      max_completion_length=1):
    """A scalar, finite loss (and a finite gradient) for finite logprobs and advantages."""
    loss, grad = _loss_and_gradient(loss_fn, logps, advantages, mask, loss_type, epsilon_low, epsilon_high,
                                    max_completion_length)
    assert bool(torch.isfinite(loss).all()), f"loss {loss.item()} is not finite"
    assert grad is None or bool(torch.isfinite(grad).all()), f"non-finite gradient {grad.tolist()}"


def check_gradient_follows_advantage(loss_fn, logps, advantages, mask, *, loss_type="dapo", epsilon_low=0.2,
                                     epsilon_high=0.2, max_completion_length=1):
    """On-policy with beta 0, d loss / d logp of every masked token has the opposite sign of its advantage:
    gradient descent raises the logprobs of positive-advantage tokens and lowers those of negative ones."""
    loss, grad = _loss_and_gradient(loss_fn, logps, advantages, mask, loss_type, epsilon_low, epsilon_high,
                                    max_completion_length)
    trained = [(n, t) for n, row in enumerate(mask) for t, m in enumerate(row) if m and advantages[n] != 0]
    if not trained:
        return
    assert grad is not None, \
        f"the loss ({loss.item():.4g}) has no autograd graph back to logps (computed on detached tensors?): " \
        f"no gradient reaches the policy"
    for n, t in trained:
        g, a = float(grad[n, t]), advantages[n]
        direction = "lowers" if g > 0 else "raises" if g < 0 else "does not move"
        assert g * a < 0, \
            f"token {t} of completion {n} has advantage {a:+.4g} and d loss / d logp = {g:+.4g}: gradient descent " \
            f"{direction} its logprob, against its advantage (loss_type {loss_type!r})"


def check_masked_tokens_get_no_gradient(loss_fn, logps, advantages, mask, *, loss_type="dapo", epsilon_low=0.2,
                                        epsilon_high=0.2, max_completion_length=1):
    """Tokens outside the mask get exactly zero gradient."""
    _, grad = _loss_and_gradient(loss_fn, logps, advantages, mask, loss_type, epsilon_low, epsilon_high,
                                 max_completion_length)
    if grad is None:
        return
    leaks = [(n, t, float(grad[n, t])) for n, row in enumerate(mask) for t, m in enumerate(row)
             if not m and grad[n, t] != 0]
    assert not leaks, f"masked-out tokens get gradient (completion, token, d loss / d logp): {leaks[:4]}"


def check_zero_advantage_gets_no_gradient(loss_fn, logps, advantages, mask, *, loss_type="dapo", epsilon_low=0.2,
                                          epsilon_high=0.2, max_completion_length=1):
    """With beta 0, a completion whose advantage is 0 gets zero gradient on every token."""
    _, grad = _loss_and_gradient(loss_fn, logps, advantages, mask, loss_type, epsilon_low, epsilon_high,
                                 max_completion_length)
    if grad is None:
        return
    for n, a in enumerate(advantages):
        if a == 0:
            assert not bool(grad[n].ne(0).any()), \
                f"completion {n} has advantage 0 but gets gradient {show(grad[n])} (beta 0: nothing should push it)"


ADVANTAGE_VALUES = st.one_of(st.just(0.0), st.floats(min_value=0.0625, max_value=4, width=32),
                             st.floats(min_value=-4, max_value=-0.0625, width=32))


@st.composite
def policy_batches(draw):
    N = draw(st.integers(min_value=1, max_value=4))
    T = draw(st.integers(min_value=1, max_value=6))
    logps = draw(arrays(np.float32, (N, T), elements=st.floats(min_value=-8, max_value=0, width=32)))
    advantages = draw(arrays(np.float32, (N,), elements=ADVANTAGE_VALUES))
    mask = draw(arrays(np.int64, (N, T), elements=st.integers(min_value=0, max_value=1)))
    return PolicyBatch(logps.astype(float).tolist(), advantages.astype(float).tolist(), mask.tolist())
