"""On the real embedded model: GRPO steps move SmolLM2's policy towards the completions the reward prefers."""
import pytest
import torch

from flatline.trainer.config import load_config
from flatline.trainer.loop import build_trainer

ITERATIONS = 3


@pytest.mark.slow
def test_grpo_steps_raise_the_logprob_of_rewarded_completions():
    cfg = load_config("configs/default.toml", [
        "report_to=none", f"num_iterations={ITERATIONS}", "max_completion_length=32", "learning_rate=2e-4", "seed=0"])
    trainer = build_trainer(cfg)
    for _ in range(3):  # a rollout with some reward variance (most have it; a flat one teaches nothing)
        trainer.step()
        rollout = trainer.last_rollout
        if rollout.advantages.abs().sum() > 0:
            break
        for _ in range(ITERATIONS - 1):
            trainer.step()
    assert rollout.advantages.abs().sum() > 0, "three rollouts without reward variance"
    before = trainer.logprobs_no_grad(rollout, trainer.model)  # after the first of the 3 steps on this rollout
    for _ in range(ITERATIONS - 1):
        trainer.step()
    assert trainer.last_rollout is rollout
    after = trainer.logprobs_no_grad(rollout, trainer.model)
    change = ((after - before) * rollout.completion_mask).sum(dim=1)  # [N] sequence logprob change
    improvement = float((rollout.advantages * change).sum())
    assert improvement > 0.5, f"advantage-weighted logprob change {improvement:.3f}"
    assert change[rollout.advantages > 0].mean() > change[rollout.advantages < 0].mean()
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert all(torch.count_nonzero(p) > 0 for p in lora_b)  # every adapter moved off its zero init
