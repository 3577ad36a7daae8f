"""Record: one GRPOTrainer step's captured tensors turned into step records, the probes' numbers and samples.

The batch probes read the step's generation batch (under several processes: every rank's rows, gathered on the main
process in process order); the policy probe reads the loss's last micro-batch on each rank, averaged over ranks.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from flatline.common.record import StepRecord, tiers_of
from flatline.integrations.trl_capture import Captured
from flatline.integrations.trl_parts import completion_extent, distributed, global_batch, group_ids, local_rows
from flatline.probes import ALL_PROBES, ProbeContext, ProbeSet
from flatline.probes.gradients import GradientProbe
from flatline.probes.policy import PolicyProbe
from flatline.probes.update import UpdateProbe

# Completions per step written to samples.jsonl.
SAMPLES_PER_STEP = 4


class StepProbes:
    """The batch probes (and the policy probe, when TRL's loss is captured) of one run, at one level."""

    def __init__(self, context: ProbeContext, level: str, trainer, main: bool, sees_loss: bool):
        tiers = tiers_of(level)
        model_level = (GradientProbe, UpdateProbe)  # on the optimizer's step: flatline.integrations.trl_capture
        self.batch = ProbeSet([c(context) for c in ALL_PROBES if c.tier in tiers and c not in model_level])
        # the loss sees shuffled micro-batches: no group structure there
        self.loss = ProbeSet([PolicyProbe(dataclasses.replace(context, num_generations=None))]) if sees_loss else None
        self.context, self.trainer, self.main = context, trainer, main

    def numbers(self, step: int, captured: Captured) -> tuple[dict, list[dict]]:
        """(this step's probe numbers, its samples for samples.jsonl). Collective under several processes: every
        rank calls it at every step."""
        row, samples = {}, []
        batch = captured.batch
        if batch is not None and "advantages" in batch:
            if distributed():  # every rank's rows, in process order, on the main process (a collective)
                batch = global_batch(batch, self.context.pad_token_id)
            if self.main:
                record = step_record(step, batch, self.context.eos_token_ids, self.trainer)
                row.update(self.batch.on_step(record))
                samples = sample_rows(record, self.context.tokenizer)
        if self.loss is not None and captured.loss_inputs is not None and captured.loss_logps is not None:
            row.update(rank_mean(self.loss.on_step(loss_record(step, captured.loss_inputs, captured.loss_logps))))
        return row, samples


def step_record(step: int, batch: dict, eos_token_ids: tuple[int, ...], trainer) -> StepRecord:
    """The generation batch as a step record: completions up to their first EOS, the rewards weighted as TRL weighs
    them (a row whose every function returned None: NaN), this process's rows of TRL's gathered rewards."""
    completion_ids, completion_mask = batch.get("completion_ids"), batch.get("completion_mask")
    lengths, truncated = completion_extent(completion_ids, eos_token_ids)
    rewards, components, weights = None, {}, None
    if "rewards_per_func" in batch:
        per_func = batch["rewards_per_func"]
        per_func = per_func[local_rows(per_func.shape[0], batch["advantages"].shape[0], trainer)]
        weight = torch.tensor(batch["weights"])
        rewards = (per_func * weight.unsqueeze(0)).nansum(dim=1)
        rewards[torch.isnan(per_func).all(dim=1)] = math.nan
        components = {name: [None if math.isnan(x) else float(x) for x in per_func[:, i].tolist()]
                      for i, name in enumerate(batch["names"])}
        weights = dict(zip(batch["names"], batch["weights"]))
    sampler, trainer_logps = batch.get("sampling_per_token_logps"), batch.get("old_per_token_logps")
    advantages = batch["advantages"].float()
    return StepRecord(
        step=step, prompt_ids=batch.get("prompt_ids"), prompt_mask=batch.get("prompt_mask"),
        completion_ids=completion_ids, completion_mask=completion_mask, completion_lengths=lengths,
        truncated=truncated, group_ids=group_ids(len(lengths), trainer.num_generations),
        rewards=rewards, reward_components=components, reward_weights=weights,
        advantages=advantages.reshape(-1) if advantages.dim() == 1 else advantages[:, 0],
        model=trainer.model,
        sampler_logprobs=sampler if trainer_logps is not None else None,
        trainer_logprobs=trainer_logps if sampler is not None else None)


def loss_record(step: int, inputs: dict, logps_and_entropies: tuple) -> StepRecord:
    """The last micro-batch as the loss saw it: its advantages and mask, the reference log-probs, and the
    log-probs and entropies of the forward it backpropagated."""
    logps, entropies = logps_and_entropies
    advantages = inputs["advantages"]
    return StepRecord(step=step, completion_mask=inputs["completion_mask"], trainer_logprobs=logps,
                      ref_logprobs=inputs.get("ref_per_token_logps"),
                      entropy=entropies.detach() if torch.is_tensor(entropies) else None,
                      advantages=advantages if advantages.dim() == 1 else advantages[:, 0])


def rank_mean(row: dict) -> dict:
    """Average numbers over ranks, over the union of the names every rank has (a number a rank lacks, or has
    non-finite, is left out of that name's mean). One process: unchanged."""
    if not distributed():
        return row
    local = sorted(k for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    everyone: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(everyone, local)
    names = sorted(set().union(*everyone))
    values = torch.tensor([float(row.get(k, math.nan)) for k in names], dtype=torch.float64)
    finite = torch.isfinite(values)
    totals = torch.stack([torch.where(finite, values, torch.zeros_like(values)), finite.double()])
    if torch.distributed.get_backend() == "nccl":
        totals = totals.cuda()
    torch.distributed.all_reduce(totals)
    totals = totals.cpu()
    means = torch.where(totals[1] > 0, totals[0] / totals[1].clamp(min=1), torch.full_like(totals[0], math.nan))
    return {**row, **dict(zip(names, means.tolist()))}


def sample_rows(record: StepRecord, tokenizer) -> list[dict]:
    """The first SAMPLES_PER_STEP completions of the step, decoded, with their reward and advantage."""
    if tokenizer is None or record.completion_ids is None:
        return []
    rows = []
    for i in range(min(SAMPLES_PER_STEP, record.completion_ids.shape[0])):
        n = int(record.completion_lengths[i])
        rows.append({
            "step": record.step, "index": i,
            "prompt": tokenizer.decode(record.prompt_ids[i][record.prompt_mask[i].bool()], skip_special_tokens=True),
            "completion": tokenizer.decode(record.completion_ids[i][:n], skip_special_tokens=True),
            "reward": None if record.rewards is None else float(record.rewards[i]),
            "advantage": float(record.advantages[i]), "truncated": bool(record.truncated[i])})
    return rows
