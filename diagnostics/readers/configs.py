"""The run's settings, from the config found with its log, under flatline's config names.

Some verdicts need a setting (max_grad_norm, beta, num_generations, max_completion_length, learning_rate, ...); a
foreign log does not carry them, but a config next to it often does:
  - W&B: the run's own config (in the .wandb file); TensorBoard: HF's `args/text_summary` (TrainingArguments JSON);
  - TRL: no JSON training config in its output directory (`config.json` there is the MODEL's config); the GRPOConfig
    is only in `training_args.bin`, a pickle, which flatline never opens (unpickling runs code): it reads the run's W&B
    or TensorBoard log in that directory instead, or an `args.json` saved beside it;
  - verl: Hydra's `.hydra/config.yaml` (`outputs/<date>/<time>/.hydra/` of the launch directory), matched to the
    log by trainer.project_name / trainer.experiment_name;
  - prime-rl: `configs/rl.json` (or trainer.json + orchestrator.json, or .toml) in the run's output directory;
  - anything: an `args.json` / `config.json` / `config.yaml` / `config.toml` of training arguments beside the log.
Only the mapped settings are kept: a foreign config is never copied into the report (OpenRLHF's W&B config holds the
W&B API key).
"""
from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

from flatline.common.errors import FlatlineError
from flatline.diagnostics.readers.base import RawLog, read_text

# The settings the judges read, each with its kind (float, int or str).
SETTINGS = {"learning_rate": float, "beta": float, "num_generations": int, "max_completion_length": int,
            "max_grad_norm": float, "lora_r": int, "loss_type": str, "num_iterations": int, "temperature": float,
            "max_steps": int, "per_device_train_batch_size": int, "optim": str, "adam_epsilon": float,
            "logging_steps": float}
# The ones whose absence skips verdicts: named in the report when no config gives them.
KEY_SETTINGS = ("max_grad_norm", "beta", "num_generations", "max_completion_length", "learning_rate")

# trainer -> flatline setting -> candidate keys in its config (dotted = nested), the first present wins.
_HF = {name: (name,) for name in SETTINGS}  # TRL's GRPOConfig uses flatline's names (flatline took them from TRL)
CONFIG_KEYS = {
    "trl": {**_HF, "lora_r": ("lora_r", "peft_config.r", "peft_config.default.r")},
    "flatline": {name: (name,) for name in SETTINGS},
    "openrlhf": {  # openrlhf/cli/train_ppo_ray.py arguments (args.__dict__ is its W&B config)
        "learning_rate": ("actor_learning_rate",), "beta": ("init_kl_coef",),
        "num_generations": ("n_samples_per_prompt",), "max_completion_length": ("generate_max_len",),
        "max_grad_norm": ("max_norm",), "temperature": ("temperature",), "lora_r": ("lora_rank",),
        "num_iterations": ("max_epochs",)},
    "verl": {  # verl/trainer/config/_generated_ppo_trainer.yaml (verl 0.7.0); beta: see _verl_beta
        "learning_rate": ("actor_rollout_ref.actor.optim.lr",), "max_grad_norm": ("actor_rollout_ref.actor.grad_clip",),
        "num_generations": ("actor_rollout_ref.rollout.n",), "max_completion_length": ("data.max_response_length",),
        "temperature": ("actor_rollout_ref.rollout.temperature",), "lora_r": ("actor_rollout_ref.model.lora_rank",),
        "num_iterations": ("actor_rollout_ref.actor.ppo_epochs",), "max_steps": ("trainer.total_training_steps",)},
    "prime-rl": {  # src/prime_rl/{trainer,orchestrator}/config.py; rl.json nests them under trainer/orchestrator
        "learning_rate": ("trainer.optim.lr", "optim.lr"), "max_grad_norm": ("trainer.optim.max_norm", "optim.max_norm"),
        "num_generations": ("orchestrator.rollouts_per_example", "rollouts_per_example", "orchestrator.group_size"),
        "max_completion_length": ("orchestrator.sampling.max_tokens", "sampling.max_tokens"),
        "temperature": ("orchestrator.sampling.temperature", "sampling.temperature"),
        "max_steps": ("max_steps", "orchestrator.max_steps", "trainer.max_steps")},
}
# Files of training arguments that may sit beside any log.
SIDE_CONFIGS = ("args.json", "training_args.json", "config.json", "config.yaml", "config.toml")
# Keys of a HF MODEL config (config.json beside a checkpoint): such a file is not the training config.
MODEL_CONFIG_KEYS = ("architectures", "model_type")


def lookup(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _value(raw, kind):
    """A setting as its kind, or None when the config holds something else (None, a dict, "auto", ...)."""
    if kind is str:
        return raw if isinstance(raw, str) and raw else None
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        return None
    try:
        number = float(raw)
    except (ValueError, OverflowError):
        return None
    if not math.isfinite(number):
        return None
    if kind is int:
        return int(number) if number.is_integer() else None
    return number


def _verl_beta(config: dict):
    """verl's KL coefficient: kl_loss_coef with use_kl_loss, kl_ctrl.kl_coef with use_kl_in_reward, else 0."""
    if lookup(config, "actor_rollout_ref.actor.use_kl_loss") is True:
        return lookup(config, "actor_rollout_ref.actor.kl_loss_coef")
    if lookup(config, "algorithm.use_kl_in_reward") is True:
        return lookup(config, "algorithm.kl_ctrl.kl_coef")
    if lookup(config, "actor_rollout_ref.actor.use_kl_loss") is False:
        return 0.0
    return None


_KIND_WORDS = {float: "a number", int: "a whole number", str: "a text"}


def unusable_settings(config: dict) -> list[str]:
    """The judged settings whose value is not of their kind (max_grad_norm = "abc")."""
    return [key for key, kind in SETTINGS.items()
            if key in config and config[key] is not None and _value(config[key], kind) is None
            and not (kind is int and key == "max_steps")]


def map_settings(config: dict, trainer: str) -> dict:
    """flatline-named settings from a trainer's config (only the keys this table knows)."""
    table = CONFIG_KEYS.get(trainer) or CONFIG_KEYS["trl"]
    out = {}
    for name, candidates in table.items():
        for candidate in candidates:
            value = _value(lookup(config, candidate), SETTINGS[name])
            if value is not None:
                out[name] = value
                break
    if trainer == "verl" and "beta" not in out:
        beta = _value(_verl_beta(config), float)
        if beta is not None:
            out["beta"] = beta
    if out.get("max_steps", 1) <= 0:
        del out["max_steps"]  # HF's -1: train for num_train_epochs instead
    return out


def read_config_file(path: Path) -> dict:
    """A JSON, YAML or TOML config as a dict; FlatlineError with the file and the reason otherwise."""
    text = read_text(path, "config")
    try:
        if path.suffix == ".toml":
            value = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            value = yaml.safe_load(text)
        else:
            value = json.loads(text)
    except ImportError:
        raise FlatlineError(f"{path}: reading YAML needs PyYAML (pip install pyyaml)") from None
    except Exception as exc:  # each parser has its own error class; all mean the same: not this format
        raise FlatlineError(f"{path}: not readable ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(value, dict):
        raise FlatlineError(f"{path}: holds a {type(value).__name__}, not a mapping of settings")
    return value


def _hydra_configs(log: Path) -> list[Path]:
    """Hydra run configs near a verl log: .hydra/ in its directory or a parent, or outputs/<date>/<time>/.hydra/."""
    found = []
    for base in [log.parent, *list(log.parents)[1:3]]:
        found += [p for p in (base / ".hydra" / "config.yaml",) if p.is_file()]
        found += sorted(base.glob("outputs/*/*/.hydra/config.yaml"))
    return found


def _verl_config(raw: RawLog, notes: list[str]) -> tuple[dict, str]:
    project, experiment = raw.source.parent.name, raw.source.stem  # <project>/<experiment>.jsonl
    matching = []
    for path in _hydra_configs(raw.source):
        try:
            config = read_config_file(path)
        except FlatlineError as exc:
            notes.append(f"{exc}: skipped")
            continue
        names = (lookup(config, "trainer.project_name"), lookup(config, "trainer.experiment_name"))
        if names == (project, experiment):
            matching.append((path, config))
    if not matching:
        return {}, ""
    path, config = max(matching, key=lambda m: str(m[0]))  # outputs/<date>/<time>: the latest launch
    if len(matching) > 1:
        notes.append(f"{len(matching)} Hydra configs name this experiment: read the latest, {path}")
    return config, str(path)


def _prime_rl_config(raw: RawLog, notes: list[str]) -> tuple[dict, str]:
    configs = raw.source.parent / "configs"
    for name in ("rl.json", "rl.toml"):
        if (configs / name).is_file():
            try:
                return read_config_file(configs / name), str(configs / name)
            except FlatlineError as exc:
                notes.append(f"{exc}: skipped")
    parts, sources = {}, []
    for part in ("trainer", "orchestrator"):
        for suffix in (".json", ".toml"):
            path = configs / f"{part}{suffix}"
            if path.is_file() and part not in parts:
                try:
                    parts[part] = read_config_file(path)
                    sources.append(str(path))
                except FlatlineError as exc:
                    notes.append(f"{exc}: skipped")
    return parts, " + ".join(sources)


def _side_config(directory: Path, notes: list[str]) -> tuple[dict, str]:
    for name in SIDE_CONFIGS:
        path = directory / name
        if not path.is_file():
            continue
        try:
            config = read_config_file(path)
        except FlatlineError as exc:
            notes.append(f"{exc}: skipped")
            continue
        if any(k in config for k in MODEL_CONFIG_KEYS):
            notes.append(f"{path} is the model's config (it names architectures/model_type), not the training config")
            continue
        return config, str(path)
    return {}, ""


def logging_steps_beside(log: Path) -> int | None:
    """logging_steps from a file of training arguments beside a console log or notebook (args.json, ...), if any."""
    config, _ = _side_config(log.parent, [])
    value = _value(config.get("logging_steps"), int) if config else None
    return value if value and value > 0 else None


# Where HF's loggers write beside an output directory: TensorBoardCallback's logging_dir (output_dir/runs/<date_host>
# by default) and wandb's run directories (wandb/ in the working directory, often the output directory's parent).
TRAINER_SIDE_GLOBS = ("events.out.tfevents.*", "runs/*/events.out.tfevents.*", "wandb/*run-*/run-*.wandb",
                      "*run-*/run-*.wandb")


def trainer_side_files(out_dir: Path) -> list[Path]:
    """The TensorBoard and W&B files a trainer writes next to its output directory: those places only, never a walk
    of the folder around a log (a log saved in /tmp or a home folder), and a link that cannot be resolved is absent."""
    found = []
    for pattern in TRAINER_SIDE_GLOBS:
        try:
            found += [p for p in sorted(out_dir.glob(pattern)) if p.is_file()]
        except OSError:
            continue
    return found


def _trl_dir_config(raw: RawLog, notes: list[str]) -> tuple[dict, str]:
    """A TRL output directory: args.json beside it, else the run's own TensorBoard or W&B log there."""
    from flatline.diagnostics.readers.detect import wandb_run_files

    out_dir = raw.source.parent.parent if raw.source.parent.name.startswith("checkpoint-") else raw.source.parent
    config, source = _side_config(out_dir, notes)
    if config:
        return config, source
    files = trainer_side_files(out_dir)
    events = sorted({f.parent for f in files if f.name.startswith("events.out.tfevents.")})
    runs = wandb_run_files(files)
    for reader, targets in (("tensorboard", events), ("wandb", runs)):
        for target in targets[-1:]:
            try:
                if reader == "tensorboard":
                    from flatline.diagnostics.readers.tensorboard_events import read_tensorboard as read
                else:
                    from flatline.diagnostics.readers.wandb_run import read_wandb as read
                side = read(target)
            except FlatlineError as exc:
                notes.append(f"config not read from the run's {reader} log: {str(exc).split(': ', 1)[-1]}")
                continue
            if side.config:
                return side.config, side.config_source
    return {}, ""


def find_settings(raw: RawLog, trainer: str) -> tuple[dict, str, list[str]]:
    """(flatline-named settings, where they came from, notes) for a log."""
    notes: list[str] = []
    config, source = raw.config, raw.config_source
    if not config and raw.format == "verl":
        config, source = _verl_config(raw, notes)
    if not config and raw.format == "prime-rl":
        config, source = _prime_rl_config(raw, notes)
    if not config and raw.format == "trl":
        config, source = _trl_dir_config(raw, notes)
    if not config and raw.format in ("jsonl", "csv", "tsv", "wandb", "tensorboard", "trl-console", "notebook",
                                     "json-array", "verl-console"):
        config, source = _side_config(raw.source if raw.source.is_dir() else raw.source.parent, notes)
    settings = map_settings(config, "flatline" if raw.format == "flatline" else trainer) if config else {}
    if raw.format == "flatline":
        settings = dict(config)  # flatline's own config: every key, as the judges have always read it
        if bad := unusable_settings(settings):
            for key in bad:
                del settings[key]
            named = ", ".join(f"{k} = {config[k]!r} (not {_KIND_WORDS[SETTINGS[k]]})" for k in bad)
            notes.append(f"{source}: {named}: left out, so verdicts that need them are skipped; fix the config to "
                         "judge them")
    missing = [k for k in KEY_SETTINGS if k not in settings]
    pickle = _training_args_bin(raw)
    if missing and raw.format != "flatline":
        where = f"in {source}" if source else "next to the log"
        fix = (f"; {pickle} holds them but is a pickle, which flatline never opens (unpickling runs code): save "
               "trainer.args.to_json_string() as args.json beside trainer_state.json to fill them") if pickle else ""
        notes.append(f"settings not found {where}: {', '.join(missing)}; verdicts that need them are skipped{fix}")
    return settings, source, notes


def _training_args_bin(raw: RawLog) -> str:
    if raw.format != "trl":
        return ""
    for directory in (raw.source.parent, *sorted(raw.source.parent.glob("checkpoint-*"))):
        if (directory / "training_args.bin").is_file():
            return str(directory / "training_args.bin")
    return ""
