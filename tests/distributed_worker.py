"""One process of a `flatline train` launch for the distributed tests (tests/test_distributed.py).

    python tests/distributed_worker.py OUT --ga 2                          # one process, the global batch
    torchrun --nproc_per_node 2 tests/distributed_worker.py OUT --ga 1     # two processes, half of it each
    torchrun ... tests/distributed_worker.py OUT --fail-rank 1            # rank 1 raises in its second step

Everything is flatline's own code (the CLI, the trainer, the gradient reduction, the probes, the run directory and
the log book) except the sampler: the ScriptedSampler's completions depend only on the prompt, the generation index
and how many batches it has sampled, so one process and two sample the same completions. Each rank pads to its own
longest completion, as real sampling does, so the merging of ragged ranks is exercised too.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flatline.trainer.samplers.base import SampleBatch, left_pad  # noqa: E402

MAX_NEW_TOKENS = 6


class ScriptedSampler:
    """Completions drawn from a generator seeded by (prompt tokens, the prompt's place in the global batch, generation
    index, batch number); lengths vary. The place is RANK x the prompts of a rank + the index: the bandit's prompts
    are all alike, and each rank must still draw what one process draws for those rows."""

    def __init__(self, pad_token_id: int, eos_token_ids: tuple[int, ...], vocab_size: int):
        self.pad_token_id, self.eos, self.vocab = pad_token_id, eos_token_ids[0], vocab_size
        self.batches = 0

    def sample(self, prompts, num_generations, max_new_tokens, temperature, top_p=1.0, top_k=0) -> SampleBatch:
        self.batches += 1
        rows = []
        first = int(os.environ.get("RANK", "0")) * len(prompts)  # this rank's first prompt in the global batch
        for index, prompt in enumerate(prompts, start=first):
            for g in range(num_generations):
                seed = (sum(prompt) * 7919 + index * 104729 + g * 31 + self.batches * 1000003) % (2 ** 31)
                rng = torch.Generator().manual_seed(seed)
                length = int(torch.randint(1, max_new_tokens + 1, (1,), generator=rng))
                tokens = torch.randint(3, self.vocab, (length,), generator=rng).tolist()
                if length < max_new_tokens:
                    tokens[-1] = self.eos
                rows.append(tokens)
        width = max(len(r) for r in rows)
        completion = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        logprobs = torch.zeros(len(rows), width)
        for i, r in enumerate(rows):
            completion[i, :len(r)] = torch.tensor(r)
            logprobs[i, :len(r)] = -1.0 - 0.01 * torch.arange(len(r))
        repeated = [p for p in prompts for _ in range(num_generations)]
        prompt_ids, prompt_mask = left_pad(repeated, self.pad_token_id)
        lengths = torch.tensor([len(r) for r in rows])
        truncated = torch.tensor([len(r) == max_new_tokens and r[-1] != self.eos for r in rows])
        return SampleBatch(prompt_ids, prompt_mask, completion, logprobs, lengths, truncated)

    def sync_weights(self, model) -> None:
        pass


def scripted_build_sampler(cfg, model, tokenizer, source, eos_token_ids, longest_prompt):
    return ScriptedSampler(tokenizer.pad_token_id, eos_token_ids, len(tokenizer))


def failing_step(step, fail_rank: int):
    """Trainer.step that raises on rank `fail_rank` at its second step."""
    def run(self):
        if self.world.rank == fail_rank and self.step_count == 1:
            raise ValueError(f"planted failure on rank {fail_rank}")
        return step(self)
    return run


def per_rank_log(sum_gradients, directory: Path):
    """loop.sum_gradients that also appends this rank's gradient norm before and after the all-reduce, and its
    rows' reward mean, to DIRECTORY/rank<R>.jsonl (the bench's per-rank numbers)."""
    import json

    def run(params, world):
        before = sum(float(p.grad.double().pow(2).sum()) for p in params if p.grad is not None) ** 0.5
        sum_gradients(params, world)
        after = sum(float(p.grad.double().pow(2).sum()) for p in params if p.grad is not None) ** 0.5
        with open(directory / f"rank{world.rank}.jsonl", "a", encoding="utf-8") as out:
            out.write(json.dumps({"rank": world.rank, "local_grad_norm": before, "reduced_grad_norm": after}) + "\n")
    return run


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--ga", type=int, default=1, help="gradient_accumulation_steps")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--probes", default="full")
    parser.add_argument("--fail-rank", type=int, default=-1)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--per-rank", help="a folder for each rank's gradient norms before and after the all-reduce")
    args = parser.parse_args()

    import flatline.trainer.loop as loop
    from flatline.harness.cli import main as cli
    from flatline.trainer.config import load_config, to_toml

    loop.build_sampler = scripted_build_sampler
    if args.per_rank:
        loop.sum_gradients = per_rank_log(loop.sum_gradients, Path(args.per_rank))
    if args.fail_rank >= 0:
        loop.Trainer.step = failing_step(loop.Trainer.step, args.fail_rank)
    torch.set_num_threads(1)
    settings = ["task=bandit", "model=tiny-random", "lora_r=8", "lora_alpha=16", "learning_rate=5e-2",
                "num_generations=4", "per_device_train_batch_size=8", f"max_completion_length={MAX_NEW_TOKENS}",
                f"max_steps={args.steps}", "report_to=none", "progress_bar=false", "eval_every=0", "train_size=16",
                "eval_size=4", "device=cpu", f"gradient_accumulation_steps={args.ga}", "seed=3"] + args.overrides
    out = Path(args.out)
    config = out.parent / f"config-{os.environ.get('RANK', 'single')}.toml"
    config.write_text(to_toml(load_config(None, settings)), encoding="utf-8")
    return cli(["train", str(config), "--out", str(out), "--probes", args.probes, "--no-preflight"])


if __name__ == "__main__":
    sys.exit(main())
