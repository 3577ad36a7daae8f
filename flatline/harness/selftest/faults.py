"""The planted faults: each a real fault in a real short training run (the bandit probe on a tiny Llama, or the
embedded default, SmolLM2 on arithmetic, where a fault needs completions that end with EOS), injected the way it
happens in practice (a config value, a user plug-in, or a structural slip), with the hypothesis ids that
must fail and the ids that may fail with it (its symptoms). Anything else that fails is a false alarm.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch

PLUGINS = "flatline.harness.selftest.plugins"
# Every run that does not learn may also fail these two: they are the symptom, not the cause.
NOT_LEARNING = frozenset({"progress.plateau", "control.learns"})
# A fault refused before training (bad config) is caught by the start-up checks, not by a hypothesis.
REFUSED = "refused at start"


@dataclass(frozen=True)
class Fault:
    name: str
    how: str  # config | plug-in | structural
    description: str
    must_fail: frozenset
    may_fail: frozenset = frozenset()
    config: dict = field(default_factory=dict)
    mutate: Callable | None = None  # fn(trainer), applied after the trainer and its probes are built
    fast: bool = False  # part of the CI subset
    base: str = "bandit"  # the run it is planted in: bandit (tiny random Llama), default (SmolLM2 arithmetic), tools
    # (SmolLM2 in multi-turn tool episodes), or vllm (the default with sampler = "vllm": needs the [vllm] extra)

    @property
    def allowed(self) -> frozenset:
        """Ids that may fail without a false alarm (a healthy run allows none)."""
        return self.must_fail | self.may_fail | (NOT_LEARNING if self.must_fail else frozenset())


def freeze_adapter(trainer) -> None:
    """PeftModel.from_pretrained(..., is_trainable=False): the LoRA weights are loaded frozen."""
    for name, parameter in trainer.model.named_parameters():
        if "lora_" in name:
            parameter.requires_grad_(False)


def drop_lora_b_from_optimizer(trainer) -> None:
    """An optimizer built before the adapter's B matrices were added (or from a filtered parameter list)."""
    b_ids = {id(p) for name, p in trainer.model.named_parameters() if "lora_B" in name}
    for group in trainer.optimizer.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in b_ids]


def unsynced_sampler(trainer) -> None:
    """The sampler keeps the weights it started with: the trained policy never reaches it (TRL #2856)."""
    trainer.sampler.model = copy.deepcopy(trainer.model).eval()
    trainer.sampler.sync_weights = lambda model: None


def lossy_merge_cycle(trainer) -> None:
    """After every optimizer step the adapter is merged into the base weights in bfloat16 and taken out again (a
    weight push to a bf16 sampler): the round trip does not restore the base (TRL #6688)."""
    pairs = []
    for module in trainer.model.modules():
        if hasattr(module, "lora_A") and hasattr(module, "base_layer") and "default" in getattr(module, "lora_A", {}):
            pairs.append(module)

    def merge_and_unmerge(optimizer, args, kwargs) -> None:
        for module in pairs:
            delta = module.get_delta_weight("default")
            weight = module.base_layer.weight
            weight.data = (weight.data + delta).to(torch.bfloat16).to(weight.dtype) - delta

    trainer.optimizer.register_step_post_hook(merge_and_unmerge)


def f(*ids: str) -> frozenset:
    return frozenset(ids)


LORA = {"lora_r": 8, "lora_alpha": 16, "learning_rate": 3e-2}
FAULTS = (
    Fault("lr_1e-7", "config", "learning_rate = 1e-7", f("update.too_small"), config={"learning_rate": 1e-7},
          fast=True),
    Fault("temperature_0", "config", "temperature = 0: greedy sampling, every completion of a group identical",
          f("entropy.collapse"), f("reward.no_signal", "advantage.degenerate_groups"), config={"temperature": 0.0},
          fast=True),
    Fault("beta_swamps", "config", "beta = 50: the KL penalty outweighs the policy gradient",
          f("kl.penalty_dominates"), config={"beta": 50.0}),
    Fault("bf16_tiny_lr", "config", "bfloat16 weights, full fine-tuning, learning_rate = 1e-5",
          f("update.precision_swallowed"), f("update.too_small", "update.weights_unchanged"),
          config={"dtype": "bfloat16", "learning_rate": 1e-5}),
    Fault("lora_targets_nothing", "config", "lora_target_modules match no module of the model", f(REFUSED),
          config={**LORA, "lora_target_modules": ["query_key_value"]}, fast=True),
    Fault("batch_advantages", "plug-in", "advantage_fn normalises over the whole batch instead of per group",
          f("advantage.numerics"), config={"advantage_fn": f"{PLUGINS}:batch_normalised_advantages"}, fast=True),
    Fault("shifted_groups", "plug-in", "advantage_fn groups completions one position off",
          f("advantage.numerics"), config={"advantage_fn": f"{PLUGINS}:shifted_group_advantages"}),
    Fault("float32_std", "plug-in", "advantage_fn takes the group std in float32; the reward is a constant 1.350639",
          f("advantage.numerics"), f("reward.no_signal", "advantage.degenerate_groups"),
          config={"advantage_fn": f"{PLUGINS}:float32_std_advantages", "reward": f"{PLUGINS}:constant_awkward_reward",
                  "num_generations": 8}),  # float32 keeps a non-zero std of 8 copies (of 4 it happens to be 0)
    Fault("constant_reward", "plug-in", "a reward that ignores the completion", f("reward.no_signal"),
          f("advantage.degenerate_groups"), config={"reward": f"{PLUGINS}:constant_reward"}, fast=True),
    Fault("raising_reward", "plug-in", "a reward that raises on some inputs", f("reward.parse_failures"),
          f("reward.no_signal", "advantage.degenerate_groups"), config={"reward": f"{PLUGINS}:raising_reward"}),
    Fault("detached_logprob", "plug-in", "loss_fn computes the loss on detached logprobs", f("gradients.no_flow"),
          f("update.weights_unchanged", "update.too_small"), config={"loss_fn": f"{PLUGINS}:detached_loss"}),
    Fault("sign_flipped_loss", "plug-in", "loss_fn with its sign flipped: the policy moves away from reward",
          f("progress.plateau"), f("advantage.degenerate_groups", "reward.no_signal", "entropy.collapse"),
          config={"loss_fn": f"{PLUGINS}:sign_flipped_loss"}),
    Fault("frozen_adapter", "structural", "the LoRA adapter is loaded frozen", f("update.optimizer_coverage"),
          f("gradients.no_flow", "update.weights_unchanged", "update.too_small"), config=LORA, mutate=freeze_adapter,
          fast=True),
    Fault("adapter_not_in_optimizer", "structural", "the LoRA B matrices are missing from the optimizer",
          f("update.optimizer_coverage"), f("update.weights_unchanged", "update.too_small", "gradients.no_flow"),
          config=LORA, mutate=drop_lora_b_from_optimizer),
    Fault("lora_full_ft_lr", "config", "LoRA at a full fine-tuning learning rate (1e-6)", f("update.too_small"),
          config={**LORA, "learning_rate": 1e-6}),
    Fault("ratio_clip_saturated", "config", "num_iterations = 4 at a high learning rate: most tokens leave the "
          "trust region", f("update.clip_saturation"), config={"num_iterations": 4, "learning_rate": 0.3}),
    Fault("none_reward", "plug-in", "a reward that returns None for outputs it cannot parse", f("reward.parse_failures"),
          config={"reward": f"{PLUGINS}:sometimes_none_reward"}),
    Fault("infinite_reward", "plug-in", "a reward that pays -inf for some outputs", f("advantage.numerics"),
          f("gradients.non_finite", "update.weights_unchanged", "update.too_small", "gradients.no_flow",
            "entropy.collapse", "reward.no_signal", "advantage.degenerate_groups"),
          config={"reward": f"{PLUGINS}:sometimes_infinite_reward"}),
    Fault("lossy_merge", "structural", "the adapter merged into the base in bfloat16 and unmerged after every step",
          f("update.base_drift"), config=LORA, mutate=lossy_merge_cycle),
    Fault("unsynced_sampler", "structural", "the sampler never receives the trained weights",
          f("sync.sampler_mismatch"), f("sync.importance_weights", "sync.stale_weights"), mutate=unsynced_sampler, fast=True),
    Fault("dropout_on", "config", "lora_dropout = 0.3: the loss trains a random sub-network of the sampling policy",
          f("update.nondeterministic_forward"), f("sync.sampler_mismatch"),  # the sampler runs without dropout
          config={**LORA, "lora_dropout": 0.3}, fast=True),
    Fault("prompt_in_mask", "plug-in", "mask_fn returns the attention mask over prompt and completion: the prompt is "
          "trained on", f("masking.prompt_in_loss"), config={"mask_fn": f"{PLUGINS}:attention_mask_as_loss_mask"},
          fast=True),
    # SmolLM2 on arithmetic: its completions end with EOS, which these faults need. 12 steps each.
    Fault("late_mask", "plug-in", "mask_fn starts a token late: each completion's first token is never trained on",
          f("masking.completion_excluded"), config={"mask_fn": f"{PLUGINS}:late_starting_mask", "max_steps": 12},
          base="default"),
    Fault("eos_dropped", "plug-in", "mask_fn = completion_ids != pad_token_id with pad == eos: EOS never in the loss",
          f("masking.eos_excluded"), f("length.truncation", "length.growth"),
          config={"mask_fn": f"{PLUGINS}:eos_dropping_mask", "max_steps": 12}, base="default"),
    Fault("completion_too_short", "config", "max_completion_length = 4: the answer is cut before it is written",
          f("length.truncation"), f("reward.no_signal", "advantage.degenerate_groups"),
          config={"max_completion_length": 4, "max_steps": 12}, base="default"),
)

def reused_lora_id(trainer) -> None:
    """Every sync saves the new adapter but serves it under the same LoRARequest id: vLLM has that id cached and keeps
    serving the first adapter it loaded. Nothing errors; the engine never sees a trained weight."""
    trainer.sampler.next_lora_id = lambda: 1


# Planted in the vLLM sampler (base "vllm": configs/default.toml with sampler = "vllm"; 8 steps each).
VLLM_STEPS = 8
SYNC_SYMPTOMS = f("sync.sampler_mismatch", "sync.importance_weights")
VLLM_FAULTS = (
    Fault("vllm_sync_every_1000", "config", "sync_every = 1000: the engine keeps its starting weights for the run",
          f("sync.stale_weights"), SYNC_SYMPTOMS, config={"sync_every": 1000, "max_steps": VLLM_STEPS}, base="vllm"),
    Fault("vllm_lora_id_reused", "structural", "each sync serves the new adapter under the same LoRARequest id: vLLM "
          "keeps the cached first one", f("sync.stale_weights"), SYNC_SYMPTOMS,
          config={"max_steps": VLLM_STEPS}, mutate=reused_lora_id, base="vllm"),
    Fault("vllm_raw_logprobs", "config", "vllm_logprobs = raw at temperature 0.7: the engine reports logprobs before "
          "temperature, the trainer scores after", f("sync.sampling_semantics"), SYNC_SYMPTOMS,
          config={"vllm_logprobs": "raw", "temperature": 0.7, "max_steps": VLLM_STEPS}, base="vllm"),
    # A bf16 base (dtype = "bfloat16", or any bf16 checkpoint) sits on the bf16 grid, and round-to-nearest then gives
    # bf16(W + delta) == W exactly whenever |delta| is below half a unit of W: at lr 1e-5 the engine keeps 2% of the
    # update (sync/merged_total_kept, median over 8 syncs; 3% at the last) while the trainer's float32 adapters hold all
    # of it. The policy moves less than the bf16 base's own forward noise (0.035 nats), so sync/tracking is not read.
    Fault("vllm_bf16_merged_small_updates", "config", "a bf16 base merged into a bfloat16 engine at learning_rate "
          "1e-5: deltas below half a bf16 unit of W round back to W", f("sync.stale_weights"), SYNC_SYMPTOMS,
          config={"dtype": "bfloat16", "vllm_sync_mode": "merged", "vllm_dtype": "bfloat16", "learning_rate": 1e-5,
                  "max_steps": VLLM_STEPS}, base="vllm"),
)
VLLM_HEALTHY = (
    Fault("vllm_default", "config", "the embedded default with sampler = vllm (lora sync every step, float32 engine)",
          f(), base="vllm"),
    # Healthy because this base is off the bf16 grid, not because rounding keeps updates in general. The embedded
    # checkpoint is a dequantised Q4_1 GGUF held in float32: ~74% of its q/k/v/o weights are not bf16 values, so
    # round-to-nearest moves an element of W + delta by a whole unit with probability ~|delta| / unit (and the ~5% that
    # sit exactly on a rounding tie flip for any delta of one sign): the engine keeps the update in expectation, with
    # noise. Measured on these weights with LoRA-sized deltas (bench/bf16_merge_kept.py, r 16, 8 steps at 5e-5):
    # sync/merged_total_kept 0.9-1.1 off the grid, 0.12-0.30 on it; in this run 0.97 (median over 8 syncs, 0.90 at the
    # last, ~9% of the weights moved) and the engine followed the policy (sync/tracking 0.97). On a base on the grid
    # (a bf16 checkpoint, dtype = "bfloat16") bf16(W + delta) == W whenever |delta| < half a unit: that is the fault
    # vllm_bf16_merged_small_updates. What remains here is bf16 precision (~0.03 nats per token from step 1, before
    # any update), which sync.sampler_mismatch reports as inconclusive. The bf16 merge that drifts the trainer's own
    # base through merge/unmerge is update.base_drift's (fault lossy_merge); the merged sync never writes the trainer.
    Fault("vllm_bf16_merged", "config", "merged sync of a float32 (off-grid) base into a bfloat16 engine at "
          "learning_rate 5e-5: kept in expectation, only bf16 precision", f(),
          config={"vllm_sync_mode": "merged", "vllm_dtype": "bfloat16", "learning_rate": 5e-5, "max_steps": VLLM_STEPS},
          base="vllm"),
)

# Planted in multi-turn tool-use episodes (base "tools": configs/tools.toml, SmolLM2 learning to call `lookup`; a
# prompt of 228 tokens, a call of 28, the tool's answer and the next turn's header 22). One prompt x 8 episodes a
# step and 2 steps: each verdict reads a share of episodes, each step's share its own evidence. At step 1 about half
# of SmolLM2's episodes call the tool.
EPISODES = "flatline.harness.selftest.episode_faults"
ONE_GROUP = {"per_device_train_batch_size": 8, "max_steps": 2}
EPISODE_FAULTS = (
    Fault("episodes_shared_budget", "config", "env_step_budget = 1 shared by the 8 rollouts of a prompt: the first "
          "caller takes it, the others find it empty", f("episodes.early_termination"),
          config={**ONE_GROUP, "env_step_budget": 1, "env_budget_shared": True}, base="tools"),
    Fault("episodes_context_too_small", "config", "max_episode_length = 260: the prompt and a tool call fit, the "
          "tool's answer does not", f("episodes.early_termination"),
          f("reward.component_dominance"),  # an episode cut before its answer cannot earn the outcome: only calls vary
          config={**ONE_GROUP, "max_episode_length": 260}, base="tools"),
    Fault("episodes_tool_outputs_in_loss", "plug-in", "mask_fn trains on the whole transcript up to the last EOS: the "
          "tool outputs too", f("masking.env_tokens_in_loss"),
          f("masking.padding_in_loss"),  # pad == eos: after a last turn cut without EOS it takes one padding token
          config={**ONE_GROUP, "mask_fn": f"{EPISODES}:transcript_mask"}, base="tools", fast=True),
    Fault("episodes_grader_timeout_scored_0", "plug-in", "a grader that overruns grader_timeout_s on ~30% of episodes, "
          "its failures scored 0 (infra_failure = zero)", f("episodes.infra_scored_as_reward"),
          # its timeouts are reward errors, and a group whose gradings all time out is all 0: no variance
          f("reward.parse_failures", "advantage.degenerate_groups", "reward.no_signal"),
          config={**ONE_GROUP, "reward": f"{EPISODES}:slow_grader", "grader_timeout_s": 0.1, "infra_failure": "zero"},
          base="tools"),
    # The bonus can only swamp the outcome where calling more is not how the outcome is earned: on the two-hop sum
    # question two lookups and an answer earn 2 x 2 + 1 = 5, a lookup in each of 4 turns earns 8 and never answers.
    # Measured on SmolLM2 (16 steps): calls per episode 0.69 -> 4.0, episodes ending at max_turns 0% -> 100%, the
    # outcome 0.06 at best -> 0, while the reward rose 1.2 -> 7.3. 2 prompts x 8 episodes, 8 steps: farming is a trend.
    Fault("episodes_call_bonus_farmed", "config", "an uncapped per-call bonus twice the outcome on the two-hop sum "
          "question (tool_call_reward_cap = 0, reward_weights.tool_calls = 2): a lookup in every turn pays more than "
          "answering", f("episodes.bonus_dominates"),
          f("reward.component_dominance"),  # the outcome at its minimum, the per-call term owning the variance
          config={"per_device_train_batch_size": 16, "max_steps": 8, "tools_question": "sum", "max_turns": 4,
                  "max_episode_length": 768, "max_completion_length": 48, "tool_call_reward_cap": 0.0,
                  "reward_weights": {"outcome": 1.0, "tool_calls": 2.0}}, base="tools"),
)
EPISODE_HEALTHY = (
    Fault("episodes_tools", "config", "configs/tools.toml as shipped: SmolLM2 learning to look a key up and answer",
          f(), base="tools"),
    # The same bonus on the one-key question: it carries 91% of the within-group variance yet is aligned with the
    # outcome, since a lookup that runs is how the model finds the value: the outcome went 0.375 -> 1.0 in 4 steps and
    # no episode called twice, so nothing was learned instead of the task.
    Fault("episodes_call_bonus_aligned", "config", "an uncapped per-call bonus twice the outcome (tool_call_reward_cap "
          "= 0, reward_weights.tool_calls = 2): on this task calling is how the outcome is earned", f(),
          config={**ONE_GROUP, "max_steps": 4, "tool_call_reward_cap": 0.0,
                  "reward_weights": {"outcome": 1.0, "tool_calls": 2.0}}, base="tools"),
)

# Healthy runs and healthy-but-odd ones: nothing may fail.
HEALTHY = (
    Fault("healthy", "config", "the bandit probe as shipped: beta 0; on-policy, so its loss is ~0 from step 1", f(),
          fast=True),
    Fault("clip_0.01_adamw", "config", "max_grad_norm = 0.01 with AdamW: clipped every step, Adam undoes the scale",
          f(), config={"max_grad_norm": 0.01}, fast=True),
    Fault("kl_beta_0.04", "config", "beta = 0.04 (TRL's former default): a KL term that must not be blamed", f(),
          config={"beta": 0.04}),
    Fault("default", "config", "the embedded default as shipped: SmolLM2 learning arithmetic with LoRA (24 steps)",
          f(), base="default"),
)
