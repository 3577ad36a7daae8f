"""Faulty plug-ins, each a bug seen in real GRPO code, loaded through the documented plug points by the selftest."""
from __future__ import annotations

import torch

from flatline.trainer.algorithm import completion_mask, policy_loss


def batch_normalised_advantages(rewards, num_generations, scale_rewards="group", eps=1e-4):
    """Baseline and scale over the whole batch instead of per group (Search-R1 #88's class of bug)."""
    rewards = rewards.float()
    return (rewards - rewards.mean()) / (rewards.std() + eps)  # [N]


def shifted_group_advantages(rewards, num_generations, scale_rewards="group", eps=1e-4):
    """Groups cut one completion off: the completions of a prompt are not where the code expects them."""
    shifted = torch.roll(rewards.float(), 1).view(-1, num_generations)  # [P, G]
    advantages = (shifted - shifted.mean(dim=1, keepdim=True)) / (shifted.std(dim=1, keepdim=True) + eps)
    return torch.roll(advantages.reshape(-1), -1)  # [N]


def float32_std_advantages(rewards, num_generations, scale_rewards="group", eps=1e-6):
    """Per-group advantages with the std taken in float32: identical rewards such as 1.350639 keep a std of ~1e-7."""
    grouped = rewards.float().view(-1, num_generations)  # [P, G]
    return ((grouped - grouped.mean(dim=1, keepdim=True)) / (grouped.std(dim=1, keepdim=True) + eps)).reshape(-1)


def constant_reward(prompts, completions, **columns):
    """A reward that ignores the completion (a verifier wired to the wrong field)."""
    return [1.0 for _ in completions]


def constant_awkward_reward(prompts, completions, **columns):
    """A constant reward whose value is not exactly representable: float32 std of a group is ~1.2e-7, not 0."""
    return [1.350639 for _ in completions]


def raising_reward(prompts, completions, **columns):
    """Pays for completions that start with a letter from a to m, and raises on a batch whose first completion does
    not start with a letter (a parser that chokes on some outputs)."""
    first = completions[0].strip()[:1]
    if not first.isalpha():
        raise ValueError(f"could not parse completion {completions[0]!r}")
    return [float(c.strip()[:1].lower() in "abcdefghijklm") for c in completions]


def sometimes_none_reward(prompts, completions, **columns):
    """Returns None for completions it cannot parse (here: those not starting with a letter), as TRL reward
    functions do for unparsable output."""
    return [float(c.strip()[:1].lower() in "abcdefghijklm") if c.strip()[:1].isalpha() else None
            for c in completions]


def sometimes_infinite_reward(prompts, completions, **columns):
    """Pays -inf for completions starting with a digit (a log-probability style score of an impossible answer)."""
    return [float("-inf") if c.strip()[:1].isdigit() else float(c.strip()[:1].isalpha()) for c in completions]


def detached_loss(logps, old_logps, advantages, mask, **kwargs):
    """The policy loss computed on detached logprobs: a value, no gradient."""
    return policy_loss(logps.detach(), old_logps, advantages, mask, **kwargs)


def sign_flipped_loss(logps, old_logps, advantages, mask, **kwargs):
    """The policy loss with its sign flipped: gradient ascent on the loss, i.e. descent on the reward."""
    loss, parts = policy_loss(logps, old_logps, advantages, mask, **kwargs)
    return -loss, parts


def attention_mask_as_loss_mask(completion_ids, eos_token_ids, prompt_ids=None, prompt_mask=None):
    """The loss mask copied from the attention mask over the whole sequence: the prompt's real tokens are trained
    on with the completion's (a hand-written loop that forgot labels = -100 on the prompt)."""
    return torch.cat([prompt_mask.long(), completion_mask(completion_ids, eos_token_ids)], dim=1)  # [N, L+T]


def late_starting_mask(completion_ids, eos_token_ids):
    """The right mask shifted one token late: each completion's first token is never trained on (a collator that
    shifts labels without shifting the mask)."""
    mask = completion_mask(completion_ids, eos_token_ids)
    mask[:, 0] = 0
    return mask


def eos_dropping_mask(completion_ids, eos_token_ids):
    """`completion_ids != pad_token_id` with pad == eos: each completion's EOS is masked out with the padding, so
    the model is never taught to stop (TRL #4970, #4974)."""
    return (~torch.isin(completion_ids, torch.as_tensor(list(eos_token_ids)))).long()
