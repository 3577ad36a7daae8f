"""masking.*: which tokens the loss trains on: prompt, padding, EOS, environment tokens."""
from __future__ import annotations

import math

import numpy as np

from flatline.diagnostics.references import refs
from flatline.diagnostics.verdict import hypothesis

# Re-scoring a completion with the same weights in eval mode agrees to float noise (~1e-6 in float32, ~1e-2 in
# bf16); a logits/labels shift by one position gives differences of whole nats.
ALIGNMENT_TOL = 0.05
# A bf16 base re-scores with other batch shapes than it trained with and disagrees by up to ~0.2 nats on a token
# (measured: SmolLM2, dtype = "bfloat16"), while the off-by-one re-score of the same step is ~15 nats away. A step whose
# aligned gap is under 1/ALIGNMENT_SEPARATION of its off-by-one gap is precision noise, not a shift.
ALIGNMENT_SEPARATION = 20.0
# EOS must be in the loss for every finished completion; below 99% some finished rows lose their EOS.
EOS_IN_LOSS_MIN = 0.99


def _worst(h, name: str) -> float:
    return h.series(name).max()


@hypothesis("masking.prompt_in_loss", "are prompt tokens trained on?")
def prompt_in_loss(h, v):
    if not h.has("masks/prompt_frac"):
        return v.skipped("needs flatline's masks probe (masks/prompt_frac)")
    prompt = _worst(h, "masks/prompt_frac")
    evidence = {"prompt_frac_max": prompt}
    align = h.series("masks/alignment_max_diff")
    if len(align):
        evidence["alignment_max_diff"] = align.max()
    if prompt > 0:
        return v.fail(f"up to {prompt:.1%} of the loss tokens were prompt tokens", evidence,
                      "build the loss mask over completion positions only: zero every prompt column (a mask "
                      "copied from the attention mask, or labels without -100 on the prompt, put it in the loss); "
                      "the model is trained to predict its own prompt, and the completion's share of the loss shrinks", refs("env_mask"))
    dropout = h.series("policy/dropout_modules_active").finite()
    if len(dropout) and dropout.max() > 0 and len(align) and align.max() > ALIGNMENT_TOL:
        evidence["dropout_modules_active_max"] = dropout.max()  # train-mode noise, not a shift: see its own verdict
        return v.passed("no prompt token in the loss; the alignment re-score is not comparable with dropout on "
                        "(update.nondeterministic_forward)", evidence)
    shifted = h.series("masks/alignment_shifted_diff").by_step()
    if len(align) and align.max() > ALIGNMENT_TOL and _only_precision_noise(align, shifted):
        evidence["alignment_shifted_diff_at_max"] = float(shifted.get(align.steps[int(np.nanargmax(align.values))],
                                                                      math.nan))
        return v.passed(f"no prompt token in the loss; the re-score differs by {align.max():.3g} nats, under "
                        f"1/{ALIGNMENT_SEPARATION:g} of the off-by-one re-score's gap: precision noise (a bf16 base), "
                        "logits and labels aligned", evidence)
    if len(align) and align.max() > ALIGNMENT_TOL:
        return v.fail(f"re-scoring the sampled tokens differs from the trained logprobs by {align.max():.3g} nats: "
                      "the loss scores other tokens than the sampled ones (logits and labels shifted)", evidence,
                      "logits at position t predict token t+1: take logits[:, prompt_len - 1 : -1] for the completion")
    return v.passed("no prompt token in the loss" + (", logits and labels aligned" if len(align) else ""), evidence)


def _only_precision_noise(align, shifted: dict) -> bool:
    """Every step above ALIGNMENT_TOL re-scores far closer aligned than off by one (shifted: step -> off-by-one gap)."""
    above = [(s, a) for s, a in zip(align.steps, align.values) if a > ALIGNMENT_TOL]
    return all(math.isfinite(shifted.get(s, math.nan)) and shifted[s] > ALIGNMENT_SEPARATION * a for s, a in above)


def tokens_in_loss(h, v, metric: str, kind: str, prescription: str, references: list, needs: str = ""):
    """Fail when any step's loss tokens included `kind` tokens (metric: their share of the loss tokens)."""
    if not h.has(metric):
        return v.skipped(f"needs flatline's masks probe ({metric}){needs}")
    worst = _worst(h, metric)
    evidence = {f"{metric.split('/', 1)[1]}_max": worst}
    if worst > 0:
        return v.fail(f"up to {worst:.1%} of the loss tokens were {kind}", evidence, prescription, references)
    return v.passed(f"no {kind} in the loss", evidence)


@hypothesis("masking.padding_in_loss", "are pad tokens trained on?")
def padding_in_loss(h, v):
    return tokens_in_loss(h, v, "masks/pad_frac", "padding after the completion's end",
                          "cut the mask at the first EOS (flatline.trainer.algorithm.completion_mask), not at the pad id",
                          refs("eos"))


@hypothesis("masking.eos_excluded", "is the EOS token left out (pad == eos trap)?")
def eos_excluded(h, v):
    eos = h.series("masks/eos_in_loss_frac").finite()
    if not len(eos):
        finished = h.series("masks/finished_frac")
        if len(finished) and finished.max() == 0:
            return v.skipped("no completion finished with EOS, so its masking could not be checked "
                             "(see length.truncation)")
        return v.skipped("needs flatline's masks probe (masks/eos_in_loss_frac)")
    worst = float(eos.values.min())
    evidence = {"eos_in_loss_frac_min": worst, "eos_in_loss_frac_mean": eos.mean()}
    if worst < EOS_IN_LOSS_MIN:
        return v.fail(f"only {worst:.0%} of finished completions had their EOS token in the loss: the model is "
                      "never taught to stop", evidence,
                      "when pad == eos, build the mask from the first EOS position (inclusive), not from "
                      "completion_ids != pad_token_id", refs("eos"))
    return v.passed("every finished completion's EOS is in the loss", evidence)


@hypothesis("masking.env_tokens_in_loss", "are tool/environment tokens trained on (multi-turn)?")
def env_tokens_in_loss(h, v):
    return tokens_in_loss(h, v, "masks/env_frac", "environment (tool output) tokens",
                          "mask tool/environment turns out of the loss; keep the chat template prefix-preserving",
                          refs("env_mask"), needs=" and an environment mask")


# The loss must train on every token of the completion before its EOS; one a mask leaves out in every row (a mask
# starting a token late, or stopping one early) is a share of 1/length, a few percent or more.
COMPLETION_EXCLUDED_MAX = 0.001


@hypothesis("masking.completion_excluded", "are completion tokens before the EOS left out of the loss?")
def completion_excluded(h, v):
    excluded = h.series("masks/completion_excluded_frac").finite()
    if not len(excluded):
        return v.skipped("needs flatline's masks probe (masks/completion_excluded_frac)")
    evidence = {"completion_excluded_frac_median": excluded.median(), "completion_excluded_frac_max": excluded.max()}
    if excluded.median() > COMPLETION_EXCLUDED_MAX:
        return v.fail(f"{excluded.median():.1%} of the completions' own tokens before their EOS were left out of the "
                      "loss (median over steps): the mask starts late or stops early", evidence,
                      "build the mask from the completion's first token up to and including its first EOS "
                      "(flatline.trainer.algorithm.completion_mask); an off-by-one in a mask_fn or a collator that "
                      "shifts labels without shifting the mask does this", refs("eos"))
    return v.passed("every completion token up to the EOS is in the loss", evidence)
