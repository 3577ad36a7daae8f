"""The TRL half of bench/step_speed.py: wall time of one optimisation step of TRL's GRPOTrainer on CPU.

Written against trl 1.16.0 / transformers 5.23 / peft 0.21. trl is an optional dependency: it is imported
inside :func:`trl_step_times` only.
"""

from __future__ import annotations

import tempfile
import time


def _dataset(prompts: list):
    """The prompts as a datasets.Dataset. datasets names a dataset's cache by hashing its state with dill; on
    Python 3.12 with pyarrow 26 that pickling fails (pyarrow's MonthDayNano, seen on the GPU machine). The bench
    needs no cache, so there every fingerprint is a random one instead."""
    from datasets import Dataset

    try:
        return Dataset.from_dict({"prompt": prompts})
    except Exception:  # pickle.PicklingError or a TypeError from dill, depending on versions
        from datasets import fingerprint

        fingerprint.Hasher.hash = classmethod(lambda cls, value: fingerprint.generate_random_fingerprint())
        return Dataset.from_dict({"prompt": prompts})


def trl_step_times(model_dir: str, prompts: list[list[dict]], reward_fn, *, num_generations: int = 8,
                   max_completion_length: int = 48, lora_r: int = 16, lora_alpha: int = 32,
                   lora_target_modules=("q_proj", "k_proj", "v_proj", "o_proj"), learning_rate: float = 1e-5,
                   temperature: float = 1.0, steps: int = 4, seed: int = 0, device: str = "cpu",
                   min_new_tokens: int = 0) -> list[float]:
    """Wall seconds of each optimisation step of TRL's GRPOTrainer (generation + reward + loss + backward + optimizer step).

    Runs ``steps + 1`` optimiser steps (``max_steps = steps + 1``) and returns all ``steps + 1`` times; the caller
    drops the first as warm-up. Each step is one generation batch: ``len(prompts)`` prompts x ``num_generations``
    completions (``per_device_train_batch_size = len(prompts) * num_generations``, ``gradient_accumulation_steps=1``,
    ``steps_per_generation=1``, ``num_iterations=1``), so each step generates, scores, and takes exactly one
    optimizer step, and the dataset (``len(prompts)`` rows) is one epoch per step.

    A step is timed from ``TrainerCallback.on_step_begin`` to ``on_step_end`` (``time.perf_counter``). In
    transformers 5.23's inner loop that window holds ``training_step`` (TRL's ``_prepare_inputs``: chat template,
    ``model.generate``, reward, advantages; then the loss forward and backward), gradient clipping
    (``max_grad_norm`` 1.0, the Trainer default, left on), ``optimizer.step()``, the LR-scheduler step and
    ``zero_grad``. Fetching the (tiny) batch of prompt rows happens just before ``on_step_begin``; logging/saving
    happens after ``on_step_end``.

    Settings (GRPOConfig): ``use_cpu=True``; fp32 everywhere: ``bf16=False`` (TRL's base config defaults bf16 to
    True, which on CPU would mean bf16 autocast), ``fp16=False``, ``model_init_kwargs={"dtype": "float32"}``;
    ``beta=0.0`` (no reference model, no KL forward); ``loss_type="dapo"`` and ``scale_rewards="group"`` (TRL
    1.16's defaults, set explicitly); ``epsilon=0.2``; temperature as given, ``top_p=1.0``, ``top_k=0``
    (TRL's documented "disabled" value; otherwise transformers' default top_k=50 would apply), ``min_p=None``,
    ``repetition_penalty=1.0``; ``use_vllm=False``; ``lr_scheduler_type="constant"``, ``warmup_steps=0``; LoRA
    through ``peft_config=LoraConfig(r, lora_alpha, lora_dropout=0, target_modules, bias="none")``.

    With ``device="cuda"`` (bench/gpu_step.py): ``use_cpu=False``, ``bf16=True`` (bf16 autocast, TRL's default),
    the model loaded in bfloat16, and ``generation_kwargs={"min_new_tokens": min_new_tokens}`` for fixed-length
    completions; each step's clock is read after ``torch.cuda.synchronize()``.

    Turned off as pure overhead for a benchmark (all documented, user-settable fields):
      * activation checkpointing: ``activation_checkpointing=False``. TRL's base config defaults
        ``gradient_checkpointing`` to True ("~20% slower training"), and transformers 5.23 treats that field as a
        deprecated alias of ``activation_checkpointing``, so the default turns it on. It recomputes the forward
        during backward: a memory trade, not part of the algorithm.
      * ``report_to="none"``, ``logging_strategy="no"``, ``save_strategy="no"``, ``eval_strategy="no"``,
        ``disable_tqdm=True``, ``log_completions=False`` (already TRL's default).
    Left at TRL defaults (not overhead, or not configurable): the per-step metrics TRL computes inside the loss
    (entropy, clip ratios: a few ``.item()`` calls); the entropy the fused LM head computes for them; padding
    is not rounded (``pad_to_multiple_of`` resolves to None on CPU).
    """
    try:
        import trl  # noqa: F401
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "bench/trl_step.py needs TRL (an optional dependency of flatline): pip install trl"
        ) from exc
    try:
        from peft import LoraConfig
    except ImportError as exc:  # pragma: no cover
        raise ImportError("bench/trl_step.py needs peft for the LoRA adapter: pip install peft") from exc
    from datasets import Dataset
    from transformers import TrainerCallback

    if num_generations < 2:
        raise ValueError("GRPO needs num_generations >= 2")
    if not prompts:
        raise ValueError("prompts must not be empty")

    class _StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self._t0: float | None = None

        def on_step_begin(self, args, state, control, **kwargs):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if device == "cuda":
                import torch

                torch.cuda.synchronize()
            if self._t0 is not None:
                self.times.append(time.perf_counter() - self._t0)
                self._t0 = None

    batch = len(prompts) * num_generations
    dataset = _dataset([list(p) for p in prompts])

    # TRL names each reward function after its __name__; give partials/lambdas/callables a stable one.
    def flatline_bench_reward(prompts, completions, **kwargs):
        return reward_fn(prompts, completions, **kwargs)

    timer = _StepTimer()
    with tempfile.TemporaryDirectory(prefix="trl_step_") as out_dir:
        config = GRPOConfig(
            output_dir=out_dir,
            # device and precision
            use_cpu=device == "cpu",
            bf16=device == "cuda",
            fp16=False,
            model_init_kwargs={"dtype": "float32" if device == "cpu" else "bfloat16"},
            generation_kwargs={"min_new_tokens": min_new_tokens} if min_new_tokens else None,
            activation_checkpointing=False,  # transformers 5.23 name; TRL's gradient_checkpointing=True is an alias
            # one generation batch == one optimizer step
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=1,
            steps_per_generation=1,
            num_iterations=1,
            num_generations=num_generations,
            max_steps=steps + 1,
            # optimisation
            learning_rate=learning_rate,
            lr_scheduler_type="constant",
            warmup_steps=0,
            seed=seed,
            # GRPO objective
            beta=0.0,
            loss_type="dapo",
            scale_rewards="group",
            epsilon=0.2,
            # sampling
            max_completion_length=max_completion_length,
            temperature=temperature,
            top_p=1.0,
            top_k=0,
            min_p=None,
            repetition_penalty=1.0,
            use_vllm=False,
            # no logging, saving, evaluation
            report_to="none",
            logging_strategy="no",
            save_strategy="no",
            eval_strategy="no",
            disable_tqdm=True,
            log_completions=False,
        )
        peft_config = LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=0.0,
            target_modules=lora_target_modules if isinstance(lora_target_modules, str) else list(lora_target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        trainer = GRPOTrainer(
            model=model_dir,
            reward_funcs=flatline_bench_reward,
            args=config,
            train_dataset=dataset,
            peft_config=peft_config,
            callbacks=[timer],
        )
        trainer.train()
        del trainer
    return timer.times
