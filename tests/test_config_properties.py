"""Property tests over the config schema (Hypothesis): every value the validator accepts survives config.toml's
write/read round trip, and a config it accepts starts training without an exception from the libraries underneath
(transformers, peft, torch, numpy); a config refused anywhere before training is refused with a FlatlineError and
leaves nothing behind.

Values are drawn per field from the schema itself: inside each field's range (its ends included), just outside it,
and NaN, inf, huge integers, control characters and lone surrogates. The training property draws one or two
nasty values into an otherwise valid tiny config, so about half the examples train one step on the tiny random
model; fields that only cost time (sizes, step counts) stay small there.
"""
import dataclasses
import math
import warnings

import pytest
import tomllib
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flatline.common.errors import ConfigError, FlatlineError
from flatline.trainer.config import CHOICES, INTEGER_FIELDS, RANGES, Config, build_config, checked_toml, load_config, to_dict

FIELDS = {f.name: f for f in dataclasses.fields(Config)}
NASTY_FLOATS = [math.nan, math.inf, -math.inf, 1e308, -1e-308, 5e-324]
NASTY_INTS = [-1, 2**32, 2**63, 10**30, -(10**30)]
NASTY_TEXT = ["a\nb", "tab\there", "nul\x00", "del\x7f", "\udcff", "../../escaped", "/abs", ".."]


def in_range(name: str):
    """Values the field's range admits, its ends and zero (where admitted) among them."""
    accepted = RANGES[name]
    if name in INTEGER_FIELDS:
        low, high = int(accepted.low) + accepted.low_open, int(accepted.high) - accepted.high_open
        step = accepted.multiple_of
        ends = st.sampled_from(sorted({low, high, *([0] if accepted.zero_ok else [])}))
        middle = st.integers(low // step, high // step).map(lambda n: n * step).filter(lambda n: low <= n <= high)
        return st.one_of(ends, middle)
    ends = [v for v in (accepted.low, accepted.high, 0.0) if accepted.admits(v)]
    middle = st.floats(accepted.low, accepted.high, exclude_min=accepted.low_open, exclude_max=accepted.high_open)
    return st.one_of(st.sampled_from(ends), middle.filter(accepted.admits))


def around_range(name: str):
    """Values at and past the field's ends, and the non-finite and huge ones."""
    accepted = RANGES[name]
    edges = [accepted.low, accepted.high, accepted.low - 1, accepted.high + 1, accepted.high * 10, 0]
    if name in INTEGER_FIELDS:
        return st.sampled_from(sorted({int(v) for v in edges} | set(NASTY_INTS)))
    return st.sampled_from(sorted(set(edges)) + NASTY_FLOATS + [10**400])


def text_values():
    return st.one_of(st.text(max_size=12), st.sampled_from(NASTY_TEXT))


def any_value(name: str):
    """Any value for the field: inside its range or choices, around them, or of the wrong kind."""
    field = FIELDS[name]
    if name in RANGES and field.type == "dict":
        weights = st.one_of(in_range(name), st.sampled_from(NASTY_FLOATS + [-1.0, 1e4]))
        return st.dictionaries(st.sampled_from(["reward", "em", "f1", "format", "a\nb"]), weights, max_size=3)
    if name in RANGES:
        return st.one_of(in_range(name), around_range(name))
    if name in CHOICES:
        return st.one_of(st.sampled_from(CHOICES[name]), text_values())
    if field.type == "bool":
        return st.booleans()
    if field.type == "list":
        return st.lists(st.one_of(st.sampled_from(["q_proj", "v_proj", "all-linear"]), text_values()), max_size=3)
    return text_values()


@st.composite
def config_values(draw):
    """A dict of some of the schema's fields, each drawn from any_value."""
    names = draw(st.lists(st.sampled_from(sorted(FIELDS)), unique=True, max_size=12))
    return {name: draw(any_value(name)) for name in names}


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(config_values())
def test_every_accepted_config_survives_the_config_toml_round_trip(tmp_path_factory, values):
    try:
        cfg = build_config(values)
    except ConfigError:
        event("refused")
        return  # refused, with a message; nothing to write
    event("accepted")
    text = checked_toml(cfg)
    assert tomllib.loads(text) == to_dict(cfg)
    path = tmp_path_factory.mktemp("roundtrip") / "config.toml"
    path.write_text(text, encoding="utf-8")
    assert load_config(path) == cfg


# What the training property keeps small or fixed, so each example trains in about a second: sizes and step counts
# (their full ranges are covered by the round-trip property above), the task (tasks that need no data files), the
# tiny model, no W&B, and paths inside the test's own folder.
CHEAP = {
    "task": st.sampled_from(["bandit", "arithmetic"]),
    "max_steps": st.just(1),
    "num_generations": st.sampled_from([2, 4]),
    "gradient_accumulation_steps": st.sampled_from([1, 2]),
    "max_completion_length": st.sampled_from([1, 2, 4]),
    "tiny_hidden_size": st.sampled_from([8, 16, 64]),
    "tiny_num_layers": st.sampled_from([1, 2]),
    "lora_r": st.sampled_from([0, 1, 8, 64]),
    "num_iterations": st.sampled_from([1, 2]),
    "train_size": st.sampled_from([0, 8, 32]),
    "eval_size": st.sampled_from([0, 1, 4]),
    "eval_every": st.sampled_from([0, 1]),
    "arithmetic_max_operand": st.sampled_from([10, 20]),
    "log_completions": st.sampled_from([0, 1, 1024]),
    "max_prompt_length": st.sampled_from([512, 2048]),
    "bandit_arms": st.sampled_from([2, 4, 49152]),
    "lora_target_modules": st.sampled_from([["q_proj"], ["q_proj", "v_proj"], ["all-linear"]]),
    "probes": st.sampled_from(["none", "cheap", "full"]),
    "gradient_checkpointing": st.booleans(),
    "env_budget_shared": st.booleans(),
}
FIXED = {"model": "tiny-random", "device": "cpu", "report_to": "none", "progress_bar": False, "data": "", "eval_data": "",
         "reward": "", "advantage_fn": "", "mask_fn": "", "loss_fn": "", "output_dir": "", "log_book": "",
         "report_dir": ""}
PERTURBABLE = sorted(set(RANGES) | {"run_name", "wandb_project", "exp_major", "exp_minor"})


@st.composite
def trainable_values(draw):
    """A full tiny config: each field inside its range, then up to two fields given a value from any_value."""
    values = {}
    for name in sorted(FIELDS):
        if name in FIXED:
            continue
        if name in CHEAP:
            values[name] = draw(CHEAP[name])
        elif name in RANGES and FIELDS[name].type != "dict":
            values[name] = draw(in_range(name))
        elif name in CHOICES:
            values[name] = draw(st.sampled_from(CHOICES[name]))
        elif name in ("run_name", "wandb_project"):
            values[name] = draw(st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=10))
    values["per_device_train_batch_size"] = values["num_generations"] * draw(st.sampled_from([1, 2]))
    for name in draw(st.lists(st.sampled_from(PERTURBABLE), max_size=2, unique=True)):
        if name not in CHEAP:
            values[name] = draw(any_value(name))
    return values


@settings(max_examples=16, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(trainable_values())
def test_every_accepted_config_trains_a_step_without_a_library_exception(tmp_path_factory, values):
    from flatline.probes import for_trainer
    from flatline.trainer.run import train

    root = tmp_path_factory.mktemp("train")
    values.update(FIXED, output_dir=str(root / "runs"), log_book=str(root / "LOG.md"), report_dir=str(root / "reports"))
    try:
        cfg = build_config(values)
    except ConfigError:
        event("refused by the validator")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a config that is valid but unwise may warn (no graph, clipped ratio, ...)
        try:
            run_dir = train(cfg, make_listeners=for_trainer, log=lambda *_: None)
        except FlatlineError:
            event("refused before training (data, context, vocabulary)")
            assert not (root / "runs").exists() or not any((root / "runs").iterdir()), "refused after creating files"
            return
    event("trained a step")
    assert run_dir.parent == root / "runs"  # the run name kept it inside output_dir
    assert load_config(run_dir / "config.toml") == cfg
    assert (run_dir / "metrics.jsonl").read_text().count("\n") == 1


def test_the_strategies_cover_every_field():
    """A new config field must be drawn by these properties: any_value knows its kind, and the training property
    either draws it inside its range, draws it cheaply, or fixes it."""
    for name in FIELDS:
        any_value(name)
    drawn = set(FIXED) | set(CHEAP) | set(RANGES) | set(CHOICES) | {"run_name", "wandb_project"}
    assert set(FIELDS) - drawn == set(), "add the new field to the training property's strategies"
