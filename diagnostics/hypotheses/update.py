"""update.*: did the optimizer step actually move the trainable weights, all of them, by enough, and only them."""
from __future__ import annotations

from flatline.diagnostics.hypotheses.common import at_steps, progress, signal_steps
from flatline.diagnostics.references import refs
from flatline.diagnostics.verdict import hypothesis

# Relative update ||dW|| / ||W|| of the trainable weights per step. With Adam every element steps by about lr (times
# |m| / sqrt(v) <= 1), so the relative step is about lr over the weights' scale, and the healthy range depends on the
# setting:
# - full fine-tuning: cs231n's rule of thumb puts a healthy update/weight ratio near 1e-3; a 7B model at lr 1e-6 sits
#   near 5e-5 and still learns over hundreds of steps. Below 1e-5 the policy does not move in a run's length; below
#   1e-4 is worth a look.
# - LoRA: the adapter's B starts at 0 and A at peft's init (scale ~1/sqrt(3 d_in)), so its relative step is ~lr
#   sqrt(3 d_in): flatline's embedded default (r16, lr 2e-4, SmolLM2) moves ~6e-3 per step, a 7B adapter at the
#   low end of LoRA RL learning rates (1e-5; LoRA's best lr is ~10x full fine-tuning's, "LoRA Without Regret") ~7e-4,
#   and a LoRA lr of 1e-6 (trl #2872: flat) ~5e-5. Below 1e-4 the adapter does not move the policy; below 1e-3 is
#   worth a look. (update/lora_effective_rel_update, the step of scale * B @ A against the base matrix, is reported as
#   evidence: its healthy range shrinks with the model's width, so it makes a poor threshold across models.)
# Below a tenth of the minimum an apparent reward gain is noise: the weights have not moved enough to cause it.
REL_UPDATE_MIN = 1e-5
REL_UPDATE_LOW = 1e-4
LORA_REL_UPDATE_MIN = 1e-4
LORA_REL_UPDATE_LOW = 1e-3
# Weights unchanged: half the steps left every trainable element exactly as it was.
UNCHANGED_STEPS_FRAC = 0.5
# Precision: a dtype that keeps under half of AdamW's intended update (float64 recomputation) swallows it.
PRECISION_KEPT_MIN = 0.5
# PPO practice (OpenAI baselines, "37 implementation details of PPO"): clip fractions of 0.1-0.2 are normal;
# above 0.3 most of the update is thrown away.
CLIP_SATURATION_FRAC = 0.3


def rel_update_series(h):
    """update/rel_update on steps with a non-zero advantage (without one, standing still is right), with the first
    LoRA step's inf (B moves off exactly 0) dropped."""
    return on_signal_steps(h, h.series("update/rel_update")).finite()


def on_signal_steps(h, series):
    return at_steps(series, signal_steps(h))


NO_SIGNAL = "no step had a non-zero advantage, so no update was due (see advantage.degenerate_groups)"


@hypothesis("update.weights_unchanged", "did the trainable (LoRA) weights actually change?")
def weights_unchanged(h, v):
    if not h.has("update/changed_frac"):
        return v.skipped("needs flatline's update probe (update/changed_frac), or probes.attach on your loop")
    changed = on_signal_steps(h, h.series("update/changed_frac")).finite()
    if not len(changed):
        return v.skipped(NO_SIGNAL)
    unchanged = changed.frac(lambda x: x <= 0)
    evidence = {"unchanged_steps_frac": unchanged, "changed_frac_median": changed.median()}
    if unchanged >= UNCHANGED_STEPS_FRAC:
        return v.fail(f"on {unchanged:.0%} of steps no trainable element changed", evidence,
                      "check update.optimizer_coverage and gradients.no_flow first; then that optimizer.step() runs "
                      "and the learning rate is not 0 (warmup, scheduler)", refs("frozen_adapter"))
    return v.passed(f"trainable weights changed on {1 - unchanged:.0%} of steps", evidence)


@hypothesis("update.optimizer_coverage", "are all trainable parameters in the optimizer (frozen adapter trap)?")
def optimizer_coverage(h, v):
    if not h.has("update/trainable_params"):
        return v.skipped("needs flatline's update probe (update/trainable_params, update/optimizer_params)")
    trainable = h.series("update/trainable_params").last()
    held = h.series("update/optimizer_params").last()
    missing = h.series("update/trainable_not_in_optimizer").max()
    evidence = {"trainable_params": trainable, "optimizer_params": held, "trainable_not_in_optimizer": missing}
    if trainable == 0:
        return v.fail("no parameter is trainable: the adapter was loaded frozen", evidence,
                      "load the adapter with PeftModel.from_pretrained(..., is_trainable=True) or build it with "
                      "get_peft_model", refs("frozen_adapter"))
    if held == 0 or missing > 0:
        return v.fail(f"{missing:.0f} trainable elements are not in the optimizer", evidence,
                      "build the optimizer after wrapping the model with LoRA, from "
                      "[p for p in model.parameters() if p.requires_grad]", refs("frozen_adapter"))
    return v.passed("every trainable parameter is in the optimizer", evidence)


@hypothesis("update.precision_swallowed", "are updates below the parameter dtype's resolution (bf16)?")
def precision_swallowed(h, v):
    kept = h.series("update/precision_kept").finite()
    if not len(kept):
        return v.skipped("needs flatline's update probe (update/precision_kept) with an Adam optimizer")
    evidence = {"precision_kept_median": kept.median(), "dtype": str(h.setting("dtype", "unknown"))}
    swallowed = h.series("update/swallowed_frac").finite()
    if len(swallowed):
        evidence["swallowed_frac_median"] = swallowed.median()
    if kept.median() < PRECISION_KEPT_MIN:
        return v.fail(f"the weights kept only {kept.median():.0%} of the optimizer's intended update: the rest is "
                      "below the dtype's resolution", evidence,
                      "keep trainable weights in float32 (dtype = \"float32\", or LoRA with fp32 adapters over a bf16 "
                      "base); with bf16 weights an update below |w|/256 vanishes", refs("bf16_update", "bf16_merge"))
    return v.passed(f"the weights kept {kept.median():.0%} of the intended update", evidence)


@hypothesis("update.too_small", "is the relative update size too small to move the policy (lr too low)?")
def too_small(h, v):
    if not h.has("update/rel_update"):
        return v.skipped("needs flatline's update probe (update/rel_update)")
    rel = rel_update_series(h)
    if not len(rel):
        return v.skipped(NO_SIGNAL)
    median = rel.median()
    lr = h.setting("learning_rate")
    lora = int(h.setting("lora_r", 0) or 0) > 0 or h.has("update/lora_effective_rel_update")
    minimum, low = (LORA_REL_UPDATE_MIN, LORA_REL_UPDATE_LOW) if lora else (REL_UPDATE_MIN, REL_UPDATE_LOW)
    measured = "LoRA adapter" if lora else "full fine-tuning"
    evidence = {"rel_update_median": median, "setting": measured, "rel_update_min_threshold": minimum}
    effective = on_signal_steps(h, h.series("update/lora_effective_rel_update")).finite()
    if len(effective):
        evidence["lora_effective_rel_update_median"] = effective.median()
    if lr is not None:
        evidence["learning_rate"] = lr
    p = progress(h)
    learning = p is not None and (p.rising or p.eval_rising)
    factor = f"~{min(1000, max(2, round(low / median)))}x" if median > 0 else "by orders of magnitude"
    advice = (f"raise learning_rate {factor} (now {lr}): LoRA's best lr is ~10x full fine-tuning's, typically "
              "1e-5..2e-4 for LoRA RL" if lora else
              f"raise learning_rate {factor} (now {lr}); aim for a relative update near 1e-4..1e-3 per step")
    if median < minimum and (not learning or median < minimum / 10):
        return v.fail(f"each step moves the trainable weights by {median:.2g} of their norm, under the {minimum:g} "
                      f"that moves a policy in {measured}: too little to change it", evidence, advice, refs("lora_lr"))
    if median < low and not learning:
        return v.inconclusive(f"small relative updates ({median:.2g} per step, {measured}) and no learning yet",
                              evidence, advice, refs("lora_lr"))
    return v.passed(f"relative update {median:.2g} per step ({measured})" +
                    (" and the reward is rising" if learning else ""), evidence)


@hypothesis("update.base_drift", "did weights that should be frozen change?")
def base_drift(h, v):
    if not h.has("update/base_drift_tensors"):
        return v.skipped("needs flatline's update probe (update/base_drift_tensors)")
    drifted = h.series("update/base_drift_tensors").max()
    evidence = {"drifted_tensors_max": drifted, "drift_max_rel": h.series("update/base_drift_max_rel").max()}
    if drifted > 0:
        return v.fail(f"{drifted:.0f} frozen tensors changed during training", evidence,
                      "something writes to the base weights: a merge_adapter/unmerge cycle in bf16, weight decay on "
                      "frozen parameters in the optimizer, or a shared tensor", refs("bf16_merge"))
    return v.passed("frozen weights bit-identical to the start", evidence)


@hypothesis("update.clip_saturation", "does the ratio clip (num_iterations > 1) throw away most of the update?")
def clip_saturation(h, v):
    clip = on_signal_steps(h, h.series("clip_ratio/region_mean")).finite()  # a batch of zero advantages clips nothing
    iterations = int(h.setting("num_iterations", 1) or 1)
    evidence = {"num_iterations": iterations}
    if iterations <= 1 and h.config:
        return v.passed("on-policy (num_iterations = 1): the ratio is 1 and nothing is clipped, as expected",
                        evidence, refs("clip_zero"))
    if not len(clip):
        return v.skipped("no clip_ratio/region_mean in the log")
    evidence["clip_ratio_mean"] = clip.mean()
    if clip.mean() > CLIP_SATURATION_FRAC:
        return v.fail(f"{clip.mean():.0%} of tokens fell outside the trust region and were clipped", evidence,
                      "lower num_iterations or learning_rate, or widen epsilon / epsilon_high (DAPO: 0.28)",
                      refs("dapo"))
    return v.passed(f"{clip.mean():.0%} of tokens clipped", evidence)


# Two train-mode forwards of the same rows agree exactly on CPU and to ~1e-5 nats on a GPU without dropout; dropout
# moves completion log-probs by a tenth of a nat or more.
FORWARD_GAP_TOL = 1e-4
FORWARD_GAP_LARGE = 0.1


@hypothesis("update.nondeterministic_forward", "is dropout left on in the policy (a forward that is not repeatable)?")
def nondeterministic_forward(h, v):
    modules, gap = h.series("policy/dropout_modules_active").finite(), h.series("policy/repeat_forward_logprob_gap")
    gap = gap.finite()
    if not len(modules) and not len(gap):
        return v.skipped("needs flatline's dropout probes (policy/dropout_modules_active; "
                         "policy/repeat_forward_logprob_gap with probes = full)")
    evidence = {}
    if len(modules):
        evidence["dropout_modules_active_max"] = modules.max()
    if len(gap):
        evidence["repeat_forward_logprob_gap_max"] = gap.max()
    advice = ("turn dropout off in the policy: lora_dropout = 0, and the model's own dropout "
              "(TRL: disable_dropout=True; HF: config.attention_dropout = 0, model.config.*dropout* = 0)")
    if len(gap) and gap.max() > FORWARD_GAP_LARGE:
        return v.fail(f"two train-mode forwards of the same tokens differ by up to {gap.max():.3g} nats: dropout is on, "
                      "so the loss trains a random sub-network, not the policy that sampled (the importance ratio at "
                      "num_iterations = 1 is not 1)", evidence, advice, refs("dropout"))
    if (len(gap) and gap.max() > FORWARD_GAP_TOL) or (len(modules) and modules.max() > 0):
        return v.warn("dropout is active in the policy while it trains "
                      + (f"({modules.max():.0f} dropout modules)" if len(modules) and modules.max() > 0 else
                         f"(repeated forwards differ by {gap.max():.2g} nats)")
                      + ": the trained log-probs carry dropout noise the sampler does not have", evidence, advice,
                      refs("dropout"))
    return v.passed("the policy's training forward is deterministic (no active dropout)", evidence)
