"""Config: one schema, TOML + --set overrides, refusal of unknown keys and bad values with the nearest name."""
import dataclasses
from pathlib import Path

import pytest
import tomllib

from flatline.common.errors import ConfigError
from flatline.trainer.config import Config, build_config, load_config, to_toml
from flatline.trainer.loop import prepare

CONFIGS = sorted(Path(__file__).resolve().parent.parent.joinpath("configs").glob("*.toml"))


def test_every_field_has_a_docstring():
    source = Path(__file__).resolve().parent.parent.joinpath("flatline", "trainer", "config.py").read_text()
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
    ({"learning_rate": -1.0}, r"'learning_rate': must be > 0"),
    ({"learning_rate": "fast"}, r"'learning_rate': expected float, got str"),
    ({"num_generations": 1, "per_device_train_batch_size": 4}, r"'num_generations': GRPO needs at least 2"),
    ({"num_generations": 8, "per_device_train_batch_size": 12}, r"'per_device_train_batch_size': 12 is not a multiple"),
    ({"top_p": 1.5}, r"'top_p': must be in \(0, 1\]"),
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


def test_the_readme_states_each_plug_point_as_the_trainer_calls_it():
    """PLUG_POINTS is the one statement of the signatures; the README's table must say the same."""
    from flatline.trainer.plugins import PLUG_POINTS

    readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip().strip("`"): line for line in readme.splitlines() if line.startswith("| `")}
    for key, point in PLUG_POINTS.items():
        assert key in rows, f"README's plug-point table has no row for {key}"
        assert f"`{point.call_text().replace('|', chr(92) + '|')}`" in rows[key]
