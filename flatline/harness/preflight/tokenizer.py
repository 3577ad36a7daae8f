"""The tokenizer's pad token and its chat template.

- No pad token: batches are padded with EOS (flatline does so), so pad == eos. pad == eos: a loss mask built from
  the attention mask, or one that drops every pad id, also drops each completion's real EOS, and the model never
  learns to stop (trl#4970, #4974; masking.eos_excluded). flatline's own completion_mask keeps the first EOS.
- A chat template that is missing, or not prefix-preserving: rendering the conversation so far must give the tokens
  rendered before, plus more. Templates that rewrite earlier turns (Qwen3 strips past <think> blocks, prime-rl#1334;
  trl#6361) make multi-turn training score tokens the sampler never produced (docs/field-2026-11.md row 9).
"""
from __future__ import annotations

from typing import Callable

from flatline.harness.preflight.findings import Finding
from flatline.trainer.episodes.runner import first_difference  # the episode runner's prefix test

# Three turns of a conversation; the assistant turns carry a reasoning block, which templates that rewrite history
# (Qwen3) drop from earlier turns.
CONVERSATION = [
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "<think>Two plus three.</think>2 + 3 = 5"},
    {"role": "user", "content": "And 5 + 4?"},
    {"role": "assistant", "content": "<think>Five plus four.</think>5 + 4 = 9"},
    {"role": "user", "content": "And 9 - 1?"},
    {"role": "assistant", "content": "<think>Nine minus one.</think>9 - 1 = 8"},
]


def pad_findings(pad_token_id: int | None, eos_token_ids: tuple[int, ...], custom_mask: bool) -> list[Finding]:
    """warn for no pad token, or pad == eos with a custom mask_fn; info for pad == eos under flatline's own mask."""
    numbers = {"pad_token_id": "none" if pad_token_id is None else pad_token_id,
               "eos_token_ids": ", ".join(map(str, eos_token_ids))}
    risk = ("a mask built from the attention mask, or one that drops pad ids, then drops each completion's EOS too and "
            "the model never learns to stop (masking.eos_excluded)")
    if pad_token_id is None:
        return [Finding("tokenizer", "warn", f"the tokenizer has no pad token: batches are padded with EOS, so pad == "
                        f"eos; {risk}", numbers, "give the tokenizer a pad token that is not EOS (e.g. its "
                        "<|finetune_right_pad_id|> or <pad>), or keep flatline's completion_mask, which keeps the "
                        "first EOS")]
    if pad_token_id in eos_token_ids:
        severity = "warn" if custom_mask else "info"
        tail = "your mask_fn must keep the first EOS (cases/test_plugins.py -k masking tests it)" if custom_mask \
            else "flatline's completion_mask keeps the first EOS"
        return [Finding("tokenizer", severity, f"pad == eos (id {pad_token_id}): {tail}; elsewhere {risk}", numbers,
                        "set a pad token that is not EOS" if custom_mask else "")]
    return []


def template_findings(render: Callable[[list[dict], bool], list[int]] | None, decode: Callable[[list[int]], str],
                      conversation: list[dict] = CONVERSATION) -> list[Finding]:
    """Render 1, 2 and 3 turns (render(messages, add_generation_prompt) -> ids; None: no template): each must be a
    prefix of the next, and each turn's prompt (add_generation_prompt) a prefix of that turn completed."""
    if render is None:
        return [Finding("chat_template", "warn", "the tokenizer has no chat template: prompts are plain text joined "
                        "by newlines, which an instruct model was not trained on", {},
                        "use the instruct model's tokenizer, or set tokenizer.chat_template")]
    turns = [conversation[: 2 * k] for k in (1, 2, 3)]
    rendered = [list(render(messages, False)) for messages in turns]
    for k in range(2):
        at = first_difference(rendered[k], rendered[k + 1])
        if at is not None:
            return [_broken(f"{k + 1} turn{'s' * k} rendered {'are' if k else 'is'} not a prefix of {k + 2} turns", at, rendered[k],
                            rendered[k + 1], decode)]
    for k, messages in enumerate(turns):
        prompt = list(render(messages[:-1], True))
        at = first_difference(prompt, rendered[k])
        if at is not None:
            return [_broken(f"the prompt of turn {k + 1} (with the generation prompt) is not a prefix of the turn "
                            f"completed", at, prompt, rendered[k], decode)]
    return [Finding("chat_template", "info", "chat template is prefix-preserving over 1, 2 and 3 turns",
                    {"tokens_3_turns": len(rendered[2])})]


def _broken(what: str, at: int, shorter: list[int], longer: list[int], decode) -> Finding:
    return Finding("chat_template", "warn", f"chat template is not prefix-preserving: {what} (they differ at token "
                   f"{at}: {decode(shorter[at:at + 8])!r} vs {decode(longer[at:at + 8])!r}); multi-turn training would "
                   f"score tokens the sampler never produced",
                   {"position": at, "shorter_tokens": len(shorter), "longer_tokens": len(longer)},
                   "use a template that renders earlier turns unchanged (e.g. keep past reasoning), or build each "
                   "turn's tokens by appending, never by re-rendering")
