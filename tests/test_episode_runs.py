"""Multi-turn episodes: the parser, the environment and its budgets, the runner's outcomes, masks and rewards, the
episodes probe and the episodes.* judges. The policy is a scripted sampler (a test double for the model's sampling
only: it writes fixed tool-calling turns); tokenizer, runner, environment, grader, loss, probes and judges are real."""
import math
import time

import pytest
import torch

from flatline.diagnostics.history import History
from flatline.diagnostics.judge import judge_one
from flatline.trainer.episodes.env import KeyValueEnv, StepBudget, calculate
from flatline.trainer.episodes.toolcall import ToolCall, parse_turn
from flatline.trainer.samplers import SampleBatch
from flatline.trainer.samplers.base import left_pad
from tests.conftest import tiny_config

FAULTS = "flatline.harness.selftest.episode_faults"


def test_parser_reads_calls_and_types_each_malformed_one():
    turn = parse_turn('<tool_call>{"name": "lookup", "arguments": {"key": "fig"}}</tool_call>')
    assert turn.calls == [ToolCall("lookup", {"key": "fig"})] and not turn.errors
    assert parse_turn('<tool_call>{"name": "lookup", "arguments": "{\\"key\\": \\"fig\\"}"}</tool_call>').calls
    bad = parse_turn('<tool_call>{oops}</tool_call><tool_call>[1]</tool_call><tool_call>{"arguments": {}}</tool_call>'
                     '<tool_call>{"name": "x", "arguments": 3}</tool_call><tool_call>{"name"')
    assert bad.errors == ["bad_json", "not_object", "no_name", "bad_arguments", "unclosed"] and not bad.calls
    assert not parse_turn("42").attempted


def test_a_turn_of_g_rollouts_per_prompt_prefills_each_prompt_once():
    from flatline.trainer.episodes.runner import shared_prompts
    assert shared_prompts([[1, 2], [1, 2], [3], [3]]) == ([[1, 2], [3]], 2)  # the first turn: G rows per prompt
    assert shared_prompts([[1], [1], [3]]) == ([[1], [1], [3]], 1)  # later turns: transcripts differ
    assert shared_prompts([[1], [3], [1], [3]]) == ([[1], [3], [1], [3]], 1)


def test_env_budget_shared_or_not_and_calculator():
    shared = StepBudget(2)
    a, b = KeyValueEnv({"fig": 3}, shared), KeyValueEnv({"fig": 3}, shared)
    call = ToolCall("lookup", {"key": "fig"})
    assert a.step(call).observation == "3" and b.step(call).reward == 1.0
    assert a.step(call).info["budget_exhausted"]  # the second rollout used the first one's step
    assert KeyValueEnv({"fig": 3}, StepBudget(2)).step(ToolCall("lookup", {"key": "kiwi"})).reward == -1.0
    assert calculate("(2 + 3) * 4") == 20
    with pytest.raises(ValueError):
        calculate("__import__('os')")


class ScriptedSampler:
    """Writes `policy(prompt_text, row)` as each turn, token by token, with logprob -1 per token."""

    def __init__(self, tokenizer, policy, eos_id):
        self.tokenizer, self.policy, self.eos_id, self.calls = tokenizer, policy, eos_id, 0

    def sync_weights(self, model):
        pass

    def sample(self, prompts, num_generations, max_new_tokens, temperature, top_p=1.0, top_k=0):
        rows = []
        for row, prompt in enumerate(p for p in prompts for _ in range(num_generations)):
            text = self.policy(self.tokenizer.decode(prompt), row)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.eos_id]
            rows.append(ids[:max_new_tokens])
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.eos_id)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
        lengths = torch.tensor([len(r) for r in rows])
        inside = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).float()
        prompt_ids, prompt_mask = left_pad([p for p in prompts for _ in range(num_generations)], self.eos_id)
        truncated = torch.tensor([r[-1] != self.eos_id for r in rows])
        return SampleBatch(prompt_ids, prompt_mask, ids, -inside, lengths, truncated)


def agent(prompt: str, row: int) -> str:
    """Looks the key up, then answers; every fourth rollout answers wrongly (so groups have reward variance)."""
    key = prompt.rsplit('key "', 1)[1].split('"', 1)[0]
    if prompt.rstrip().endswith("assistant") and "<tool_response>" in prompt.rsplit("<|im_start|>user", 1)[1]:
        value = prompt.rsplit("<tool_response>", 1)[1].split("</tool_response>", 1)[0]
        return "0" if row % 4 == 3 else value
    return '<tool_call>{"name": "lookup", "arguments": {"key": "%s"}}</tool_call>' % key


def spammer(prompt: str, row: int) -> str:
    """Calls the tool on every turn and never answers: the per-call bonus is all it earns (rows differ in errors)."""
    key = "nokey" if row % 2 else prompt.rsplit('key "', 1)[1].split('"', 1)[0]
    return '<tool_call>{"name": "lookup", "arguments": {"key": "%s"}}</tool_call>' % key


def run(*overrides, policy=agent, steps=4):
    from flatline.probes import for_trainer
    from flatline.trainer.loop import build_trainer

    cfg = tiny_config("task=tools", "num_generations=8", "per_device_train_batch_size=16", "max_completion_length=40",
                      "max_turns=3", "max_episode_length=512", "probes=cheap", f"max_steps={steps}", *overrides)
    trainer = build_trainer(cfg)
    trainer.sampler = ScriptedSampler(trainer.tokenizer, policy, trainer.eos_token_ids[0])
    trainer.listeners.extend(for_trainer(trainer))
    rows = [trainer.step() for _ in range(cfg.max_steps)]
    import dataclasses
    return trainer, History(run="t", rows=rows, config=dataclasses.asdict(cfg))


EPISODE_IDS = ("episodes.early_termination", "episodes.infra_scored_as_reward", "episodes.tool_call_failures",
               "episodes.bonus_dominates", "episodes.template_not_prefix_preserving", "masking.env_tokens_in_loss")


def flagged(history) -> set:
    return {i for i in EPISODE_IDS if judge_one(i, history).status in ("fail", "warn")}


def test_healthy_episodes_mask_only_the_models_tokens_and_nothing_is_flagged():
    trainer, h = run()
    rollout = trainer.last_rollout
    assert {e["outcome"] for e in rollout.episodes} == {"finished"}
    assert all(e["turns"] == 2 and e["calls_ok"] == 1 and e["policy_step"] == 3 for e in rollout.episodes)
    assert not (rollout.completion_mask.bool() & rollout.env_mask).any() and rollout.env_mask.any()
    assert rollout.reward_components["outcome"].count(1.0) == 12  # 3 of 4 rollouts answer right
    last = trainer.tokenizer.decode(rollout.samples.completion_ids[0, :int(rollout.completion_lengths[0])])
    assert "<tool_response>" in last and last.endswith("<|im_end|>")
    assert h.series("episodes/outcome/finished").mean() == 1.0 and h.series("masks/env_frac").max() == 0
    assert flagged(h) == set()


def test_a_budget_shared_by_eight_rollouts_ends_episodes_early():
    trainer, h = run("env_step_budget=3", "env_budget_shared=true")
    assert h.series("episodes/outcome/env_budget_exhausted").mean() == pytest.approx(5 / 8)
    assert flagged(h) == {"episodes.early_termination"}
    _, own = run("env_step_budget=3", steps=1)  # the same budget per rollout is plenty
    assert own.series("episodes/outcome/env_budget_exhausted").mean() == 0


def test_a_context_too_small_for_the_episode_is_context_full():
    trainer, h = run("max_episode_length=260")  # the 228-token prompt and a call fit; the tool's answer does not
    assert h.series("episodes/outcome/context_full").mean() == 1.0
    assert flagged(h) == {"episodes.early_termination"}


def test_tool_outputs_in_the_loss_are_flagged():
    trainer, h = run(f"mask_fn={FAULTS}:transcript_mask")
    assert h.series("episodes/env_tokens_in_loss").values.min() > 0 and h.series("masks/env_frac").values.min() > 0.3
    assert flagged(h) == {"masking.env_tokens_in_loss"}


@pytest.mark.parametrize("policy", ["exclude", "zero"])
def test_a_grader_that_times_out_is_excluded_or_flagged_never_a_silent_zero(policy):
    trainer, h = run(f"reward={FAULTS}:slow_grader", "grader_timeout_s=0.1", f"infra_failure={policy}", steps=3)
    errors = h.series("episodes/outcome/grader_error").mean()
    assert 0.1 < errors < 0.6
    rollout = trainer.last_rollout
    infra = torch.tensor([e["outcome"] == "grader_error" for e in rollout.episodes])
    if policy == "exclude":
        assert torch.isnan(rollout.rewards[infra]).all() and (rollout.advantages[infra] == 0).all()
        assert flagged(h) == set()
    else:
        assert (rollout.rewards[infra] == 0).all()
        assert flagged(h) == {"episodes.infra_scored_as_reward"}


def test_a_tool_call_bonus_that_swamps_the_outcome():
    trainer, h = run("tool_call_reward_cap=0", "reward_weights.tool_calls=0.5", policy=spammer, steps=4)
    assert h.series("episodes/per_call_variance_share").values.min() == 1.0
    assert h.series("episodes/outcome/max_turns").mean() == 1.0
    assert flagged(h) == {"episodes.bonus_dominates", "episodes.tool_call_failures"}  # half its calls miss


def test_a_template_that_rewrites_earlier_turns():
    template = ("{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}{{'<|im_start|>assistant\\n"
                "(call)<|im_end|>\\n'}}{% else %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}"
                "{% endif %}{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\\n'}}{% endif %}")
    from flatline.trainer.loop import build_trainer
    for mode, status in (("render", "fail"), ("append", "warn")):
        cfg = tiny_config("task=tools", "num_generations=2", "per_device_train_batch_size=4", "max_completion_length=40",
                          "max_turns=3", "max_episode_length=512", "max_steps=2", f"episode_prompts={mode}")
        from flatline.probes import for_trainer
        trainer = build_trainer(cfg)
        trainer.tokenizer.chat_template = template
        trainer.sampler = ScriptedSampler(trainer.tokenizer, agent, trainer.eos_token_ids[0])
        trainer.listeners.extend(for_trainer(trainer))
        rows = [trainer.step() for _ in range(2)]
        import dataclasses
        h = History(run="t", rows=rows, config=dataclasses.asdict(cfg))
        assert judge_one("episodes.template_not_prefix_preserving", h).status == status


def test_the_episode_outcome_owning_the_variance_is_the_task_not_dominance():
    def history(outcome_share: float, episodes: bool) -> History:
        row = {"reward/outcome/variance_share": outcome_share, "reward/tool_calls/variance_share": 1 - outcome_share,
               "reward/outcome/frac_at_min": 0.5, "reward/outcome/frac_at_max": 0.5,
               "reward/tool_calls/frac_at_min": 0.5, "reward/tool_calls/frac_at_max": 0.5,
               "reward/outcome/min": 0.0, "reward/outcome/max": 1.0, "reward/tool_calls/min": -1.0,
               "reward/tool_calls/max": 1.0}
        if episodes:
            row["episodes/outcome_mean"] = 0.5
        return History(run="t", rows=[{"step": i + 1, **row} for i in range(4)], config={})

    assert judge_one("reward.component_dominance", history(0.96, episodes=True)).status == "pass"
    assert judge_one("reward.component_dominance", history(0.04, episodes=True)).status == "fail"  # the per-call term
    assert judge_one("reward.component_dominance", history(0.96, episodes=False)).status == "fail"  # single-turn: unchanged
