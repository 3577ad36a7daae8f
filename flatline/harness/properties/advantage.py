"""Properties of an advantage_fn(rewards [N], num_generations, *, scale_rewards, eps) -> [N], as Hypothesis checks.

Each check_* takes the plug-in and one example and raises AssertionError naming what went wrong; the strategies
below generate the examples (flatline.harness.properties.runner runs them).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

# |advantage| below this counts as zero (a flat group's float32 trap gives ~1e-3).
ZERO_ADVANTAGE = 1e-6
# Relative tolerances, times max(1, max |advantage|): a group's sum (times G), a shift of the rewards
# (float32 rounding of a shifted mean, over a std of at least ~0.04), other groups' changes (none at all).
SUM_TOLERANCE = 1e-3
SHIFT_TOLERANCE = 1e-3
INDEPENDENCE_TOLERANCE = 1e-6
# Reward values that are not exactly representable: G copies of them have a float32 std near 1e-7, not 0.
AWKWARD_REWARDS = (1.350639, 0.1, 0.7, 1 / 3, 2.2, -0.3)


class RewardBatch(NamedTuple):
    rewards: list[float]  # [N] float32 values, the G completions of a prompt adjacent
    num_generations: int


class FlatGroup(NamedTuple):
    rewards: list[float]
    num_generations: int
    group: int  # this group's rewards are all equal


class ShiftedGroup(NamedTuple):
    rewards: list[float]
    num_generations: int
    group: int
    shift: float


class ChangedGroup(NamedTuple):
    rewards: list[float]
    num_generations: int
    group: int
    other: int  # this group's rewards are replaced by new_rewards
    new_rewards: list[float]


def _advantages(advantage_fn, rewards, num_generations, scale_rewards, eps) -> torch.Tensor:
    """Call advantage_fn as the trainer does; checks shape, leaves rewards alone. Returns [N] float64."""
    given_rewards = torch.tensor(rewards, dtype=torch.float32)  # [N]
    out = advantage_fn(given_rewards, num_generations, scale_rewards=scale_rewards, eps=eps)
    out = torch.as_tensor(out).detach()
    assert tuple(out.shape) == (len(rewards),), \
        f"returned shape {tuple(out.shape)} for {len(rewards)} rewards; expected [N] = ({len(rewards)},)"
    assert torch.equal(given_rewards, torch.tensor(rewards, dtype=torch.float32)), \
        "changed the rewards tensor in place (the logged rewards would be the modified ones)"
    return out.double()


def _group(values, k: int, G: int):
    return values[k * G:(k + 1) * G]


def _scale(values: torch.Tensor) -> float:
    return max(1.0, float(values.abs().max())) if values.numel() else 1.0


def show(values) -> str:
    return "[" + ", ".join(f"{float(v):.7g}" for v in values) + "]"


def check_finite_and_shaped(advantage_fn, rewards, num_generations, *, scale_rewards="group", eps=1e-4):
    """One finite advantage per completion, the rewards tensor left unchanged."""
    advantages = _advantages(advantage_fn, rewards, num_generations, scale_rewards, eps)
    bad = (~torch.isfinite(advantages)).nonzero().flatten().tolist()
    assert not bad, f"non-finite advantages at {bad}: {show(advantages)} for finite rewards {show(rewards)}"


def check_groups_sum_to_zero(advantage_fn, rewards, num_generations, *, scale_rewards="group", eps=1e-4):
    """Each group's advantages sum to ~0: its baseline is its own mean."""
    G = num_generations
    advantages = _advantages(advantage_fn, rewards, G, scale_rewards, eps)
    for k in range(len(rewards) // G):
        group = _group(advantages, k, G)
        total = float(group.sum())
        assert abs(total) <= SUM_TOLERANCE * G * _scale(group), \
            f"group {k} (rewards {show(_group(rewards, k, G))}) gets advantages {show(group)}, which sum to " \
            f"{total:.4g}, not 0: the baseline is not the group's own mean"


def check_flat_group_is_zero(advantage_fn, rewards, num_generations, group, *, scale_rewards="group", eps=1e-4):
    """A group whose rewards are all equal gets |advantage| < 1e-6: it carries no signal."""
    G = num_generations
    advantages = _group(_advantages(advantage_fn, rewards, G, scale_rewards, eps), group, G)
    worst = float(advantages.abs().max())
    assert worst < ZERO_ADVANTAGE, \
        f"group {group} of {G} identical rewards {rewards[group * G]!r} gets advantages {show(advantages)} " \
        f"(max |a| = {worst:.3g}), not 0; in float32 such a group's std is ~1e-7, not 0: compute in float64 or " \
        f"give groups with equal rewards exactly zero"


def check_shift_invariant(advantage_fn, rewards, num_generations, group, shift, *, scale_rewards="group", eps=1e-4):
    """Adding a constant to a group's rewards (to every reward with scale_rewards = "batch") leaves its
    advantages unchanged."""
    G = num_generations
    shifted = list(rewards)
    moved = range(len(rewards)) if scale_rewards == "batch" else range(group * G, (group + 1) * G)
    for i in moved:
        shifted[i] = rewards[i] + shift
    before = _advantages(advantage_fn, rewards, G, scale_rewards, eps)
    after = _advantages(advantage_fn, shifted, G, scale_rewards, eps)
    index = torch.tensor(list(moved))  # [moved]
    change = float((after[index] - before[index]).abs().max())
    assert change <= SHIFT_TOLERANCE * _scale(before[index]), \
        f"adding {shift:g} to rewards {show(rewards[i] for i in moved)} changes their advantages from " \
        f"{show(before[index])} to {show(after[index])}: the advantage must depend on differences within the group"


def check_groups_independent(advantage_fn, rewards, num_generations, group, other, new_rewards, *,
                             scale_rewards="group", eps=1e-4):
    """Changing one group's rewards leaves every other group's advantages unchanged (per-group scaling)."""
    G = num_generations
    changed = list(rewards)
    changed[other * G:(other + 1) * G] = new_rewards
    before = _group(_advantages(advantage_fn, rewards, G, scale_rewards, eps), group, G)
    after = _group(_advantages(advantage_fn, changed, G, scale_rewards, eps), group, G)
    change = float((after - before).abs().max())
    assert change <= INDEPENDENCE_TOLERANCE * _scale(before), \
        f"changing group {other}'s rewards to {show(new_rewards)} changes group {group}'s advantages from " \
        f"{show(before)} to {show(after)}: groups are not normalised independently"


def check_monotone_in_group(advantage_fn, rewards, num_generations, *, scale_rewards="group", eps=1e-4):
    """Within a group, a higher reward never gets a lower advantage."""
    G = num_generations
    advantages = _advantages(advantage_fn, rewards, G, scale_rewards, eps)
    for k in range(len(rewards) // G):
        r, a = _group(rewards, k, G), _group(advantages, k, G)
        tolerance = INDEPENDENCE_TOLERANCE * _scale(a)
        for i in range(G):
            for j in range(G):
                assert not (r[i] > r[j] and a[i] < a[j] - tolerance), \
                    f"in group {k} (rewards {show(r)}, advantages {show(a)}) reward {r[i]:.7g} gets advantage " \
                    f"{float(a[i]):.4g}, below the {float(a[j]):.4g} of the worse reward {r[j]:.7g}"


def float32(value: float) -> float:
    return float(np.float32(value))


# Multiples of 1/8 in [-16, 16]: sums and integer shifts of them are exact in float32, so only a wrong
# implementation (not rounding) can break the sum, shift and independence properties; a group that is not flat
# has a std of at least ~0.04.
DYADIC = st.integers(min_value=-128, max_value=128).map(lambda k: k / 8)
AWKWARD = st.one_of(st.sampled_from(AWKWARD_REWARDS).map(float32),
                    st.floats(min_value=-100, max_value=100, allow_nan=False, width=32))
WIDE = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)


@st.composite
def _groups(draw, values=DYADIC, min_groups=1):
    """(rewards [P * G], G): groups of G values, some of them flat."""
    G = draw(st.integers(min_value=2, max_value=8))
    P = draw(st.integers(min_value=min_groups, max_value=4))
    rewards = []
    for _ in range(P):
        flat = values.map(lambda v: [v] * G)
        rewards += draw(st.one_of(flat, arrays(np.float64, (G,), elements=values).map(list)))
    return [float(r) for r in rewards], G


@st.composite
def reward_batches(draw, values=DYADIC):
    return RewardBatch(*draw(_groups(values)))


@st.composite
def flat_groups(draw):
    rewards, G = draw(_groups())
    group = draw(st.integers(min_value=0, max_value=len(rewards) // G - 1))
    value = draw(AWKWARD)
    rewards[group * G:(group + 1) * G] = [value] * G
    return FlatGroup(rewards, G, group)


@st.composite
def shifted_groups(draw):
    rewards, G = draw(_groups())
    group = draw(st.integers(min_value=0, max_value=len(rewards) // G - 1))
    return ShiftedGroup(rewards, G, group, float(draw(st.integers(min_value=-64, max_value=64))))


@st.composite
def changed_groups(draw):
    rewards, G = draw(_groups(min_groups=2))
    group, other = draw(st.permutations(range(len(rewards) // G)))[:2]
    return ChangedGroup(rewards, G, group, other, [float(r) for r in draw(arrays(np.float64, (G,), elements=DYADIC))])
