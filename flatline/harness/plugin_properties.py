"""Property tests of a user's own advantage_fn, mask_fn and loss_fn (the plug points), driven by Hypothesis.

Each check_* function takes the plug-in and one example and raises AssertionError naming what went wrong;
find_violations runs every property of a plug point over generated examples and returns Hypothesis's minimal
counterexample of each that fails. The cases run them on the session config's plug-ins, no model trained:

    pytest cases/ --flatline-config my.toml -k advantage        # also: -k masking (mask_fn), -k gradients (loss_fn)

From Python:

    for violation in find_violations("advantage_fn", my_advantages, scale_rewards="group", eps=1e-4):
        print(violation.describe())
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import FailedHealthCheck, InvalidArgument, Unsatisfiable
from hypothesis.extra.numpy import arrays

from flatline.common.errors import PluginError
from flatline.trainer.plugins import call_mask_fn

PLUG_POINTS = ("advantage_fn", "mask_fn", "loss_fn")
# Generated examples per property: enough to find the bugs of diagnostics/selftest/plugins.py every time, fast
# enough (a second or two per plug point) to run in every `pytest cases/`.
MAX_EXAMPLES = 50
# |advantage| below this counts as zero (a flat group's float32 trap gives ~1e-3).
ZERO_ADVANTAGE = 1e-6
# Relative tolerances, times max(1, max |advantage|): a group's sum (times G), a shift of the rewards
# (float32 rounding of a shifted mean, over a std of at least ~0.04), other groups' changes (none at all).
SUM_TOLERANCE = 1e-3
SHIFT_TOLERANCE = 1e-3
INDEPENDENCE_TOLERANCE = 1e-6
# Reward values that are not exactly representable: G copies of them have a float32 std near 1e-7, not 0.
AWKWARD_REWARDS = (1.350639, 0.1, 0.7, 1 / 3, 2.2, -0.3)
CHAT_QUESTION = "Which river flows through the capital of the country where the Eiffel Tower stands?"
REPLY_PIECES = ("Answer:", "Paris", "the Seine", "\n", "42", "I think", "<|im_end|>", "<|endoftext|>", "</s>", ".")

# Derandomized: the same plug-in gets the same verdict every run; no example database is written to the cwd.
_SETTINGS = dict(deadline=None, derandomize=True, database=None, report_multiple_bugs=False,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                 phases=(Phase.explicit, Phase.generate, Phase.shrink))
_HYPOTHESIS_PREFIX = re.compile(r"^(Failing|Falsifying) (test case|explicit example|example):\s*")


# --- advantage_fn(rewards [N], num_generations, scale_rewards=..., eps=...) -> [N] ---

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


def _show(values) -> str:
    return "[" + ", ".join(f"{float(v):.7g}" for v in values) + "]"


def check_finite_and_shaped(advantage_fn, rewards, num_generations, *, scale_rewards="group", eps=1e-4):
    """One finite advantage per completion, the rewards tensor left unchanged."""
    advantages = _advantages(advantage_fn, rewards, num_generations, scale_rewards, eps)
    bad = (~torch.isfinite(advantages)).nonzero().flatten().tolist()
    assert not bad, f"non-finite advantages at {bad}: {_show(advantages)} for finite rewards {_show(rewards)}"


def check_groups_sum_to_zero(advantage_fn, rewards, num_generations, *, scale_rewards="group", eps=1e-4):
    """Each group's advantages sum to ~0: its baseline is its own mean."""
    G = num_generations
    advantages = _advantages(advantage_fn, rewards, G, scale_rewards, eps)
    for k in range(len(rewards) // G):
        group = _group(advantages, k, G)
        total = float(group.sum())
        assert abs(total) <= SUM_TOLERANCE * G * _scale(group), \
            f"group {k} (rewards {_show(_group(rewards, k, G))}) gets advantages {_show(group)}, which sum to " \
            f"{total:.4g}, not 0: the baseline is not the group's own mean"


def check_flat_group_is_zero(advantage_fn, rewards, num_generations, group, *, scale_rewards="group", eps=1e-4):
    """A group whose rewards are all equal gets |advantage| < 1e-6: it carries no signal."""
    G = num_generations
    advantages = _group(_advantages(advantage_fn, rewards, G, scale_rewards, eps), group, G)
    worst = float(advantages.abs().max())
    assert worst < ZERO_ADVANTAGE, \
        f"group {group} of {G} identical rewards {rewards[group * G]!r} gets advantages {_show(advantages)} " \
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
        f"adding {shift:g} to rewards {_show(rewards[i] for i in moved)} changes their advantages from " \
        f"{_show(before[index])} to {_show(after[index])}: the advantage must depend on differences within the group"


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
        f"changing group {other}'s rewards to {_show(new_rewards)} changes group {group}'s advantages from " \
        f"{_show(before)} to {_show(after)}: groups are not normalised independently"


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
                    f"in group {k} (rewards {_show(r)}, advantages {_show(a)}) reward {r[i]:.7g} gets advantage " \
                    f"{float(a[i]):.4g}, below the {float(a[j]):.4g} of the worse reward {r[j]:.7g}"


def _float32(value: float) -> float:
    return float(np.float32(value))


# Multiples of 1/8 in [-16, 16]: sums and integer shifts of them are exact in float32, so only a wrong
# implementation (not rounding) can break the sum, shift and independence properties; a group that is not flat
# has a std of at least ~0.04.
DYADIC = st.integers(min_value=-128, max_value=128).map(lambda k: k / 8)
AWKWARD = st.one_of(st.sampled_from(AWKWARD_REWARDS).map(_float32),
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


# --- mask_fn(completion_ids [N, T], eos_token_ids[, prompt_ids, prompt_mask]) -> [N, T] or [N, L+T] ---

class ChatCompletions(NamedTuple):
    replies: list[str]  # the assistant's messages, rendered with the chat template
    completion_ids: list[list[int]]  # [N, T] each reply's tokens, cut at T, right-padded with pad == eos
    eos_token_ids: tuple[int, ...]
    prompt_ids: list[list[int]]  # [N, L] the chat's generation prompt, left-padded (pad == eos)
    prompt_mask: list[list[int]]  # [N, L]


def _first_eos(row: list[int], eos_token_ids) -> int | None:
    return next((t for t, token in enumerate(row) if token in eos_token_ids), None)


def _masks(mask_fn, completion_ids, eos_token_ids, prompt_ids, prompt_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Call mask_fn as the trainer does; checks shape and 0/1 values, leaves the ids alone.
    Returns (completion part [N, T], prompt part [N, L], zero for a mask over completion positions)."""
    ids = torch.tensor(completion_ids, dtype=torch.long)  # [N, T]
    prompt = torch.tensor(prompt_ids, dtype=torch.long)  # [N, L]
    try:
        completion_part, prompt_part = call_mask_fn(mask_fn, ids, tuple(eos_token_ids), prompt,
                                                    torch.tensor(prompt_mask, dtype=torch.long))
    except PluginError as exc:
        raise AssertionError(str(exc)) from None
    prompt_part = torch.zeros_like(prompt) if prompt_part is None else prompt_part
    values = torch.cat([prompt_part, completion_part], dim=1).double()
    assert bool(((values == 0) | (values == 1)).all()), f"mask values other than 0 and 1: {values.long().tolist()}"
    assert torch.equal(ids, torch.tensor(completion_ids, dtype=torch.long)), "changed completion_ids in place"
    assert torch.equal(prompt, torch.tensor(prompt_ids, dtype=torch.long)), "changed prompt_ids in place"
    return completion_part.long(), prompt_part.long()


def _mask(mask_fn, completion_ids, eos_token_ids, prompt_ids, prompt_mask) -> torch.Tensor:
    return _masks(mask_fn, completion_ids, eos_token_ids, prompt_ids, prompt_mask)[0]


def check_mask_ends_at_first_eos(mask_fn, replies, completion_ids, eos_token_ids, prompt_ids, prompt_mask):
    """A completion that ends: 1 for every token up to and including its first EOS, 0 after (pad == eos)."""
    mask = _mask(mask_fn, completion_ids, eos_token_ids, prompt_ids, prompt_mask)
    for n, row in enumerate(completion_ids):
        end = _first_eos(row, eos_token_ids)
        if end is None:
            continue
        expected = [1] * (end + 1) + [0] * (len(row) - end - 1)
        got = mask[n].tolist()
        what = "leaves the EOS itself out of the loss" if got[end] == 0 else \
            "leaves reply tokens out of the loss" if 0 in got[:end] else "trains on the padding after the EOS"
        assert got == expected, \
            f"completion {n} (reply {replies[n]!r}, ids {row}, first EOS at {end}, pad == eos {row[-1]}): mask " \
            f"{got}, expected {expected}; it {what}"


def check_mask_keeps_truncated_whole(mask_fn, replies, completion_ids, eos_token_ids, prompt_ids, prompt_mask):
    """A completion with no EOS (cut at the length limit) is in the loss whole."""
    mask = _mask(mask_fn, completion_ids, eos_token_ids, prompt_ids, prompt_mask)
    for n, row in enumerate(completion_ids):
        if _first_eos(row, eos_token_ids) is None:
            assert mask[n].tolist() == [1] * len(row), \
                f"completion {n} (reply {replies[n]!r} cut at {len(row)} tokens: ids {row}, no EOS) gets mask " \
                f"{mask[n].tolist()}; a truncated completion is trained on whole"


def check_mask_sane(mask_fn, replies, completion_ids, eos_token_ids, prompt_ids, prompt_mask):
    """[N, T] (or [N, L+T] over prompt and completion) of 0/1, the ids left unchanged."""
    _mask(mask_fn, completion_ids, eos_token_ids, prompt_ids, prompt_mask)


def check_mask_leaves_prompt_out(mask_fn, replies, completion_ids, eos_token_ids, prompt_ids, prompt_mask):
    """No prompt token is in the loss (a mask over the whole sequence is 0 on every prompt column)."""
    prompt_part = _masks(mask_fn, completion_ids, eos_token_ids, prompt_ids, prompt_mask)[1]
    for n, row in enumerate(prompt_part.tolist()):
        marked = [t for t, value in enumerate(row) if value]
        assert not marked, \
            f"row {n}: prompt columns {marked} of {len(row)} are in the loss (prompt ids {prompt_ids[n]}, prompt mask " \
            f"{prompt_mask[n]}); the model would be trained to predict its own prompt"


def _ids(encoded) -> list[int]:
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def generation_prompt_ids(tokenizer) -> list[int]:
    """The chat prompt for CHAT_QUESTION as generate() sees it (the plain question without a chat template)."""
    try:
        return _ids(tokenizer.apply_chat_template([{"role": "user", "content": CHAT_QUESTION}],
                                                  add_generation_prompt=True, tokenize=True))
    except (ValueError, TypeError, KeyError):
        return _ids(tokenizer(CHAT_QUESTION, add_special_tokens=False))


def reply_ids(tokenizer, reply: str) -> list[int]:
    """The tokens a model generates for `reply` after the chat template's generation prompt (the template's
    end-of-turn and what follows it included); the reply and EOS when the tokenizer has no chat template."""
    chat = [{"role": "user", "content": CHAT_QUESTION}]
    try:
        prompt = _ids(tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True))
        full = _ids(tokenizer.apply_chat_template(chat + [{"role": "assistant", "content": reply}], tokenize=True))
    except (ValueError, TypeError, KeyError):
        prompt, full = [], []
    if prompt and full[:len(prompt)] == prompt and len(full) > len(prompt):
        return full[len(prompt):]
    return _ids(tokenizer(reply, add_special_tokens=False)) + [tokenizer.eos_token_id]


@st.composite
def chat_completions(draw, tokenizer):
    """A batch of real tokenised assistant replies, cut at a drawn T (those longer never end) and right-padded
    with the EOS id, as generate() pads when pad == eos (SmolLM2)."""
    eos = tokenizer.eos_token_id
    text = st.one_of(st.sampled_from(REPLY_PIECES), st.text(max_size=6))
    replies = draw(st.lists(st.lists(text, max_size=6).map(" ".join), min_size=1, max_size=4))
    rows = [reply_ids(tokenizer, reply) for reply in replies]
    T = draw(st.integers(min_value=1, max_value=max(len(r) for r in rows) + 2))
    ids = [row[:T] + [eos] * (T - len(row[:T])) for row in rows]
    prompt = generation_prompt_ids(tokenizer)
    pads = draw(st.integers(min_value=0, max_value=2))  # left padding, as when a longer prompt shares the batch
    prompt_ids = [[eos] * pads + prompt for _ in rows]
    prompt_mask = [[0] * pads + [1] * len(prompt) for _ in rows]
    return ChatCompletions(replies, ids, (eos,), prompt_ids, prompt_mask)


@functools.lru_cache(maxsize=4)
def chat_tokenizer(model: str = "smollm2-135m"):
    """The tokenizer of a config's model (SmolLM2's, cached by flatline, for the embedded and tiny models)."""
    from flatline.trainer.models import EMBEDDED, TINY, _smollm2_tokenizer, load_tokenizer, resolve_source

    return _smollm2_tokenizer() if model in (EMBEDDED, TINY) else load_tokenizer(resolve_source(model))


# --- loss_fn(logps, old_logps, advantages, mask, *, ...) -> (loss, parts) ---

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
                f"completion {n} has advantage 0 but gets gradient {_show(grad[n])} (beta 0: nothing should push it)"


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


# --- running the properties ---

@dataclass(frozen=True)
class Property:
    plug_point: str
    name: str
    check: Callable  # check(plug_in, **example fields, **options); raises AssertionError
    examples: Callable  # examples(**inputs) -> a strategy of NamedTuples whose fields are the check's arguments
    explicit: tuple = ()  # examples always tried first

    @property
    def statement(self) -> str:
        return " ".join(self.check.__doc__.split())


def properties(plug_point: str, scale_rewards: str = "group") -> list[Property]:
    """The properties of a plug point; groups_independent only where each group is scaled on its own."""
    if plug_point == "advantage_fn":
        trap = FlatGroup([_float32(1.350639)] * 8, 8, 0)
        chosen = [Property(plug_point, "finite_and_shaped", check_finite_and_shaped, lambda: reward_batches(WIDE)),
                  Property(plug_point, "groups_sum_to_zero", check_groups_sum_to_zero, reward_batches),
                  Property(plug_point, "flat_group_is_zero", check_flat_group_is_zero, flat_groups, (trap,)),
                  Property(plug_point, "shift_invariant", check_shift_invariant, shifted_groups),
                  Property(plug_point, "groups_independent", check_groups_independent, changed_groups),
                  Property(plug_point, "monotone_in_group", check_monotone_in_group, reward_batches)]
        return [p for p in chosen if not (p.name == "groups_independent" and scale_rewards == "batch")]
    if plug_point == "mask_fn":
        return [Property(plug_point, "sane", check_mask_sane, chat_completions),
                Property(plug_point, "ends_at_first_eos", check_mask_ends_at_first_eos, chat_completions),
                Property(plug_point, "keeps_truncated_whole", check_mask_keeps_truncated_whole, chat_completions),
                Property(plug_point, "leaves_prompt_out", check_mask_leaves_prompt_out, chat_completions)]
    if plug_point == "loss_fn":
        return [Property(plug_point, "finite", check_loss_finite, policy_batches),
                Property(plug_point, "gradient_follows_advantage", check_gradient_follows_advantage, policy_batches),
                Property(plug_point, "masked_tokens_get_no_gradient", check_masked_tokens_get_no_gradient,
                         policy_batches),
                Property(plug_point, "zero_advantage_gets_no_gradient", check_zero_advantage_gets_no_gradient,
                         policy_batches)]
    raise ValueError(f"plug point must be one of {PLUG_POINTS}, got {plug_point!r}")


def dotted_path(function: Callable) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', repr(function))}"


@dataclass(frozen=True)
class Violation:
    property: Property
    plug_in: str  # dotted path of the function tested
    error: str  # the assertion (or exception) on the minimal counterexample
    counterexample: str  # Hypothesis's minimal failing call

    def describe(self) -> str:
        return (f"{self.plug_in} violates {self.property.plug_point}.{self.property.name}: {self.property.statement}\n"
                f"  {self.error}\n"
                f"  Falsifying example (Hypothesis's minimal counterexample): {self.counterexample}")


def _counterexample(exc: BaseException) -> str:
    notes = [_HYPOTHESIS_PREFIX.sub("", note) for note in getattr(exc, "__notes__", [])
             if _HYPOTHESIS_PREFIX.match(note)]
    return notes[0] if notes else "(Hypothesis reported no example)"


def falsify(prop: Property, plug_in: Callable, options: dict, inputs: dict,
            max_examples: int = MAX_EXAMPLES) -> Violation | None:
    """Run one property under Hypothesis; None when it held on every example, else the minimal counterexample."""
    def holds(example):
        prop.check(plug_in, **example._asdict(), **options)

    holds.__name__ = holds.__qualname__ = prop.name
    test = given(example=prop.examples(**inputs))(holds)
    for explicit in prop.explicit:
        test = example(example=explicit)(test)
    test = settings(max_examples=max_examples, **_SETTINGS)(test)
    try:
        test()
    except (FailedHealthCheck, InvalidArgument, Unsatisfiable):
        raise  # the harness's own problem, not the plug-in's
    except Exception as exc:  # the plug-in may fail in any way; Hypothesis has shrunk it to its smallest example
        error = str(exc) if isinstance(exc, AssertionError) else f"raised {type(exc).__name__}: {exc}"
        return Violation(prop, dotted_path(plug_in), error, _counterexample(exc))
    return None


def find_violations(plug_point: str, plug_in: Callable, *, tokenizer=None, max_examples: int = MAX_EXAMPLES,
                    **options) -> list[Violation]:
    """Every violated property of `plug_in` at `plug_point`.

    options: how the trainer calls it (advantage_fn: scale_rewards, eps; loss_fn: loss_type, epsilon_low,
    epsilon_high, max_completion_length); mask_fn needs the tokenizer whose chats it is tested on."""
    inputs = {"tokenizer": tokenizer or chat_tokenizer()} if plug_point == "mask_fn" else {}
    found = (falsify(p, plug_in, options, inputs, max_examples)
             for p in properties(plug_point, options.get("scale_rewards", "group")))
    return [v for v in found if v is not None]


# --- as a verdict of the cases ---

TITLES = {
    "advantage_fn": "advantage_fn keeps the group-advantage invariants",
    "mask_fn": "mask_fn covers each completion up to and including its first EOS",
    "loss_fn": "loss_fn's gradient raises positive-advantage tokens and lowers negative ones",
}
PRESCRIPTIONS = {
    "advantage_fn": "take each group's mean and std over its own num_generations adjacent rewards "
                    "(rewards.view(-1, G)) in float64, and give a group whose rewards are all equal exactly zero "
                    "advantages, as flatline.trainer.algorithm.group_advantages does",
    "mask_fn": "find each row's first EOS (any of eos_token_ids, never the pad id) and keep every token up to and "
               "including it; keep a row without EOS whole, as flatline.trainer.algorithm.completion_mask does",
    "loss_fn": "minimise -min(ratio * A, clip(ratio) * A) over the masked tokens, on logprobs that keep their "
               "autograd graph, as flatline.trainer.algorithm.policy_loss does",
}
# Characters of the counterexample and of the failure kept in a verdict's evidence (the case's message has all).
COUNTEREXAMPLE_CHARS = 500
FAILURE_CHARS = 300


def call_options(plug_point: str, cfg) -> dict:
    """The keyword arguments the trainer calls a plug point with under `cfg`."""
    if plug_point == "advantage_fn":
        return {"scale_rewards": cfg.scale_rewards, "eps": cfg.advantage_eps}
    if plug_point == "loss_fn":
        return {"loss_type": cfg.loss_type, "epsilon_low": cfg.epsilon, "epsilon_high": cfg.epsilon_upper,
                "max_completion_length": cfg.max_completion_length}
    return {}


def judge_plugin(plug_point: str, cfg, max_examples: int = MAX_EXAMPLES):
    """The property verdict of `cfg`'s plug-in at `plug_point` (flatline's default when the config names none).

    Returns (Verdict with id plugins.<plug_point>, the failure text: every violation with its counterexample)."""
    from flatline.diagnostics.verdict import Verdict
    from flatline.trainer.plugins import load_plugins

    plug_in = getattr(load_plugins(cfg), plug_point)
    tokenizer = chat_tokenizer(cfg.model) if plug_point == "mask_fn" else None
    options = call_options(plug_point, cfg)
    checked = properties(plug_point, options.get("scale_rewards", "group"))
    violations = find_violations(plug_point, plug_in, tokenizer=tokenizer, max_examples=max_examples, **options)
    evidence = {"plug_in": dotted_path(plug_in), "properties": len(checked), "examples_each": max_examples}
    verdict_id, title = f"plugins.{plug_point}", TITLES[plug_point]
    if not violations:
        reason = f"{len(checked)} properties held on {max_examples} generated examples each"
        return Verdict(verdict_id, title, "pass", evidence, "", [], reason), ""
    first = violations[0]
    names = ", ".join(v.property.name for v in violations)
    evidence.update(violated=names, failure=first.error[:FAILURE_CHARS],
                    counterexample=" ".join(first.counterexample.split())[:COUNTEREXAMPLE_CHARS])
    statement = first.property.statement
    reason = f"{dotted_path(plug_in)} breaks {names} (first: {statement[0].lower()}{statement[1:].rstrip('.')})"
    verdict = Verdict(verdict_id, title, "fail", evidence, PRESCRIPTIONS[plug_point], [], reason)
    header = f"{verdict_id} [fail] {dotted_path(plug_in)} violates {len(violations)} of {len(checked)} properties"
    details = "\n\n".join(v.describe() for v in violations)
    return verdict, f"{header}\n\n{details}\n\ntry: {PRESCRIPTIONS[plug_point]}"
