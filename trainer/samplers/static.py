"""`StaticSampler`: decoding with a preallocated key/value cache, each step replayed as one CUDA graph on a GPU.

On a GPU, transformers' `generate` spends most of a rollout launching kernels from Python and waiting on the host
(64 rows x 256 tokens of a 0.5B model: 8-9 s, of which the arithmetic is well under one). Here one decode step (the
model's forward for one token of every row, the sampling, the bookkeeping) reads and writes only fixed buffers, so
it is captured once as a CUDA graph and replayed; the host looks for the end (every row past EOS) every
CHECK_EVERY steps. Each distinct prompt is prefilled once and its keys and values copied to its G rows.
On a GPU the LoRA layers decode from folded copies of their weights (samplers/folded.py), refreshed in place before
every rollout, so a decode step reads each weight once and the captured graph stays valid.

The same code runs eagerly on the CPU (no graph), which is how the tests check it against the trainer's logprobs.
Logprobs are those of softmax(logits / temperature) at the sampled token, before top-p/top-k, as samplers/base.py
says; the sampled token itself follows temperature, then top-k, then top-p, as transformers' warpers do.
"""
from __future__ import annotations

import math
import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from flatline.trainer.algorithm import completion_mask
from flatline.trainer.logprobs import positions
from flatline.trainer.samplers import decoder
from flatline.trainer.samplers.base import SampleBatch, left_pad
from flatline.trainer.samplers.folded import FoldedWeights
from flatline.trainer.samplers.fused import compiled, fused_decoding

# Prompts are left-padded to a multiple of this, so batches whose longest prompt differs a little share one graph.
PROMPT_BUCKET = 64
# Decode steps between two looks (a host sync) at whether every row has ended.
CHECK_EVERY = 8
# Decode states (buffers and graph) kept at once: training and evaluation batches each keep theirs.
KEEP_STATES = 2
# Attention implementations whose masks this module can build (a [B, 1, Q, K] tensor, bool or additive).
MASKABLE = ("sdpa", "eager")


class StaticKVCache:
    """Keys and values of B rows x `length` positions per layer, written in place from `position` on.

    Duck-types the one method transformers' attention layers call on a cache, `update(keys, values, layer_idx)`;
    the buffers are allocated by the first call of each layer and keep their addresses, so a graph can replay.
    """

    def __init__(self, length: int, device):
        self.length = length
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.position = torch.zeros(1, dtype=torch.long, device=device)  # where the next token's entry goes

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if layer_idx == len(self.keys):
            batch, heads, _, dim = key_states.shape
            self.keys.append(key_states.new_zeros(batch, heads, self.length, dim))
            self.values.append(value_states.new_zeros(batch, heads, self.length, value_states.size(-1)))
        steps = key_states.size(2)
        index = self.position if steps == 1 else self.position + torch.arange(steps, device=key_states.device)
        self.keys[layer_idx].index_copy_(2, index, key_states)
        self.values[layer_idx].index_copy_(2, index, value_states)
        return self.keys[layer_idx], self.values[layer_idx]

    def load_prompts(self, prompt_cache: "StaticKVCache", prompt_of_row: torch.Tensor) -> None:
        """Copy each prompt's entries (positions 0..L-1 of `prompt_cache`) into its rows here."""
        width = prompt_cache.length
        if not self.keys:
            for keys, values in zip(prompt_cache.keys, prompt_cache.values):
                self.keys.append(keys.new_zeros(len(prompt_of_row), keys.size(1), self.length, keys.size(3)))
                self.values.append(values.new_zeros(len(prompt_of_row), values.size(1), self.length, values.size(3)))
        for mine, theirs in zip(self.keys + self.values, prompt_cache.keys + prompt_cache.values):
            mine[:, :, :width].copy_(theirs.index_select(0, prompt_of_row))


@dataclass(frozen=True)
class Settings:
    """What one captured graph is specialised to."""

    rows: int
    prompt_width: int
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    min_new_tokens: int


def attention_mask_4d(allowed: torch.Tensor, implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, Q, K] bool 'may attend' -> the additive mask the attention implementation adds, built once per forward.
    For sdpa it is what torch's sdpa makes of a bool mask (0 or -inf in the query's dtype), which it would otherwise
    build again in every layer; eager attention gets transformers' own (the dtype's minimum)."""
    blocked = -math.inf if implementation == "sdpa" else torch.finfo(dtype).min
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, blocked)


def prompt_mask_4d(prompt_mask: torch.Tensor) -> torch.Tensor:
    """Causal attention over left-padded prompts [P, L] -> [P, 1, L, L] bool. A padding position attends to itself
    only, so that no row of the attention is empty (an empty row is NaN, and NaN times a zero weight is NaN)."""
    width = prompt_mask.size(1)
    causal = torch.ones(width, width, dtype=torch.bool, device=prompt_mask.device).tril()
    allowed = causal & prompt_mask.bool()[:, None, None, :]
    return allowed | torch.eye(width, dtype=torch.bool, device=prompt_mask.device)


def pick_tokens(logits: torch.Tensor, settings: Settings, eos_ids: torch.Tensor, eos_allowed: torch.Tensor):
    """Sample one token per row. logits [B, V] -> (tokens [B], logprobs [B] of softmax(logits / T) at them)."""
    scaled = logits.float()
    if settings.temperature > 0:
        scaled = scaled / settings.temperature
    logprobs = scaled.log_softmax(-1)
    choose = scaled
    if settings.min_new_tokens > 0:
        penalty = torch.where(eos_allowed, 0.0, -math.inf)
        choose = choose.index_copy(1, eos_ids, choose.index_select(1, eos_ids) + penalty)
    if settings.temperature > 0 and settings.top_k > 0:
        kth = choose.topk(min(settings.top_k, choose.size(-1)), dim=-1).values[:, -1:]
        choose = choose.masked_fill(choose < kth, -math.inf)
    if settings.temperature > 0 and settings.top_p < 1.0:
        ascending, order = choose.sort(dim=-1)
        drop = ascending.softmax(-1).cumsum(-1) <= 1 - settings.top_p
        drop[:, -1] = False
        choose = choose.masked_fill(drop.scatter(1, order, drop), -math.inf)
    if settings.temperature > 0:
        probs = choose.softmax(-1)
        tokens = (probs / torch.empty_like(probs).exponential_()).argmax(-1)  # a draw from probs
    else:
        tokens = choose.argmax(-1)
    return tokens, logprobs.gather(1, tokens[:, None]).squeeze(1)


def plain_sampling(settings: Settings) -> bool:
    """Settings that pick_plain samples as pick_tokens does: a temperature, no top-k, no top-p."""
    return settings.temperature > 0 and settings.top_k <= 0 and settings.top_p >= 1.0


def pick_plain(logits: torch.Tensor, noise: torch.Tensor, temperature: float, eos_mask: torch.Tensor,
               eos_allowed: torch.Tensor):
    """pick_tokens for plain_sampling settings, the draw's exponential noise [B, V] given and EOS banned through a
    [V] mask, so that nothing is indexed: compiled, the pass over the vocabulary is two kernels instead of a dozen
    (each reading and writing B x V floats)."""
    scaled = logits.float() / temperature
    logprobs = scaled.log_softmax(-1)
    choose = torch.where(eos_mask & ~eos_allowed, -math.inf, scaled)
    tokens = (choose.softmax(-1) / noise).argmax(-1)
    return tokens, logprobs.gather(1, tokens[:, None]).squeeze(1)


class DecodeState:
    """The fixed buffers one decode step reads and writes, for one Settings."""

    def __init__(self, model, settings: Settings, eos_ids: tuple[int, ...], pad_id: int, device,
                 direct: "decoder.DirectDecoder | None" = None):
        n, width, steps = settings.rows, settings.prompt_width, settings.max_new_tokens
        self.model, self.settings, self.pad_id = model, settings, pad_id
        self.implementation = model.config._attn_implementation
        self.dtype = next(model.parameters()).dtype
        self.cache = StaticKVCache(width + steps, device)
        self.tokens = torch.full((n, 1), pad_id, dtype=torch.long, device=device)
        self.position_ids = torch.zeros((n, 1), dtype=torch.long, device=device)
        self.allowed = torch.zeros((n, 1, 1, width + steps), dtype=torch.bool, device=device)
        self.finished = torch.zeros(n, dtype=torch.bool, device=device)
        self.step = torch.zeros(1, dtype=torch.long, device=device)
        self.out_ids = torch.full((n, steps), pad_id, dtype=torch.long, device=device)
        self.out_logprobs = torch.zeros((n, steps), dtype=torch.float32, device=device)
        self.eos_ids = torch.tensor(eos_ids, dtype=torch.long, device=device)
        self.graph = None
        self.weights_seen: tuple[int, ...] = ()
        # samplers/decoder.py's step instead of the model's forward, and the vocabulary pass as pick_plain
        self.direct = direct
        self.pick_plain = None
        if direct is not None and plain_sampling(settings):
            self.pick_plain = compiled(pick_plain) if direct.compile_kernels else pick_plain
        self.eos_mask: torch.Tensor | None = None  # [V], built at the first step
        # the direct step's additive mask, kept from step to step (one position opened per step, one kernel)
        self.additive = attention_mask_4d(self.allowed, "sdpa", self.dtype) if direct is not None else None

    def record(self, tokens: torch.Tensor, logprobs: torch.Tensor) -> None:
        """Write the tokens just picked at column `step`, feed them as the next input, advance one position."""
        tokens = torch.where(self.finished, self.pad_id, tokens)
        logprobs = torch.where(self.finished, 0.0, logprobs)
        self.out_ids.index_copy_(1, self.step, tokens[:, None])
        self.out_logprobs.index_copy_(1, self.step, logprobs[:, None])
        self.finished |= torch.isin(tokens, self.eos_ids)
        self.tokens.copy_(tokens[:, None])
        self.step.add_(1)

    def eos_allowed(self) -> torch.Tensor:
        return self.step >= self.settings.min_new_tokens

    def decode_step(self) -> None:
        """One token for every row: the only code a graph holds."""
        if self.direct is not None:
            self.additive.index_fill_(3, self.cache.position, 0.0)
            logits = self.direct.logits(self.tokens, self.position_ids, self.additive, self.cache)
        else:
            self.allowed.index_fill_(3, self.cache.position, True)
            mask = attention_mask_4d(self.allowed, self.implementation, self.dtype)
            logits = self.model(input_ids=self.tokens, position_ids=self.position_ids, attention_mask=mask,
                                past_key_values=self.cache, use_cache=True).logits[:, -1]
        if self.pick_plain is not None:
            if self.eos_mask is None:
                self.eos_mask = torch.zeros(logits.size(-1), dtype=torch.bool, device=logits.device)
                self.eos_mask[self.eos_ids] = True
            noise = torch.empty(logits.shape, dtype=torch.float32, device=logits.device).exponential_()
            picked = self.pick_plain(logits, noise, self.settings.temperature, self.eos_mask, self.eos_allowed())
        else:
            picked = pick_tokens(logits, self.settings, self.eos_ids, self.eos_allowed())
        self.record(*picked)
        self.position_ids.add_(1)
        self.cache.position.add_(1)


class StaticSampler:
    """Sampler with a static cache; decode steps replayed as a CUDA graph when the model is on a GPU."""

    def __init__(self, model, pad_token_id: int, eos_token_ids: tuple[int, ...], use_graphs: bool | None = None,
                 fold_adapters: bool | None = None):
        self.model = model
        self.pad_token_id = pad_token_id
        self.eos_token_ids = eos_token_ids
        self.use_graphs = use_graphs
        self.fold_adapters = fold_adapters  # None: on a GPU only
        self.compile_step = False  # torch.compile the decode step before capturing it (fewer, fused kernels)
        self.fuse_kernels: bool | None = None  # samplers/fused.py; None: where decode steps are captured as graphs
        # samplers/decoder.py's decode step where the model is one it supports; None: wherever kernels are fused
        self.direct_decoding: bool | None = None
        self.compile_kernels = True  # False: the fused and direct pieces run uncompiled (what the CPU tests check)
        self._folded: FoldedWeights | None = None
        self.min_new_tokens = 0  # a benchmark's fixed-length rollouts; EOS is never sampled before this
        self._states: dict[Settings, DecodeState] = {}  # at most KEEP_STATES, the latest last
        self._graph_failed = False

    def sync_weights(self, model) -> None:
        self.model = model  # the graph reads the parameters in place; a moved parameter is recaptured (see _ready)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def sample(self, prompts, num_generations, max_new_tokens, temperature, top_p=1.0, top_k=0) -> SampleBatch:
        device = self.device
        prompt_ids, prompt_mask = left_pad(prompts, self.pad_token_id)  # [P, L]
        width = -(-prompt_ids.size(1) // PROMPT_BUCKET) * PROMPT_BUCKET
        padded_ids, padded_mask = (torch.nn.functional.pad(t, (width - t.size(1), 0), value=v)
                                   for t, v in ((prompt_ids, self.pad_token_id), (prompt_mask, 0)))
        settings = Settings(len(prompts) * num_generations, width, max_new_tokens, float(temperature), float(top_p),
                            int(top_k), min(self.min_new_tokens, max_new_tokens))
        was_training = self.model.training
        self.model.eval()
        folded = self._folded_weights(device)
        fuse = self._wants_graph(device) if self.fuse_kernels is None else self.fuse_kernels
        try:
            with folded.active() if folded is not None else nullcontext(), \
                    fused_decoding(self.model, self.compile_kernels) if fuse else nullcontext():
                state = self._ready(settings, device, fuse)
                steps = self._decode(state, padded_ids.to(device), padded_mask.to(device), num_generations)
        finally:
            self.model.train(was_training)
        completion_ids = state.out_ids[:, :steps].cpu()
        mask = completion_mask(completion_ids, self.eos_token_ids)  # [N, T]
        width_used = max(int(mask.sum(dim=1).max()), 1)
        completion_ids, mask = completion_ids[:, :width_used], mask[:, :width_used]
        logprobs = state.out_logprobs[:, :width_used].cpu() * mask
        has_eos = torch.isin(completion_ids, torch.as_tensor(self.eos_token_ids)).any(dim=1)
        return SampleBatch(
            prompt_ids=prompt_ids.repeat_interleave(num_generations, dim=0),
            prompt_mask=prompt_mask.repeat_interleave(num_generations, dim=0),
            completion_ids=completion_ids, sampler_logprobs=logprobs,
            completion_lengths=mask.sum(dim=1), truncated=~has_eos)

    def _folded_weights(self, device) -> FoldedWeights | None:
        """The folded LoRA weights of the current model, refreshed from its parameters; None when not folding."""
        wanted = device.type == "cuda" if self.fold_adapters is None else self.fold_adapters
        if not wanted:
            return None
        if self._folded is None or self._folded.model is not self.model:
            self._folded = None  # free the old buffers first
            self._folded = FoldedWeights(self.model)
        else:
            self._folded.refresh()
        return self._folded

    def _decode(self, state: DecodeState, prompt_ids, prompt_mask, num_generations: int) -> int:
        """Prefill, pick the first tokens, then decode step by step; returns the steps taken."""
        settings = state.settings
        rows = torch.arange(prompt_ids.size(0), device=prompt_ids.device).repeat_interleave(num_generations)
        prompt_cache = StaticKVCache(prompt_ids.size(1), prompt_ids.device)
        mask = attention_mask_4d(prompt_mask_4d(prompt_mask), state.implementation, state.dtype)
        logits = self.model(input_ids=prompt_ids, attention_mask=mask, position_ids=positions(prompt_mask),
                            past_key_values=prompt_cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        state.cache.load_prompts(prompt_cache, rows)
        del prompt_cache
        width = settings.prompt_width
        state.allowed.zero_()
        state.allowed[:, 0, 0, :width] = prompt_mask.bool().index_select(0, rows)
        if state.additive is not None:
            state.additive.copy_(attention_mask_4d(state.allowed, "sdpa", state.dtype))
        state.position_ids.copy_(prompt_mask.sum(dim=1).index_select(0, rows)[:, None])
        state.cache.position.fill_(width)
        state.finished.zero_()
        state.step.zero_()
        state.out_ids.fill_(self.pad_token_id)
        state.out_logprobs.zero_()
        state.record(*pick_tokens(logits.index_select(0, rows), settings, state.eos_ids, state.eos_allowed()))
        for step in range(1, settings.max_new_tokens):
            if state.graph is not None:
                state.graph.replay()
            else:
                state.decode_step()
            if (step + 1) % CHECK_EVERY == 0 and bool(state.finished.all()):
                return step + 1
        return settings.max_new_tokens

    def _direct(self, fuse: bool) -> "decoder.DirectDecoder | None":
        wanted = fuse if self.direct_decoding is None else self.direct_decoding
        if not wanted or not decoder.supports(self.model):
            return None
        return decoder.DirectDecoder(self.model, compile_kernels=self.compile_kernels)

    def _ready(self, settings: Settings, device, fuse: bool = False) -> DecodeState:
        """The decode state for these settings, with its graph captured when graphs are on."""
        state = self._states.pop(settings, None)
        if state is None or state.model is not self.model:
            while len(self._states) >= KEEP_STATES:  # free the oldest buffers and graph first
                self._states.pop(next(iter(self._states)))
            state = DecodeState(self.model, settings, self.eos_token_ids, self.pad_token_id, device,
                                direct=self._direct(fuse))
        self._states[settings] = state
        if self._wants_graph(device):
            weights = tuple(p.data_ptr() for p in self.model.parameters())
            if state.graph is None or state.weights_seen != weights:
                self._capture(state)
                state.weights_seen = weights
        return state

    def _wants_graph(self, device) -> bool:
        wanted = device.type == "cuda" if self.use_graphs is None else self.use_graphs
        return wanted and device.type == "cuda" and not self._graph_failed

    def _capture(self, state: DecodeState) -> None:
        """Run the step twice on a side stream (allocations settle), then capture it. Falls back to eager steps,
        with a warning, if the model does something a graph cannot hold (a host sync, a new allocation pattern)."""
        state.graph = None
        state.cache.position.fill_(state.settings.prompt_width)
        state.step.zero_()
        try:
            if not state.cache.keys:  # the buffers are allocated by a first (eager) forward
                state.decode_step()
            step = torch.compile(state.decode_step, dynamic=False) if self.compile_step else state.decode_step
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    state.cache.position.fill_(state.settings.prompt_width)
                    state.step.zero_()
                    step()
            torch.cuda.current_stream().wait_stream(stream)
            state.cache.position.fill_(state.settings.prompt_width)
            state.step.zero_()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step()
            state.graph = graph
        except Exception as exc:  # a model whose step cannot be captured still samples, eagerly
            self._graph_failed = True
            warnings.warn(f"decoding without CUDA graphs: capturing one decode step failed "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
