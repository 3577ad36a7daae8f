"""How a run is grouped: its task, variant and seed, read from its config, its Hydra overrides or its path.

For the label named KEY (task: `task_key`, default `task`; variant: `by`, default `variant`; seed: `seed_key`, default
`seed`), the first of these sources that has it wins:
  1. config: the run's config (`config.toml` of a flatline run; what the reader kept for other logs): KEY itself, else
     KEY as a dotted path into nested tables (`actor.optim.lr`);
  2. hydra: a `KEY=VALUE` override in the run directory's `.hydra/overrides.yaml` (Hydra multirun names its run
     directories 0, 1, 2, ...; the overrides say what each one ran);
  3. path: a `KEY=VALUE` component of the run's path as given (Hydra style, `runs/task=walker/variant=dreamer/seed=2`;
     one component may join several with commas, `lr=0.1,seed=2`); the component nearest the log wins;
  4. pattern: the pattern matched against one whole path component (a log file's name without its suffix), nearest
     the log first; the default is `{TASK_KEY}-{BY}-seed{SEED_KEY}`, i.e. `{task}-{variant}-seed{seed}`, which reads
     `walker-dreamer-seed2`; each `{KEY}` takes as few characters as it can, left to right;
  5. seed token, for the seed only: `seed2`, `seed-2`, `seed_2` or `s2` between separators (- _ . ,) in a path
     component, nearest the log first.
Values are compared as text once numbers are normalised (`canonical`: 1e-4, 0.0001 and 1.0e-4 are one variant; 2.0
and 2 are one seed). A run with no task belongs to the task "-" (NO_TASK).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from flatline.common.errors import FlatlineError

NO_TASK = "-"
# Suffixes a log file's name loses before it is read for labels (walker-dreamer-seed2.csv -> walker-dreamer-seed2).
LOG_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".tsv", ".json", ".wandb")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_KEY_VALUE = re.compile(r"([A-Za-z_][\w.\-]*)=(.+)")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
# One line of Hydra's overrides.yaml: "- key=value", "- +key=value", "- 'key=value'".
_HYDRA_OVERRIDE = re.compile(r"""-\s*(['"]?)[+~]*([A-Za-z_][\w.\-]*)=(.*?)\1\s*""")
_SEED_TOKEN = re.compile(r"(?:^|[-_.,])(?:seed[-_]?|s)(\d+)(?=$|[-_.,])", re.IGNORECASE)


@dataclass(frozen=True)
class Label:
    value: str | None
    source: str  # config | hydra | path | pattern | seed token | none


def default_pattern(task_key: str, by: str, seed_key: str) -> str:
    """{task}-{variant}-seed{seed} with the keys in use."""
    return f"{{{task_key}}}-{{{by}}}-seed{{{seed_key}}}"


def canonical(value) -> str:
    """A label value as text, numbers normalised: 1e-4, 0.0001 -> "0.0001"; 2.0, "2", "02" -> "2"; True -> "true"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    text = str(value).strip()
    if isinstance(value, float) or _NUMBER.fullmatch(text):
        number = float(text)
        if math.isfinite(number) and number.is_integer() and abs(number) < 2**53:
            return str(int(number))
        return repr(number)
    return text


def natural_key(value: str | None) -> tuple:
    """Sort key: numbers in numeric order, then text in text order, then None."""
    if value is None:
        return (2, 0.0, "")
    if _NUMBER.fullmatch(value):
        return (0, float(value), value)
    return (1, 0.0, value)


def config_value(config: dict, key: str):
    """config[key], else key as a dotted path into nested tables; None when absent (an empty string is absent)."""
    value = config.get(key)
    if value is None and "." in key:
        value = config
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    return None if value == "" else value


def path_components(path: str) -> list[str]:
    """The run path's components as given, nearest the log first; a log file's name loses its suffix."""
    parts = list(Path(path).parts)
    if parts and Path(path).is_file() and Path(path).suffix.lower() in LOG_SUFFIXES:
        parts[-1] = Path(parts[-1]).stem
    return parts[::-1]


def path_pairs(components: list[str]) -> dict[str, str]:
    """KEY=VALUE components (several joined by commas allowed); the component nearest the log wins."""
    found: dict[str, str] = {}
    for component in components:
        for piece in component.split(","):
            match = _KEY_VALUE.fullmatch(piece)
            if match:
                found.setdefault(match.group(1), match.group(2))
    return found


def hydra_overrides(path: str) -> dict[str, str]:
    """KEY=VALUE overrides in .hydra/overrides.yaml of the run directory (a log file's directory); {} when none."""
    run_dir = Path(path) if Path(path).is_dir() else Path(path).parent
    try:
        lines = (run_dir / ".hydra" / "overrides.yaml").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    matches = (_HYDRA_OVERRIDE.fullmatch(line.strip()) for line in lines)
    return {m.group(2): m.group(3) for m in matches if m}


def compile_pattern(pattern: str) -> tuple[re.Pattern, list[str]]:
    """'{task}-{variant}-seed{seed}' -> a regex matching one whole component, and the keys of its fields in order."""
    keys, regex, position = [], "", 0
    for match in _PLACEHOLDER.finditer(pattern):
        literal, key = pattern[position:match.start()], match.group(1).strip()
        if "{" in literal or "}" in literal or not key or key in keys:
            break
        regex += re.escape(literal) + f"(?P<f{len(keys)}>.+?)"
        keys.append(key)
        position = match.end()
    else:
        rest = pattern[position:]
        if keys and "{" not in rest and "}" not in rest:
            return re.compile(regex + re.escape(rest)), keys
    raise FlatlineError(f"--pattern {pattern!r}: not a pattern of distinct {{KEY}} fields with literal text between "
                        "them; write e.g. '{task}-{variant}-seed{seed}' or '{task}_{variant}_s{seed}'")


def pattern_values(components: list[str], pattern: str) -> dict[str, str]:
    """The fields of the first component (nearest the log) that the whole pattern matches; {} when none does."""
    regex, keys = compile_pattern(pattern)
    for component in components:
        match = regex.fullmatch(component)
        if match:
            return {key: match.group(f"f{i}") for i, key in enumerate(keys)}
    return {}


def seed_token(components: list[str]) -> str | None:
    """seed2 / seed-2 / seed_2 / s2 in the component nearest the log that has one (its last such token)."""
    for component in components:
        found = _SEED_TOKEN.findall(component)
        if found:
            return found[-1]
    return None


def resolve_label(key: str, config: dict, overrides: dict, pairs: dict, fields: dict,
                  token: str | None = None) -> Label:
    """The label KEY from the first source that has it: config, Hydra override, path KEY=VALUE, pattern, seed token."""
    for source, value in (("config", config_value(config, key)), ("hydra", overrides.get(key)),
                          ("path", pairs.get(key)), ("pattern", fields.get(key)), ("seed token", token)):
        if value is not None:
            return Label(canonical(value), source)
    return Label(None, "none")


def run_labels(path: str, config: dict, *, task_key: str, by: str, seed_key: str,
               pattern: str) -> tuple[Label, Label, Label]:
    """(task, variant, seed) of the run at `path` with this config, by the rules in the module docstring."""
    components = path_components(path)
    sources = (config, hydra_overrides(path), path_pairs(components), pattern_values(components, pattern))
    task = resolve_label(task_key, *sources)
    variant = resolve_label(by, *sources)
    seed = resolve_label(seed_key, *sources, seed_token(components))
    return (task if task.value is not None else Label(NO_TASK, "none")), variant, seed
