"""Properties of a mask_fn(completion_ids [N, T], eos_token_ids[, prompt_ids, prompt_mask]) -> [N, T] or [N, L+T],
checked on real tokenised chat completions (the config's tokenizer) with pad == eos.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from hypothesis import strategies as st

from flatline.common.errors import PluginError
from flatline.trainer.plugins import call_mask_fn

CHAT_QUESTION = "Which river flows through the capital of the country where the Eiffel Tower stands?"
REPLY_PIECES = ("Answer:", "Paris", "the Seine", "\n", "42", "I think", "<|im_end|>", "<|endoftext|>", "</s>", ".")


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
    from flatline.trainer.models import (
        EMBEDDED,
        TINY,
        _smollm2_tokenizer,
        load_tokenizer,
        resolve_source,
    )

    return _smollm2_tokenizer() if model in (EMBEDDED, TINY) else load_tokenizer(resolve_source(model))
