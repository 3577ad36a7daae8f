"""The cases plugin end to end on a tiny model: selection with -k, verdicts turned into outcomes, a report per run
and log book entries. One pytest subprocess per test; the tiny runs take a few seconds each."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flatline.diagnostics.judge import hypothesis_ids
from flatline.harness.case_runs import CONTROL_MIN_STEPS, case_config, control_from
from flatline.harness.properties import PLUG_POINTS

REPO = Path(__file__).resolve().parent.parent
TINY_MUSIQUE = """
task = "musique"
model = "tiny-random"
lora_r = 8
learning_rate = 1e-3
num_generations = 4
per_device_train_batch_size = 8
max_completion_length = 8
max_steps = 3
eval_every = 0
report_to = "none"
"""


def run_cases(tmp_path, *args):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_MUSIQUE)
    command = [sys.executable, "-m", "pytest", str(REPO / "cases"), "-p", "no:cacheprovider", "-v", "-rA",
               "--flatline-config", str(config), "--flatline-set", "max_steps=3",
               "--flatline-set", f"output_dir={tmp_path / 'runs'}", "--flatline-set", f"report_dir={tmp_path / 'reports'}",
               *args]
    env = {**os.environ, "FLATLINE_LOG": str(tmp_path / "log.md")}
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_selection_by_family_and_task_trains_only_what_it_needs(tmp_path):
    done = run_cases(tmp_path, "-k", "masking and musique")
    outcomes = [line for line in done.stdout.splitlines()
                if "::" in line and line.split(" ")[1:2] in (["PASSED"], ["FAILED"], ["SKIPPED"])]
    masking_ids = [i for i in hypothesis_ids() if i.startswith("masking.")]
    assert len(outcomes) == len(masking_ids) == 5, done.stdout[-3000:] + done.stderr[-3000:]
    assert all("cases/test_masking.py::" in line and "[musique]" in line for line in outcomes)
    reports = list((tmp_path / "reports").iterdir())
    assert len(reports) == 1 and reports[0].name.startswith("musique")  # the control was never trained
    verdicts = json.loads((reports[0] / "diagnosis.json").read_text())["verdicts"]
    assert sorted(v["id"] for v in verdicts) == sorted(i for i in hypothesis_ids() if i.startswith("masking."))


def test_full_session_writes_a_report_per_run_and_log_entries(tmp_path):
    done = run_cases(tmp_path)
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    reports = sorted((tmp_path / "reports").iterdir())
    assert [r.name.split("-")[0] for r in reports] == ["arithmetic", "musique"]  # control and subject
    for report in reports:
        diagnosis = json.loads((report / "diagnosis.json").read_text())
        plug_in_ids = {f"plugins.{p}" for p in PLUG_POINTS} if report.name.startswith("musique") else set()
        assert {v["id"] for v in diagnosis["verdicts"]} == set(hypothesis_ids()) | plug_in_ids
        md = (report / "diagnosis.md").read_text()
        assert md.startswith(f"# Diagnosis: {report.name}") and "## Verdicts by family" in md
        failed = [v["id"] for v in diagnosis["verdicts"] if v["status"] == "fail"]
        for verdict_id in failed:  # every fail in the report is a failed case, and the other way round
            family, name = verdict_id.split(".", 1)
            task = "musique" if report.name.startswith("musique") else "gsm8k"
            case = f"cases/test_{family}.py::test_{name}" + ("" if family == "plugins" else f"[{task}]")
            assert any(line.startswith("FAILED") and case in line for line in done.stdout.splitlines()), case
    log = (tmp_path / "log.md").read_text()
    assert log.count("\n## ") == 2
    subject = json.loads((reports[1] / "diagnosis.json").read_text())
    assert subject["control_run"] == reports[0].name  # control.learns on musique was judged against the control


def test_control_is_the_same_config_on_the_gsm8k_format_task(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_MUSIQUE)
    subject = case_config("musique", config)
    control = case_config("gsm8k", config)
    assert subject.task == "musique" and control.task == "arithmetic"  # a tiny model's control is GSM8K-format
    assert control.learning_rate == subject.learning_rate and control.lora_r == subject.lora_r
    assert control.max_steps == CONTROL_MIN_STEPS and control.probes == "full"
    assert case_config("gsm8k", config, overrides=["max_steps=3"]).max_steps == 3  # an explicit override wins
    big = control_from(subject.__class__(**{**subject.__dict__, "model": "Qwen/Qwen2.5-7B-Instruct"}))
    assert big.task == "gsm8k" and big.data.endswith("data/gsm8k/train.jsonl") and Path(big.data).exists()
    with pytest.raises(ValueError):
        case_config("hotpotqa", config)


def test_a_bad_user_config_is_refused_once_before_anything_trains(tmp_path):
    done = run_cases(tmp_path, "--flatline-set", "learnig_rate=3")
    assert done.returncode == 4  # pytest's usage error
    assert "unknown config key 'learnig_rate'; did you mean 'learning_rate'?" in done.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "reports").exists()
