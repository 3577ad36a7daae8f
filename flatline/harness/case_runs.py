"""The short instrumented runs the cases judge: the subject (the user's config, MuSiQue by default) and the
GSM8K-format control trained with the same trainer and config.

    subject = case_config("musique", user_config_path)     # None: the embedded default
    run_dir = train_case(subject)
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from flatline.trainer.config import Config, build_config, load_config, parse_override

REPO = Path(__file__).resolve().parents[2]
TASKS = ("musique", "gsm8k")
# The embedded CPU configuration: SmolLM2 with LoRA on offline MuSiQue; its control is derived like any user's.
EMBEDDED_CONFIG = REPO / "configs" / "musique.toml"
# Tasks that answer "gsm8k" as a control: GSM8K itself and arithmetic generated in GSM8K's format.
GSM8K_FORMAT = ("gsm8k", "arithmetic")
# Small models cannot learn GSM8K in a short run, so their control is GSM8K-format arithmetic; larger models get
# the bundled GSM8K sample (data/gsm8k, MIT licence).
SMALL_MODELS = ("smollm2-135m", "tiny-random")
GSM8K_SAMPLE = {"data": str(REPO / "data" / "gsm8k" / "train.jsonl"),
                "eval_data": str(REPO / "data" / "gsm8k" / "test.jsonl")}
# A control must run long enough to show learning: the embedded default needs ~20 steps to rise clearly.
CONTROL_MIN_STEPS = 24
# The cases run every probe, including the extra-forward alignment check.
PROBE_LEVEL = "full"


def control_from(subject: Config) -> Config:
    """The same trainer and config on the GSM8K-format control task (the task's own data, reward and weights)."""
    if subject.task in GSM8K_FORMAT:
        return subject
    changes = {"task": "arithmetic", "data": "", "eval_data": ""} if subject.model in SMALL_MODELS else \
        {"task": "gsm8k", **GSM8K_SAMPLE}
    changes.update(reward="", reward_weights={}, max_steps=max(subject.max_steps, CONTROL_MIN_STEPS),
                   max_prompt_length=max(subject.max_prompt_length, 320))
    return dataclasses.replace(subject, **changes)


def case_config(task: str, config_path: str | Path | None = None, control_path: str | Path | None = None,
                overrides: list[str] = ()) -> Config:
    """The config the cases train for `task` ("musique": the subject, "gsm8k": the control).

    The subject is the user's config (the embedded CPU configuration when None); the control is control_path's
    config, or the subject's config moved onto the GSM8K-format control task."""
    if task not in TASKS:
        raise ValueError(f"task {task!r}: expected one of {TASKS}")
    config_path = config_path or EMBEDDED_CONFIG
    if task == "gsm8k" and control_path is not None:
        cfg = load_config(control_path)
    else:
        cfg = load_config(config_path)
        if task == "gsm8k":
            cfg = control_from(cfg)
    values = {**dataclasses.asdict(cfg), "probes": PROBE_LEVEL, "progress_bar": False}
    return build_config({**values, **dict(parse_override(o) for o in overrides)})


def train_case(cfg: Config, on_finish=None, log=print) -> Path:
    """Train one case run with probes attached; returns its run directory."""
    from flatline.probes import for_trainer
    from flatline.trainer.run import train

    return train(cfg, make_listeners=for_trainer, on_finish=on_finish, log=log)
