"""Config: one schema, TOML + --set overrides, refusal of unknown keys and bad values with the nearest name."""
import dataclasses
import math
from pathlib import Path

import pytest
import tomllib

from flatline.common.errors import ConfigError
from flatline.trainer.config import RANGES, Config, build_config, checked_toml, load_config, to_dict, to_toml
from flatline.trainer.loop import prepare

CONFIGS = sorted(Path(__file__).resolve().parent.parent.joinpath("configs").glob("*.toml"))


def test_every_field_has_a_docstring():
    source = Path(__file__).resolve().parent.parent.joinpath("trainer", "config.py").read_text()
    for field in dataclasses.fields(Config):
        declaration = source.index(f"    {field.name}: ")
        following = source[declaration:].splitlines()[1].strip()
        assert following.startswith('"""'), f"field {field.name} has no docstring"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_validate_with_their_data_and_prompt_lengths(path, monkeypatch):
    monkeypatch.chdir(path.parent.parent)
    cfg = load_config(path)
    prepared = prepare(cfg)  # data rows, model location, every prompt within max_prompt_length
    assert prepared.task.examples("train")
    assert max(len(ids) for ids in prepared.prompt_ids.values()) <= cfg.max_prompt_length


def test_shipped_configs_exist():
    assert {p.stem for p in CONFIGS} >= {"default", "bandit", "gsm8k_control", "musique"}


def test_unknown_key_names_the_nearest_valid_one():
    with pytest.raises(ConfigError, match=r"unknown config key 'learning_rat'; did you mean 'learning_rate'\?"):
        build_config({"learning_rat": 1e-4})


@pytest.mark.parametrize("values, message", [
    ({"loss_type": "drgrpo"}, r"'loss_type': 'drgrpo' is not one of .*did you mean 'dr_grpo'"),
    ({"learning_rate": -1.0}, r"'learning_rate': must be a finite number in \(0, 1\] \(.+\), got -1.0"),
    ({"learning_rate": "fast"}, r"'learning_rate': expected float, got str"),
    ({"num_generations": 1, "per_device_train_batch_size": 4}, r"'num_generations': must be an integer in \[2, 1024\] "
                                                               r"\(GRPO compares at least 2 completions"),
    ({"num_generations": 8, "per_device_train_batch_size": 12}, r"'per_device_train_batch_size': 12 is not a multiple"),
    ({"top_p": 1.5}, r"'top_p': must be a finite number in \(0, 1\]"),
    ({"max_steps": True}, r"'max_steps': expected int, got bool"),
    ({"reward": "not a path"}, r"'reward': 'not a path' is not 'module:function'"),
    ({"scale_rewards": "groups"}, r"did you mean 'group'"),
])
def test_bad_values_are_refused_with_key_and_reason(values, message):
    with pytest.raises(ConfigError, match=message):
        build_config(values)


def test_overrides_parse_toml_values_and_dotted_weights(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('task = "musique"\nlearning_rate = 1e-5\n')
    cfg = load_config(path, ["learning_rate=3e-4", 'lora_target_modules=["q_proj"]', "reward_weights.em=0.5",
                             "run_name=abc", "beta=0"])
    assert cfg.learning_rate == 3e-4
    assert cfg.lora_target_modules == ["q_proj"]
    assert cfg.reward_weights == {"em": 0.5}
    assert cfg.run_name == "abc"
    assert cfg.beta == 0.0 and isinstance(cfg.beta, float)


def test_override_without_equals_is_refused():
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["learning_rate"])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = = 1\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)


def test_resolved_toml_round_trips(tmp_path):
    cfg = load_config(None, ["reward_weights.em=0.5", "run_name=a \"quoted\" name", "epsilon_high=0.28"])
    text = to_toml(cfg)
    tomllib.loads(text)
    path = tmp_path / "resolved.toml"
    path.write_text(text)
    assert load_config(path) == cfg
    assert cfg.epsilon_upper == 0.28 and load_config(None).epsilon_upper == 0.2


def test_the_manual_states_each_plug_point_as_the_trainer_calls_it():
    """PLUG_POINTS is the one statement of the signatures; the manual's table must say the same."""
    from flatline.trainer.plugins import PLUG_POINTS

    readme = Path(__file__).resolve().parents[1].joinpath("docs", "MANUAL.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip().strip("`"): line for line in readme.splitlines() if line.startswith("| `")}
    for key, point in PLUG_POINTS.items():
        assert key in rows, f"docs/MANUAL.md's plug-point table has no row for {key}"
        assert f"`{point.call_text().replace('|', chr(92) + '|')}`" in rows[key]


# --- every numeric field has a finite range with a reason, used by the validator and shown in the refusal ---

NUMERIC = sorted(f.name for f in dataclasses.fields(Config) if f.type in ("int", "float"))
FLOATS = sorted(f.name for f in dataclasses.fields(Config) if f.type == "float")


def test_every_numeric_field_has_a_range_with_a_reason_that_admits_its_default():
    assert set(NUMERIC) <= set(RANGES)
    defaults = Config()
    for key in NUMERIC:
        accepted = RANGES[key]
        assert accepted.why and math.isfinite(accepted.low) and math.isfinite(accepted.high), key
        assert accepted.admits(getattr(defaults, key)), f"{key}'s default is outside its own range"


def test_the_refusal_names_the_key_the_range_its_reason_and_the_value():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["temperature=nan"])
    assert str(info.value) == ("config key 'temperature': must be 0 or a finite number in [0.01, 10] (0: greedy; below "
                               "0.01 sampling is greedy in all but name and logits / temperature overflow; above ~2 "
                               "sampled text is noise), got nan")


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", FLOATS)
def test_non_finite_numbers_are_refused_for_every_float_field(key, bad):
    with pytest.raises(ConfigError, match=rf"^config key '{key}': must be (0 or )?a finite number in .* got {bad}$"):
        load_config(None, [f"{key}={bad}"])


@pytest.mark.parametrize("override, message", [
    ("seed=-1", r"'seed': must be an integer in \[0, 4294967295\] \(numpy's seeds"),
    ("seed=4294967296", r"'seed': must be an integer in \[0, 4294967295\]"),
    ("learning_rate=inf", r"'learning_rate': must be a finite number in \(0, 1\]"),
    ("learning_rate=0", r"'learning_rate': must be a finite number in \(0, 1\]"),
    ("learning_rate=" + "9" * 400, r"'learning_rate': must be a finite number in \(0, 1\].* got 999"),
    ("max_completion_length=100000000", r"'max_completion_length': must be an integer in \[1, 131072\]"),
    ("max_grad_norm=nan", r"'max_grad_norm': .*NaN or inf would silently switch clipping off"),
    ("epsilon=1.5", r"'epsilon': must be a finite number in \[0, 1\]"),
    ("lora_dropout=1", r"'lora_dropout': must be a finite number in \[0, 1\)"),
    ("tiny_hidden_size=12", r"'tiny_hidden_size': must be an integer in \[8, 4096\], a multiple of 8"),
    ("temperature=1e-300", r"'temperature': must be 0 or a finite number in \[0.01, 10\]"),
    ("bandit_arms=1", r"'bandit_arms': must be an integer in \[2, 1048576\]"),
    ("reward_weights.em=nan", r"'reward_weights.em': must be a finite number in \[0, 1000\]"),
    ("reward_weights.em=-1", r"'reward_weights.em': must be a finite number in \[0, 1000\]"),
    ("max_steps=" + "1" * 40, r"'max_steps': must be an integer in \[1, 1000000\] .*got 1111"),
])
def test_values_outside_their_range_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/absolute", "a/b", "..", ".", "back\\slash", "x" * 201])
def test_run_names_that_could_leave_the_output_directory_are_refused(name):
    with pytest.raises(ConfigError, match=r"config key 'run_name': "):
        build_config({"run_name": name})


@pytest.mark.parametrize("key, value", [
    ("wandb_project", "a\nb"), ("run_name", "tab\there"), ("data", "nul\x00.jsonl"), ("model", "del\x7f"),
    ("log_book", "\udcff.md"), ("lora_target_modules", ["q_proj\n"]),
])
def test_control_characters_and_lone_surrogates_are_refused_in_text(key, value):
    with pytest.raises(ConfigError, match=rf"config key '{key}': holds the unprintable character"):
        build_config({key: value})


def test_the_issue_s_newline_in_wandb_project_is_refused_from_the_command_line():
    with pytest.raises(ConfigError, match="'wandb_project': holds the unprintable character '\\\\n'"):
        load_config("configs/bandit.toml", ['wandb_project="a\\nb"'])


def test_config_toml_is_written_by_a_real_toml_writer_so_any_string_round_trips():
    """The writer must not depend on the validator: control characters, quotes and backslashes survive it."""
    cfg = Config(wandb_project='a\nb\t"c"\\d\x00\x7f\u2028', run_name="ünïcode 名前", reward_weights={"we\nird": 1.5})
    assert tomllib.loads(to_toml(cfg)) == to_dict(cfg)


def test_checked_toml_refuses_a_config_that_would_not_read_back(monkeypatch):
    from flatline.trainer import config as config_module

    monkeypatch.setattr(config_module, "to_toml", lambda cfg: 'task = "bandit"\nseed = 7\n')
    with pytest.raises(ConfigError, match="config key 'model': 'smollm2-135m' reads back from config.toml as None"):
        checked_toml(Config(task="bandit", seed=7))


def test_vllm_lora_sync_without_an_adapter_is_refused_naming_the_fix():
    with pytest.raises(ConfigError, match=r"'vllm_sync_mode': 'lora' needs a LoRA adapter \(lora_r > 0\); set "
                                          r"vllm_sync_mode = \"merged\""):
        load_config(None, ["sampler=vllm", "lora_r=0"])
    with pytest.raises(ConfigError, match=r"config key 'vllm_logprobs': 'logits' is not one of processed, raw"):
        load_config(None, ["vllm_logprobs=logits"])
