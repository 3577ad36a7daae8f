"""Planted faults of multi-turn episodes that need a plug-in: a grader that overruns its deadline on 30% of episodes,
and a loss mask built from the transcript's non-pad tokens (tool outputs trained on, the usual hand-written mask)."""
from __future__ import annotations

import time
import zlib

import torch

SLOW_SHARE = 0.3
SLOW_SECONDS = 0.5


def slow_grader(prompts, completions, **columns):
    """Grades the answer against `value`, but on ~30% of episodes (by a hash of the answer and key) takes longer than
    a 0.1 s grader_timeout_s, as a sandbox or HTTP grader under load does."""
    out = []
    for completion, key, value in zip(completions, columns["key"], columns["value"]):
        if zlib.crc32(f"{key}|{completion}".encode()) % 100 < SLOW_SHARE * 100:
            time.sleep(SLOW_SECONDS)
        numbers = [int(t) for t in completion.replace(",", " ").split() if t.lstrip("-").isdigit()]
        out.append(float(bool(numbers) and numbers[-1] == value))
    return out


def transcript_mask(completion_ids, eos_token_ids, prompt_ids=None, prompt_mask=None):
    """Every transcript token up to the EOS that closes the model's last turn: the model's turns and the tool outputs
    between them. With pad == eos (SmolLM2) that EOS is the first of the row's trailing run of EOS ids; a last turn cut
    at max_completion_length has none, so there the mask takes one padding token too."""
    is_eos = torch.isin(completion_ids, torch.as_tensor(list(eos_token_ids)))  # [N, T]
    positions = torch.arange(completion_ids.size(1)).unsqueeze(0)  # [1, T]
    last_text = torch.where(~is_eos, positions, torch.full_like(completion_ids, -1)).max(dim=1).values  # [N]
    return (positions <= (last_text + 1).unsqueeze(1)).long()  # [N, T]
