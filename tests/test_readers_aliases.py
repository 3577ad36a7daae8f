"""The alias table, the held-out guard, the trainer sniffing, the config table and the detection rules, on their own."""
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flatline.diagnostics.readers import aliases, configs, detect
from flatline.diagnostics.readers.aliases import DIALECTS, HELD_OUT, check_guards, map_keys, sniff_trainer

EVAL_PREFIXES = sorted({prefix for d in DIALECTS.values() for prefix, _ in d.eval_prefixes})
TRAINING_NAMES = ["reward", "grad_norm", "critic/score/mean", "entropy_loss", "train/reward", "accuracy", "acc",
                  "score", "train/agg/all/agent/reward/mean", "rewards/correct/mean", "loss"]


def test_flatline_families_are_the_probes_families():
    from flatline.probes import ALL_PROBES

    assert set(aliases.FLATLINE_FAMILIES) == {probe.family for probe in ALL_PROBES}


@settings(max_examples=300, deadline=None)
@given(trainer=st.sampled_from(sorted(DIALECTS)), prefix=st.sampled_from(EVAL_PREFIXES),
       names=st.lists(st.sampled_from(TRAINING_NAMES) | st.text("abcdefgh/_@1", min_size=1, max_size=12),
                      min_size=1, max_size=6))
def test_a_held_out_key_never_fills_a_training_name(trainer, prefix, names):
    """Whatever a trainer calls its held-out series, they fill only eval/ names, never `reward` or another metric."""
    keys = [prefix + n for n in names] + ["step"]
    keymap = map_keys(keys, trainer)
    check_guards(keymap, trainer)
    dialect = DIALECTS[trainer]
    held_out = {k for k in keys if aliases.eval_name(k[len("train/"):] if k.startswith(tuple(dialect.strip)) else k,
                                                     dialect) is not None}
    for key in held_out:
        assert all(name.startswith("eval/") for name in keymap.targets.get(key, ()))
    if held_out == set(keys) - {"step"}:
        assert "reward" not in keymap.mapping


@pytest.mark.parametrize("trainer, keys, chosen", [
    ("trl", ["eval_loss", "eval_runtime", "eval_accuracy"], "eval_accuracy"),
    ("trl", ["eval_loss", "eval_reward", "eval_accuracy"], "eval_reward"),
    ("trl", ["eval_loss", "eval_runtime", "eval_samples_per_second"], None),
    ("verl", ["val-core/b/reward/mean@4", "val-core/a/reward/mean@1", "val-core/a/reward/mean@8",
              "val-core/a/reward/best@8/mean", "val-aux/a/acc/mean@8"], "val-core/a/reward/mean@8"),
    ("verl", ["val-core/a/reward/mean@1", "val-core/a/acc/mean@1"], "val-core/a/acc/mean@1"),
    ("prime-rl", ["eval/env/effective/agent/reward/mean", "eval/env/all/agent/reward/mean", "eval/env/agent/avg@4"],
     "eval/env/all/agent/reward/mean"),
    ("openrlhf", ["eval/eval_math_pass1", "eval/eval_gsm8k_pass1", "eval/eval_gsm8k_pass4"], "eval/eval_gsm8k_pass1"),
    ("tinker", ["test/env/all/reward/total", "test/env/other/reward/total", "test/env/all/ac_tokens_per_turn"],
     "test/env/all/reward/total"),
    ("", ["val/loss", "test_accuracy"], "test_accuracy"),
])
def test_the_held_out_score_is_chosen_deterministically(trainer, keys, chosen):
    keymap = map_keys(keys + ["loss"], trainer)
    assert keymap.mapping.get(HELD_OUT) == chosen


def test_verl_names_several_data_sources_and_says_which_it_read():
    keymap = map_keys(["val-core/b/reward/mean@1", "val-core/a/reward/mean@1"], "verl")
    assert "the held-out score eval/reward is val-core/a/reward/mean@1 (the first of 2 data sources (a, b))" \
        in keymap.notes


@pytest.mark.parametrize("keys, trainer", [
    (["critic/score/mean", "actor/grad_norm", "timing_s/gen"], "verl"),
    (["optim/grad_norm", "train/agg/all/agent/reward/mean", "entropy/all/mean"], "prime-rl"),
    (["train/actor_grad_norm", "train/policy_loss", "train/reward", "train/global_step"], "openrlhf"),
    (["train/reward", "train/frac_reward_zero_std", "train/global_step", "profiling/Time taken: x"], "trl"),
    (["train/reward", "train/reward_std", "train/frac_reward_zero_std", "train/policy_loss"], "trl"),
    (["reward", "frac_reward_zero_std", "advantage/zero_std_frac", "update/rel_update"], "flatline"),
    (["my_metric", "other"], ""),
    # prime-rl's orchestrator before train/agg/ (a W&B export holds only these): reward/ is also a flatline family
    (["reward/mean", "completion_len/mean", "is_truncated/mean", "batch/solve_all", "batch/solve_none",
      "metrics/exact_reward", "time/step", "progress/total_tokens"], "prime-rl"),
    # Tinker (tinker-cookbook): optim/lr alone would say prime-rl, time/train alone flatline
    (["env/all/reward/total", "env/all/ac_tokens_per_turn", "optim/lr", "optim/entropy", "optim/kl_sample_train_v1",
      "time/train", "progress/done_frac"], "tinker"),
    # flatline's own names with its reward probe and timings stay flatline's
    (["reward", "reward/errors", "reward/format/variance_share", "time/generate", "time/train", "loss"], "flatline"),
])
def test_sniffing_the_trainer_from_its_keys(keys, trainer):
    assert sniff_trainer(keys)[0] == trainer


def test_a_literal_key_of_ours_does_not_shadow_the_trainers_own():
    keymap = map_keys(["critic/score/mean", "reward"], "verl")
    assert keymap.mapping["reward"] == "critic/score/mean" and "reward" in keymap.ignored


def test_several_agents_pick_the_first_and_say_so():
    keys = ["train/agg/all/zeta/reward/mean", "train/agg/all/alpha/reward/mean"]
    keymap = map_keys(keys, "prime-rl")
    assert keymap.mapping["reward"] == "train/agg/all/alpha/reward/mean"
    assert any(n.startswith("reward is read from train/agg/all/alpha/reward/mean, the first of 2") for n in keymap.notes)


def test_unknown_keys_are_listed_not_dropped():
    keymap = map_keys(["reward", "my/custom", "timing_s/gen", "step"], "verl")
    assert keymap.unrecognised == ["my/custom"] and "timing_s/gen" in keymap.ignored and keymap.meta == ["step"]


# ---------------------------------------------------------------- the config table

def test_openrlhf_args_map_to_flatlines_names_and_nothing_else_is_kept():
    args = {"actor_learning_rate": 5e-7, "init_kl_coef": 0.01, "n_samples_per_prompt": 8, "generate_max_len": 1024,
            "max_norm": 1.0, "temperature": 1.0, "lora_rank": 0, "max_epochs": 1, "use_wandb": "secret-key-abc"}
    assert configs.map_settings(args, "openrlhf") == {
        "learning_rate": 5e-7, "beta": 0.01, "num_generations": 8, "max_completion_length": 1024,
        "max_grad_norm": 1.0, "temperature": 1.0, "lora_r": 0, "num_iterations": 1}


@pytest.mark.parametrize("actor, algorithm, beta", [
    ({"use_kl_loss": True, "kl_loss_coef": 0.002}, {"use_kl_in_reward": False, "kl_ctrl": {"kl_coef": 0.1}}, 0.002),
    ({"use_kl_loss": False, "kl_loss_coef": 0.002}, {"use_kl_in_reward": True, "kl_ctrl": {"kl_coef": 0.1}}, 0.1),
    ({"use_kl_loss": False, "kl_loss_coef": 0.002}, {"use_kl_in_reward": False, "kl_ctrl": {"kl_coef": 0.1}}, 0.0),
])
def test_verl_beta_follows_where_the_kl_goes(actor, algorithm, beta):
    config = {"actor_rollout_ref": {"actor": actor}, "algorithm": algorithm}
    assert configs.map_settings(config, "verl")["beta"] == beta


def test_settings_of_the_wrong_kind_are_left_out():
    assert configs.map_settings({"learning_rate": "auto", "num_generations": 8.5, "beta": None, "max_grad_norm": "1.0",
                                 "max_steps": -1, "loss_type": 3}, "trl") == {"max_grad_norm": 1.0}


def test_prime_rl_toml_configs(tmp_path):
    from flatline.diagnostics.history import load_history

    run = tmp_path / "out"
    (run / "configs").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(
        f'{{"step": {s}, "time": 1795460000.5, "optim/grad_norm": 0.5, "optim/lr": 1e-6}}\n' for s in range(4)))
    (run / "configs" / "trainer.toml").write_text("[optim]\nlr = 1e-6\nmax_norm = 0.5\n")
    (run / "configs" / "orchestrator.toml").write_text(
        "rollouts_per_example = 16\nmax_steps = 10\n[sampling]\nmax_tokens = 2048\ntemperature = 0.7\n")
    h = load_history(run)
    assert h.config == {"learning_rate": 1e-6, "max_grad_norm": 0.5, "num_generations": 16,
                        "max_completion_length": 2048, "temperature": 0.7, "max_steps": 10}
    assert any(n.startswith("stopped early: step 3 of max_steps 10") for n in h.log.notes)


def test_a_model_config_json_is_not_read_as_the_training_config(tmp_path):
    from flatline.diagnostics.history import load_history

    (tmp_path / "run.jsonl").write_text('{"step": 1, "reward": 0.5}\n')
    (tmp_path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 512}')
    h = load_history(tmp_path / "run.jsonl")
    assert h.config == {} and any("is the model's config" in n for n in h.log.notes)


# ---------------------------------------------------------------- detection

@pytest.mark.parametrize("name, first_line, kind", [
    ("trainer_state.json", "{}", "trl"),
    ("state.json", '{"best_metric": null, "log_history": []}', "trl"),
    ("exp.jsonl", '{"step": 0, "data": {"val-core/x/acc/mean@1": 0.5}}', "verl"),
    ("metrics.jsonl", '{"step": 0, "time": 1795460000.0, "optim/lr": 1e-6}', "prime-rl"),
    ("metrics.jsonl", '{"step": 1, "reward": 0.5, "time/generate": 3.0}', "jsonl"),
    ("history.ndjson", '{"_step": 0, "train/reward": 0.1}', "jsonl"),
    ("run.csv", "step,reward", "csv"),
    ("run.tsv", "step\treward", "tsv"),
    ("notes.txt", "hello", None),
])
def test_files_are_told_apart_by_name_and_first_objects(tmp_path, name, first_line, kind):
    path = tmp_path / name
    path.write_text(first_line + "\n")
    assert detect.file_kind(path) == kind


def _mismatch_log(tmp_path, rows) -> Path:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("kl, status", [(0.0007, "inconclusive"), (0.00002, "pass"), (0.02, "fail")])
def test_prime_rl_mismatch_kl_is_judged(tmp_path, kl, status):
    """prime-rl's mismatch_kl (k3, per token) at a dense model's 7e-4 is worth a look, at 2e-5 fine, at 2e-2 a fault."""
    from flatline.diagnostics.history import load_history
    from flatline.diagnostics.judge import judge_one

    rows = [{"step": s, "time": 1.8e9 + s, "mismatch_kl/all/mean": kl, "optim/grad_norm": 0.3, "loss/mean": 0.01}
            for s in range(1, 21)]
    history = load_history(_mismatch_log(tmp_path, rows))
    assert history.log.trainer == "prime-rl" and history.log.mapping["sync/mismatch_kl"] == "mismatch_kl/all/mean"
    verdict = judge_one("sync.sampler_mismatch", history)
    assert verdict.status == status and verdict.evidence["mismatch_kl_median"] == pytest.approx(kl)


def test_verl_rollout_corr_names_are_judged(tmp_path):
    from flatline.diagnostics.history import load_history
    from flatline.diagnostics.judge import judge_one

    rows = [{"step": s, "data": {"critic/score/mean": 0.5, "actor/grad_norm": 0.3,
                                 "rollout_corr/log_ppl_abs_diff": 0.08, "rollout_corr/k3_kl": 0.004,
                                 "rollout_corr/rollout_is_mean": 0.4, "rollout_corr/rollout_is_max": 9.0,
                                 "rollout_corr/rollout_is_eff_sample_size": 0.2}} for s in range(1, 21)]
    history = load_history(_mismatch_log(tmp_path, rows))
    assert history.log.mapping["sync/logprob_diff_mean"] == "rollout_corr/log_ppl_abs_diff"
    assert history.log.mapping["sync/is_weight_max"] == "rollout_corr/rollout_is_max"
    mismatch = judge_one("sync.sampler_mismatch", history)
    assert mismatch.status == "fail" and mismatch.evidence["logprob_diff_mean_median"] == 0.08
    weights = judge_one("sync.importance_weights", history)
    assert weights.status == "fail" and weights.evidence == {"ess_median": 0.2, "is_weight_mean_median": 0.4, "onset_step": 1.0}
