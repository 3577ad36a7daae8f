"""Each trainer's log, read as its trainer wrote it (tests/fixtures/logs/README.md says by what and which version):
TRL's trainer_state.json and checkpoints, TRL's own W&B and TensorBoard files, verl's file logger (0.7.0 NaN, 0.9.1
null), prime-rl's shared metrics.jsonl, OpenRLHF's W&B and TensorBoard names, CSV/TSV and W&B exports. Every value
asserted here is the one in the file."""
import json
import math
import shutil
from pathlib import Path

import pytest

from flatline.common.errors import FlatlineError
from flatline.diagnostics.history import load_histories, load_history
from flatline.diagnostics.judge import judge, judge_one

LOGS = Path(__file__).parent / "fixtures" / "logs"
TRL_REWARD = [0.4285714626312256, 0.3571428656578064, 0.2857142984867096, 0.25, 0.5, 0.25]  # log_history, steps 1-6
TRL_EVAL = [0.428571417927742, 0.4285714328289032]  # eval_reward at steps 3 and 6


def has_tensorboard() -> bool:
    from importlib.util import find_spec

    return find_spec("tensorboard") is not None


needs_tensorboard = pytest.mark.skipif(not has_tensorboard(), reason="pip install tensorboard")


# ---------------------------------------------------------------- TRL

def test_trl_trainer_state_keeps_eval_rows_out_of_the_steps():
    h = load_history(LOGS / "trl" / "run")
    assert (h.log.format, h.log.trainer, h.steps) == ("trl", "trl", 6)
    assert h.series("reward").values.tolist() == TRL_REWARD
    assert h.series("eval/reward").steps.tolist() == [3, 6] and h.series("eval/reward").values.tolist() == TRL_EVAL
    assert h.has("eval/loss") and h.has("eval/runtime")  # kept, never read as the held-out score
    assert h.log.mapping["eval/reward"] == "eval_reward" and h.log.mapping["reward"] == "reward"
    assert h.log.unrecognised == [] and h.log.eval_points == 2 and h.run == "run"
    assert h.summary == {"total_seconds": 42.5067}  # the end-of-training row is no step


def test_trl_training_args_bin_is_never_opened_and_the_missing_settings_are_named(monkeypatch):
    import builtins
    import pickle

    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    h = load_history(LOGS / "trl" / "run")
    assert not [f for f in opened if f.endswith(".bin")]
    assert h.config == {}  # the model's checkpoint-N/config.json is not the training config
    note = next(n for n in h.log.notes if n.startswith("settings not found"))
    assert "max_grad_norm, beta, num_generations, max_completion_length, learning_rate" in note
    assert "training_args.bin holds them but is a pickle" in note and "args.json" in note


def test_trl_args_json_beside_trainer_state_fills_the_settings(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(LOGS / "trl" / "run", run)
    (run / "args.json").write_text(json.dumps({"learning_rate": 1e-3, "beta": 0.04, "num_generations": 4,
                                               "max_completion_length": 12, "max_grad_norm": 1.0, "max_steps": -1}))
    h = load_history(run)
    assert h.config == {"learning_rate": 1e-3, "beta": 0.04, "num_generations": 4, "max_completion_length": 12,
                        "max_grad_norm": 1.0}  # max_steps -1 (train by epochs) is no plan
    assert h.log.config_source == str(run / "args.json")


def test_trl_output_dir_without_trainer_state_reads_the_newest_checkpoint(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(LOGS / "trl" / "run", run)
    (run / "trainer_state.json").unlink()
    shutil.copytree(run / "checkpoint-3", run / "checkpoint-10")  # numeric order, not name order: 10 > 6 > 3
    h = load_history(run)
    assert h.log.source == str(run / "checkpoint-10" / "trainer_state.json")
    assert any("read checkpoint-10/trainer_state.json, the newest of 3 checkpoint(s)" in n for n in h.log.notes)


def test_a_trl_checkpoint_of_a_longer_run_is_judged_on_its_steps_and_says_it_stopped_early(capsys):
    from flatline.harness.cli import main

    h = load_history(LOGS / "trl" / "run" / "checkpoint-3")
    assert h.steps == 3 and h.series("reward").values.tolist() == TRL_REWARD[:3]
    stopped = [n for n in h.log.notes if n.startswith("stopped early")]
    assert stopped == ["stopped early: step 3 of max_steps 6 (killed, crashed, or still running); judged on the 3 "
                       "logged steps it has"]
    assert main(["diagnose", str(LOGS / "trl" / "run" / "checkpoint-3")]) == 0
    assert "stopped early: step 3 of max_steps 6" in capsys.readouterr().out
    assert not any(n.startswith("stopped early") for n in load_history(LOGS / "trl" / "run").log.notes)


def test_trl_nan_and_infinity_tokens_are_read_as_non_finite_values():
    h = load_history(LOGS / "trl" / "nonfinite" / "trainer_state.json")
    assert h.series("grad_norm").values.tolist() == [math.inf, -math.inf]
    assert math.isnan(h.series("loss").values[0]) and math.isnan(h.series("reward").values[1])
    assert judge_one("gradients.non_finite", h).status == "fail"


def test_trl_wandb_run_written_by_hf_wandbcallback_matches_trainer_state():
    h = load_history(LOGS / "trl" / "run-report" / "wandb")
    assert (h.log.format, h.log.trainer, h.steps) == ("wandb", "trl", 6)  # 121 wandb.log calls, 6 training steps
    assert h.series("reward").values.tolist() == TRL_REWARD
    assert h.series("eval/reward").values.tolist() == TRL_EVAL and h.series("eval/reward").steps.tolist() == [3, 6]
    assert h.log.mapping["reward"] == "train/reward" and h.log.unrecognised == []
    assert h.config["beta"] == 0.04 and h.config["num_generations"] == 4 and h.config["max_completion_length"] == 12


@needs_tensorboard
def test_trl_output_dir_takes_trainer_state_and_its_settings_from_the_tensorboard_args():
    h = load_history(LOGS / "trl" / "run-report")
    assert h.log.format == "trl" and h.series("reward").values.tolist() == TRL_REWARD
    assert h.config == {"learning_rate": 0.001, "beta": 0.04, "num_generations": 4, "max_completion_length": 12,
                        "max_grad_norm": 1.0, "loss_type": "dapo", "num_iterations": 1, "temperature": 1.0,
                        "max_steps": 6, "per_device_train_batch_size": 4, "optim": "adamw_torch_fused",
                        "adam_epsilon": 1e-08, "logging_steps": 1.0}
    assert "args/text_summary" in h.log.config_source
    tb = load_history(LOGS / "trl" / "run-report" / "runs")
    assert tb.log.format == "tensorboard" and tb.steps == 6
    assert tb.series("reward").values.tolist() == pytest.approx(TRL_REWARD, rel=1e-7)  # float32 in the event file


# ---------------------------------------------------------------- verl

@pytest.mark.parametrize("version", ["v0.7.0", "v0.9.1"])
def test_verl_file_logger(version):
    h = load_history(LOGS / "verl" / version)
    assert (h.log.format, h.log.trainer, h.steps) == ("verl", "verl", 6)  # step 0 is validation only
    assert h.series("reward").values.tolist() == pytest.approx([0.25, 0.3, 0.35, 0.4, 0.45, 0.5])
    assert h.log.mapping["reward"] == "critic/score/mean" and h.log.mapping["grad_norm"] == "actor/grad_norm"
    grad = h.series("grad_norm")
    assert math.isnan(grad.values[3]) and grad.steps[3] == 4  # 0.7.0 wrote NaN, 0.9.1 wrote null
    held_out = h.series("eval/reward")
    assert held_out.steps.tolist() == [0, 3, 6] and held_out.values.tolist() == pytest.approx([0.3, 0.36, 0.42])
    assert h.log.mapping["eval/reward"] == "val-core/openai/gsm8k/reward/mean@1"
    assert h.has("eval/val-core/openai/gsm8k/reward/mean@1") and not h.has("critic/rewards/mean")
    assert judge_one("gradients.non_finite", h).status == "fail"


def test_verl_settings_come_from_the_hydra_config_of_the_same_experiment():
    h = load_history(LOGS / "verl" / "v0.7.0")
    assert h.config == {"learning_rate": 1e-6, "max_grad_norm": 1.0, "num_generations": 5,
                        "max_completion_length": 1024, "temperature": 1.0, "lora_r": 0, "num_iterations": 1,
                        "beta": 0.001}  # use_kl_loss: kl_loss_coef
    assert h.log.config_source.endswith("outputs/2026-11-23/19-00-00/.hydra/config.yaml")
    assert load_history(LOGS / "verl" / "v0.9.1").config == {}  # no Hydra config beside that one


def test_verl_reward_is_the_score_before_the_kl_penalty_not_the_rewards_after_it(tmp_path):
    log = tmp_path / "proj" / "exp.jsonl"
    log.parent.mkdir()
    lines = [{"step": s, "data": {"critic/score/mean": 0.1 * s, "critic/rewards/mean": 0.1 * s - 0.05,
                                  "actor/reward_kl_penalty": 0.05}} for s in range(1, 4)]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    h = load_history(log)
    assert h.series("reward").values.tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert h.series("kl").values.tolist() == [0.05, 0.05, 0.05]
    assert "critic/rewards/mean" in h.log.ignored and h.run == "proj/exp"


# ---------------------------------------------------------------- prime-rl

def test_prime_rl_merges_trainer_and_orchestrator_rows_by_step():
    h = load_history(LOGS / "prime-rl" / "outputs" / "reverse-text-grpo")
    assert (h.log.format, h.log.trainer, h.steps) == ("prime-rl", "prime-rl", 5)  # 27 lines, steps 0-4
    assert h.series("reward").values.tolist() == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.6])
    assert h.log.mapping["reward"] == "train/agg/all/agent/reward/mean"
    assert h.log.mapping["grad_norm"] == "optim/grad_norm" and h.series("grad_norm").steps.tolist() == [0, 1, 3]
    assert h.series("frac_reward_zero_std").values.tolist() == pytest.approx([0.1, 0.15, 0.2, 0.25, 0.3])
    # both processes log time/step: the orchestrator's is renamed, neither overwrites the other
    assert "time/step" in h.log.ignored and "orchestrator/time/step" in h.log.ignored
    assert h.series("eval/reward").steps.tolist() == [0, 4] and h.series("eval/reward").values.tolist() == [0.3, 0.5]
    assert ("prime-rl leaves non-finite values out of metrics.jsonl, so a missing value can mean NaN or inf: "
            "missing grad_norm at step 2") in h.log.notes
    assert h.config == {"learning_rate": 3e-6, "max_grad_norm": 1.0, "num_generations": 8, "temperature": 1.0,
                        "max_steps": 4}


def test_prime_rl_restart_repeats_steps_and_the_last_occurrence_is_kept(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(LOGS / "prime-rl" / "outputs" / "reverse-text-grpo", run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    again = [json.loads(line) for line in lines if json.loads(line)["step"] == 3]
    for row in again:  # the run restarted from its step-3 checkpoint and logged step 3 again
        row.update({k: 0.99 for k in row if k == "optim/grad_norm"})
        row["time"] += 100
    (run / "metrics.jsonl").write_text("\n".join(lines + [json.dumps(r) for r in again]) + "\n")
    h = load_history(run)
    assert h.steps == 5 and h.series("grad_norm").values.tolist()[-1] == 0.99
    assert any("logged again later, as after a restart" in n and "the last occurrence of each is kept" in n
               for n in h.log.notes)


# ---------------------------------------------------------------- OpenRLHF

def test_openrlhf_wandb_names_map_and_its_traps_are_kept_apart():
    h = load_history(LOGS / "openrlhf" / "wandb")
    assert (h.log.format, h.log.trainer, h.steps) == ("wandb", "openrlhf", 6)
    assert h.series("reward").values.tolist() == pytest.approx([0.25, 0.3, 0.35, 0.4, 0.45, 0.5])
    assert h.series("entropy").values.tolist() == pytest.approx([0.54, 0.53, 0.52, 0.51, 0.5, 0.49])  # entropy_loss
    assert math.isnan(h.series("grad_norm").values[3])
    mapping = h.log.mapping
    assert (mapping["entropy"], mapping["grad_norm"], mapping["reward_std"]) == (
        "train/entropy_loss", "train/actor_grad_norm", "train/group_reward_std")
    # logprobs_diff is policy minus REFERENCE: never the sampler gap
    assert "train/logprobs_diff" in h.log.ignored and not h.has("sampling/sampling_logp_difference/mean")
    assert mapping["eval/reward"] == "eval/eval_gsm8k_pass1" and h.series("eval/reward").values.tolist() == [0.53, 0.56]
    assert h.log.unrecognised == []  # the generated_samples table keys are known


def test_openrlhf_config_is_never_printed(capsys):
    """OpenRLHF's W&B config is args.__dict__, which holds the W&B API key (here 'x')."""
    from flatline.harness.cli import main

    assert main(["diagnose", str(LOGS / "openrlhf" / "wandb"), "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert "key=" not in out and "namespace(" not in out


@needs_tensorboard
def test_openrlhf_tensorboard_names_map_like_its_wandb_names():
    h = load_history(LOGS / "openrlhf" / "tensorboard")
    assert (h.log.format, h.log.trainer, h.steps) == ("tensorboard", "openrlhf", 6)
    assert h.series("reward").values.tolist() == pytest.approx([0.25, 0.3, 0.35, 0.4, 0.45, 0.5], rel=1e-6)
    assert h.series("eval/reward").values.tolist() == pytest.approx([0.53, 0.56], rel=1e-6)


# ---------------------------------------------------------------- CSV / TSV

def test_plain_csv_and_tsv():
    h = load_history(LOGS / "csv" / "metrics.csv")
    assert (h.log.format, h.steps) == ("csv", 8)
    assert h.series("reward").values.tolist() == pytest.approx([0.1 * s for s in range(1, 9)])
    tsv = load_history(LOGS / "csv" / "metrics.tsv")
    assert tsv.log.format == "tsv" and tsv.log.mapping["reward"] == "train/reward" and tsv.steps == 8
    api = load_history(LOGS / "csv" / "history_api.csv")  # run.history().to_csv(): an unnamed index column
    assert api.series("reward").steps.tolist() == list(range(1, 9))  # train/global_step, not _step


def test_wandb_export_with_two_runs_gives_each_run():
    export = LOGS / "csv" / "wandb_export_2026-11-23T19_15_42.007+00_00.csv"
    h = load_history(export)  # one History: the first run, with a note
    assert h.run == "grpo-lr1e-6" and h.series("reward").values.tolist()[:2] == [0.1, 0.2]
    assert h.series("reward").steps.tolist()[:2] == [1, 2]  # the panel's x axis, train/global_step
    assert any("holds 2 runs: this is the first, 'grpo-lr1e-6'" in n for n in h.log.notes)
    first, second = load_histories(export)
    assert (first.run, second.run) == ("grpo-lr1e-6", "grpo-lr3e-6")
    assert second.series("reward").steps.tolist()[:2] == [1, 2]
    assert second.series("reward").values.tolist()[:2] == [0.15, 0.25]
    assert any("down-sampled" in n for n in h.log.notes)
    group = load_history(LOGS / "csv" / "wandb_export_2026-11-23T19_16_10.450+00_00.csv")
    assert any("'Group: beta=0.0' is a W&B group" in n for n in group.log.notes)


# ---------------------------------------------------------------- the whole judgement

@pytest.mark.parametrize("log", ["trl/run", "verl/v0.9.1", "prime-rl/outputs/reverse-text-grpo", "openrlhf/wandb"])
def test_each_trainers_log_is_judged_and_reported(log, tmp_path):
    from flatline.diagnostics.report import render_json, render_markdown, write_report

    h = load_history(LOGS / log)
    diagnosis = judge(h)
    assert not diagnosis.nothing_to_judge and diagnosis.key_metrics["steps"] == h.steps
    md = render_markdown(diagnosis, h)
    assert "## Log" in md and f"{h.steps} training steps" in md
    out = render_json(diagnosis, h)
    json.dumps(out, allow_nan=False)
    assert out["log"]["format"] == h.log.format and out["log"]["mapping"]["reward"] == h.log.mapping["reward"]
    write_report(diagnosis, h, tmp_path / "report")
    assert json.loads((tmp_path / "report" / "diagnosis.json").read_text())["log"]["trainer"] == h.log.trainer


def test_flatline_run_directory_is_read_as_before():
    example = Path(__file__).parents[1] / "reports" / "examples" / "default-arithmetic"
    h = load_history(example)
    assert (h.log.format, h.log.trainer, h.steps, h.run) == ("flatline", "flatline", 24, "default-a")
    assert h.setting("learning_rate") == 0.0002 and h.run_dir == example
    assert h.series("eval/reward").steps.tolist() == [1, 8, 16, 24]
    assert h.log.unrecognised == [] and h.log.dropped == [] and h.log.notes == []


def test_a_missing_tensorboard_names_the_extra(monkeypatch, tmp_path):
    from flatline.diagnostics.readers import tensorboard_events

    monkeypatch.setattr(tensorboard_events, "find_spec", lambda name: None)
    with pytest.raises(FlatlineError, match=r"needs the tensorboard package: pip install 'flatline\[tensorboard\]'"):
        load_history(LOGS / "openrlhf" / "tensorboard")
