"""sync.*: does the sampler score tokens like the trainer (same weights), and do importance weights hold up."""
from __future__ import annotations

import math

import numpy as np

from flatline.diagnostics.hypotheses.common import progress, sustained_from
from flatline.diagnostics.references import refs
from flatline.diagnostics.verdict import hypothesis

# verl docs/algo/rollout_corr.md: training/rollout_probs_diff_mean below 0.005 is fine, above 0.01 a problem.
PROBS_DIFF_OK = 0.005
PROBS_DIFF_BAD = 0.01
# In log-prob units (TRL's sampling/sampling_logp_difference/mean): probability differences vanish for tokens of
# small probability (a flat distribution over a 49k vocabulary), log-prob differences do not. A bf16 sampler against
# an fp32 trainer stays near 0.01 nats per token; 0.05 is five times that, 0.02 worth a look.
LOGP_DIFF_BAD = 0.05
LOGP_DIFF_OK = 0.02
# The same lines for a per-token KL(sampler || trainer) (prime-rl's mismatch_kl, verl's rollout_corr/k3_kl): for a
# small, roughly normal log-prob difference d, KL ~ E[d^2]/2 and E|d| = sqrt(2/pi) * sd(d), so KL = (pi/4) * E|d|^2.
# The dense models of the mismatch literature sit at 1e-5 to 1e-3 (zhaochenyang20/Awesome-ML-SYS-Tutorial
# rlhf/mismatch): below the fail line.
KL_BAD = math.pi / 4 * LOGP_DIFF_BAD ** 2
KL_OK = math.pi / 4 * LOGP_DIFF_OK ** 2
# verl rollout_corr: effective sample size below 0.3 of the batch, or mean IS weight outside [0.5, 2], is unhealthy.
ESS_MIN = 0.3
IS_MEAN_RANGE = (0.5, 2.0)


def _placeholder(series) -> bool:
    """An importance ratio exp(trainer logp - sampler logp) is above 0 on every token, so a ratio column that reads
    exactly 0 on every logged row is no measurement: TRL and Unsloth log their sampling/ columns as 0 when the
    sampler's logprobs are not compared (no vLLM importance sampling correction)."""
    return len(series) > 0 and bool(np.all(series.values == 0))


def _measured(*candidates):
    """(the first candidate series with a finite value that is not a placeholder, else an empty series; the names of
    the candidates read as placeholders (_placeholder))."""
    unlogged = []
    for series in candidates:
        finite = series.finite()
        if _placeholder(finite):
            unlogged.append(series.name)
        elif len(finite):
            return finite, unlogged
    return candidates[0].finite().head(0), unlogged


def _placeholder_reason(unlogged) -> str:
    return (f"{', '.join(unlogged)} reads exactly 0 on every logged row: an importance ratio exp(trainer logp - "
            "sampler logp) is above 0 on every token, so the column is a placeholder (the trainer logs 0 when it "
            "does not compare the sampler's logprobs), not a measurement")


def _date(evidence: dict, *checks) -> None:
    """onset_step: the earliest step from which one of the (series, is_bad) checks holds (sustained_from). A mismatch
    present from the first row dates at the first step; one that appeared later is dated where it did, so that the
    headline can tell a sampler fault that came first from one that followed the policy into junk."""
    steps = [sustained_from(series, bad) for series, bad in checks if len(series)]
    steps = [s for s in steps if math.isfinite(s)]
    if steps:
        evidence["onset_step"] = min(steps)


@hypothesis("sync.sampler_mismatch", "does the sampler score tokens like the trainer does (stale or wrong weights)?")
def sampler_mismatch(h, v):
    probs = h.series("sync/probs_diff_mean").finite()
    logp = h.series("sync/logprob_diff_mean").finite()
    unlogged = []
    if not len(logp):
        logp = h.series("sampling/sampling_logp_difference/mean").finite()
        ratio = h.series("sampling/importance_sampling_ratio/mean").finite()
        if _placeholder(logp) and _placeholder(ratio):  # exp(0) = 1, not 0: neither column was measured
            unlogged = ["sampling/sampling_logp_difference/mean", "sampling/importance_sampling_ratio/mean"]
            logp = logp.head(0)
    kl = h.series("sync/mismatch_kl").finite()
    use_kl = not len(probs) and not len(logp) and len(kl) > 0  # only the KL was logged (prime-rl, verl rollout_corr)
    if not len(probs) and not len(logp) and not use_kl and unlogged:
        return v.skipped(f"{' and '.join(unlogged)} read exactly 0 on every logged row: a log-prob difference of 0 "
                         "gives a ratio of 1, not 0, so both are placeholders (the trainer logs 0 when it does not "
                         "compare the sampler's logprobs), not measurements")
    if not len(probs) and not len(logp) and not use_kl:
        return v.skipped("needs sampler logprobs: flatline's sync probe (sync/probs_diff_mean), TRL's "
                         "sampling/sampling_logp_difference/mean, verl's rollout_corr or prime-rl's mismatch_kl")
    evidence = {}
    if use_kl:
        evidence["mismatch_kl_median"] = kl.median()
    if len(probs):
        evidence["probs_diff_mean_median"] = probs.median()
    if len(logp):
        evidence["logprob_diff_mean_median"] = logp.median()
        trend = logp.trend()
        evidence["logprob_diff_kendall_tau"] = trend.tau
    bad = ((len(probs) and probs.median() > PROBS_DIFF_BAD) or (len(logp) and logp.median() > LOGP_DIFF_BAD)
           or (use_kl and kl.median() > KL_BAD))
    watch = ((len(probs) and probs.median() > PROBS_DIFF_OK) or (len(logp) and logp.median() > LOGP_DIFF_OK)
             or (use_kl and kl.median() > KL_OK))
    prescription = ("check that trained weights reach the sampler after every step (LoRA adapters sent to vLLM with a "
                    "new lora_int_id, or merged weights reloaded), reset the sampler's prefix cache after a sync, and "
                    "compare sampler and trainer dtypes")
    if bad:
        _date(evidence, (probs, lambda x: x > PROBS_DIFF_BAD), (logp, lambda x: x > LOGP_DIFF_BAD),
              (kl if use_kl else kl.head(0), lambda x: x > KL_BAD))
        growing = (len(logp) and logp.trend().rising) or (use_kl and kl.trend().rising)
        reason = ("the sampler's token probabilities differ from the trainer's" +
                  (", and the gap grows with training, as it does when the sampler keeps old weights" if growing else ""))
        # a run that learns through the gap is not stopped by it (yet): mixture-of-experts routing and sampling
        # temperature widen it on healthy runs; it is the collapse the gap leads to that ends runs
        p = progress(h)
        if p is not None and (p.rising or p.learning_now):
            evidence.update(p.evidence(trend=False))
            return v.warn(reason + f", while the reward rose ({p.first:.3g} -> {p.last:.3g}): the off-policy gap "
                          "grows the importance weights' variance until they give out", evidence, prescription,
                          refs("sync_lora", "sync_sleep", "verl_rollout"))
        return v.fail(reason, evidence, prescription, refs("sync_lora", "sync_sleep", "verl_rollout"))
    if watch:
        return v.inconclusive("sampler and trainer differ a little: above what verl calls fine, below its problem "
                              "line",
                              evidence, "compare dtypes (bf16 sampler vs fp32 trainer) and watch the trend",
                              refs("verl_rollout"))
    return v.passed("sampler and trainer score the sampled tokens alike", evidence, refs("verl_rollout"))


@hypothesis("sync.importance_weights", "do importance weights collapse (low effective sample size)?")
def importance_weights(h, v):
    ess = h.series("sync/ess").finite()
    mean, unlogged = _measured(h.series("sync/is_weight_mean"), h.series("sampling/importance_sampling_ratio/mean"))
    if not len(ess) and not len(mean) and unlogged:
        return v.skipped(_placeholder_reason(unlogged))
    if not len(ess) and not len(mean):
        return v.skipped("needs importance weights: flatline's sync probe (sync/ess, sync/is_weight_mean) or TRL's "
                         "sampling/importance_sampling_ratio/mean")
    evidence = {}
    findings = []
    if len(ess):
        evidence["ess_median"] = ess.median()
        if ess.median() < ESS_MIN:
            findings.append(f"the effective sample size is {ess.median():.2f} of the batch")
    if len(mean):
        evidence["is_weight_mean_median"] = mean.median()
        if not IS_MEAN_RANGE[0] <= mean.median() <= IS_MEAN_RANGE[1]:
            findings.append(f"the mean importance weight is {mean.median():.3g}")
    if findings:
        _date(evidence, (ess, lambda x: x < ESS_MIN),
              (mean, lambda x: not IS_MEAN_RANGE[0] <= x <= IS_MEAN_RANGE[1]))
        return v.fail("; ".join(findings) + ": a few sequences carry the whole gradient, or the correction masks "
                      "most of it away", evidence,
                      "fix the sampler/trainer mismatch first (sync.sampler_mismatch); with top_p < 1 the ratio "
                      "drifts per token, so use token-level truncated IS rather than sequence masks",
                      refs("is_cancel", "verl_rollout"))
    return v.passed("importance weights near 1 with a healthy effective sample size", evidence, refs("verl_rollout"))


# E_q[p/q] = 1 whenever the sampler's distribution q covers the trainer's p (docs/field-2026-11.md 1b, tplane): the mean
# token importance ratio can fall below 1 only when the sampler drew from a truncated distribution (top-p, top-k) that
# the trainer does not apply. Over thousands of tokens per step its sampling noise is well under 1%; a median below
# 0.97 leaves 3% of the trainer's mass outside what the sampler could draw.
IS_MEAN_LOW = 0.97
# Truncation renormalises the sampler's probabilities upward on the tokens it keeps: the ratio p/q on a sampled token is
# the kept mass at that position, at most 1, on every token. A sampler with other weights gives ratios above 1 as well,
# and its mean falls below 1 only because a heavy-tailed mean usually undershoots (sync.sampler_mismatch's finding).
# 1.1 leaves room for a bf16 sampler's per-token rounding (log-prob differences of a few hundredths); the step maxima are
# read at their 90th percentile over the run, since a policy that has moved away from a stale sampler can also give
# ratios below 1 on every token for a while.
IS_MAX_TRUNCATED = 1.1
IS_MAX_QUANTILE = 90


# sync/log_ratio_mean, the mean of d = trainer - sampler logprob over loss tokens, is -KL(sampler || trainer) <= 0 in
# expectation whenever the sampler draws from the distribution whose logprobs it reports (stale weights, bf16 precision,
# top-p truncation all give d <= 0 on average); only a sampler reporting another distribution's logprobs than it samples
# from (raw logprobs at temperature < 1: +KL(p_T || p_1), tenths of a nat at T = 0.7) pushes it above 0. 0.01 nats is
# several standard errors of a step's mean under bf16 noise (per-token |d| ~ 0.01-0.02 over hundreds of tokens).
LOG_RATIO_HIGH = 0.01


@hypothesis("sync.sampling_semantics", "does the sampler apply sampling settings the trainer does not (mean IS ratio < 1)?")
def sampling_semantics(h, v):
    mean, unlogged = _measured(h.series("sync/is_weight_mean"), h.series("sampling/importance_sampling_ratio/mean"))
    source = mean.name
    if not len(mean) and unlogged:
        return v.skipped(_placeholder_reason(unlogged))
    if not len(mean):
        return v.skipped("needs importance ratios: flatline's sync probe (sync/is_weight_mean) or TRL's "
                         "sampling/importance_sampling_ratio/mean")
    high, _ = _measured(h.series("sync/is_weight_max"), h.series("sampling/importance_sampling_ratio/max"))
    median = mean.median()
    evidence = {"is_ratio_mean_median": median, "source": source}
    high_ratio = float(np.percentile(high.values, IS_MAX_QUANTILE)) if len(high) else math.nan
    if len(high):
        evidence["is_ratio_max_p90"] = high_ratio
    for key in ("top_p", "top_k", "temperature"):
        if h.setting(key) is not None:
            evidence[key] = h.setting(key)
    log_ratio = h.series("sync/log_ratio_mean").finite()
    if len(log_ratio):
        evidence["log_ratio_mean_median"] = log_ratio.median()
        slope = h.series("sync/logprob_slope").finite()
        if len(slope):
            evidence["logprob_slope_median"] = slope.median()
        if log_ratio.median() > LOG_RATIO_HIGH:
            return v.fail(f"the trainer's log-probability exceeds the sampler's by {log_ratio.median():.3g} nats per "
                          "token on average (median over steps): tokens drawn from the distribution whose logprobs the "
                          "sampler reports would give a mean <= 0 whatever the weights, so the sampler reports logprobs "
                          "of another distribution than it samples from (before temperature, or before its logits "
                          "processors)", evidence,
                          "return processed logprobs from the sampler (vLLM: logprobs_mode = processed_logprobs; "
                          "flatline: vllm_logprobs = \"processed\"), or apply the same temperature on both sides",
                          refs("is_mean"))
    if median >= IS_MEAN_LOW:
        return v.passed(f"the mean importance ratio is {median:.3g}: the sampler draws from what the trainer scores",
                        evidence, refs("is_mean"))
    if len(high) and high_ratio > IS_MAX_TRUNCATED:
        return v.passed(f"the mean importance ratio is {median:.3g}, but ratios reach {high_ratio:.3g}: the sampler's "
                        "weights differ from the trainer's (sync.sampler_mismatch), which is not a sampling setting",
                        evidence, refs("is_mean"))
    prescription = ("sample with top_p = 1 and top_k = 0 (or -1 in vLLM), or apply the same truncation and "
                    "renormalisation in the trainer's log-probabilities; with vLLM, ask for processed logprobs")
    reason = (f"the mean importance ratio is {median:.3g}: {1 - median:.0%} of the trainer's probability mass lies "
              "where the sampler could not draw, so the sampler truncates its distribution (top-p / top-k) and the "
              "trainer scores the untruncated one")
    if not len(high):
        return v.inconclusive(reason + " (or its weights differ: the log has no maximum ratio to tell which)", evidence,
                              prescription, refs("is_mean"))
    return v.fail(reason, evidence, prescription, refs("is_mean", "is_cancel"))


# sync.stale_weights: the share of the policy's movement since its start that the sampler shows (sync/tracking, from
# flatline.probes.staleness) is 1 for a synced sampler and 0 for one that still serves the initial weights. A step is
# read when its standard error is below TRACKING_SE_MAX (the policy has moved well beyond the sampler's precision
# noise); the median over such steps below TRACKING_LOW means the sampler shows less than half of what training did.
TRACKING_SE_MAX = 0.15
# ... and the policy has moved at least this far (mean |trainer - initial| nats per token): 100 times the float32 noise
# between two forwards of the same weights (~1e-5), so step 1, where the policy has not moved, is never read.
POLICY_DRIFT_MIN = 1e-3
# ... and beyond the forward's own noise, read from the first step: its trainer logprobs come from the starting weights
# (a LoRA adapter is the identity before the first optimizer step), so its drift is what two forwards of the same
# weights disagree by: ~1e-5 nats in float32, a few hundredths with a bf16 base (measured 0.035 on SmolLM2: batch
# shapes change the rounding). Below DRIFT_OVER_NOISE times that, tracking correlates noise with noise.
DRIFT_OVER_NOISE = 3.0
TRACKING_LOW = 0.5
TRACKING_MIN_STEPS = 3
# A sampler that syncs every k steps serves weights up to k - 1 steps old (sampler/weights_lag). It is stale when its
# log-prob gap on lagged steps is above what verl and TRL call a problem (LOGP_DIFF_BAD) and LAG_RATIO times the gap
# right after a sync: the lag, not precision, opens the gap.
LAG_RATIO = 3.0
# sync/merged_total_kept (flatline.trainer.samplers.merge_precision): after a merged sync into a bf16/fp16 engine, the
# share of the update trained since the start that the engine's weights show (a projection, like sync/tracking). It is
# measured on the weights themselves, so it reads where sync/tracking cannot: updates too small to move the logprobs
# beyond the engine's precision noise. Below MERGED_KEPT_LOW (as TRACKING_LOW: less than half of what training did,
# median over the syncs) the engine serves (nearly) the starting weights. Above 1 is fine: a base off the bf16 grid
# turns small updates into whole-unit jumps, more movement along the update than it asked for, plus noise.
MERGED_KEPT_LOW = 0.5


@hypothesis("sync.stale_weights", "does the sampler serve old weights (the initial or a previous policy) instead of the "
            "current one?")
def stale_weights(h, v):
    tracking, se = h.series("sync/tracking"), h.series("sync/tracking_se")
    drift = h.series("sync/policy_drift")
    lag, gap = h.series("sampler/weights_lag"), h.series("sync/logprob_diff_mean")
    noise = _drift_noise_floor(drift)
    moved_enough = max(POLICY_DRIFT_MIN, DRIFT_OVER_NOISE * noise)
    readable = [(t, e) for t, e, d in zip(tracking.values, se.values, drift.values)
                if math.isfinite(t) and 0 <= e <= TRACKING_SE_MAX and d >= moved_enough]
    lagged = _gap_by_lag(lag, gap)
    merged = h.series("sync/merged_total_kept").finite()
    if not readable and lagged is None and not len(tracking.finite()) and not len(merged):
        return v.skipped("needs sync/tracking (flatline's full probes: the sampler's logprobs against the initial "
                         "policy's), sampler/weights_lag with sync/logprob_diff_mean, or sync/merged_total_kept (a "
                         "merged sync into a bf16/fp16 vLLM engine)")
    log_ratio = h.series("sync/log_ratio_mean").finite()
    if len(log_ratio) and log_ratio.median() > LOG_RATIO_HIGH:  # tracking compares logprobs at one temperature
        return v.inconclusive("the sampler reports logprobs of another distribution than the trainer scores "
                              "(sync.sampling_semantics), so which weights it serves cannot be read from them",
                              {"log_ratio_mean_median": log_ratio.median()}, "fix sync.sampling_semantics first")
    evidence, findings = {}, []
    prescription = ("make every sync reach the engine: a new LoRARequest id per adapter (vLLM caches by id), weights "
                    "reloaded under the engine's parameter names, the prefix cache reset after a sync, sync_every = 1 "
                    "unless the off-policy lag is corrected for")
    if len(readable) >= TRACKING_MIN_STEPS:
        median = float(np.median([t for t, _ in readable]))
        evidence.update(tracking_median=median, tracking_steps=len(readable),
                        tracking_se_median=float(np.median([e for _, e in readable])))
        evidence["policy_drift_median"] = drift.finite().median()
        if median < TRACKING_LOW:
            findings.append(f"the sampler shows {median:.0%} of the policy's movement since its start "
                            f"(median over {len(readable)} steps): it serves the initial weights or an early policy, not the "
                            "trained ones")
    if lagged is not None:
        at_sync, behind, max_lag = lagged
        evidence.update(logprob_diff_at_sync=at_sync, logprob_diff_lagged=behind, max_weights_lag=max_lag)
        if behind > LOGP_DIFF_BAD and behind > LAG_RATIO * at_sync:
            findings.append(f"on steps that sample with weights up to {max_lag} steps old the log-prob gap is "
                            f"{behind:.3g} nats per token against {at_sync:.3g} right after a sync")
    if noise > POLICY_DRIFT_MIN / DRIFT_OVER_NOISE:
        evidence["policy_drift_noise_floor"] = noise
    rounded_away = _merged_finding(h, merged, evidence)
    if rounded_away:
        findings.append(rounded_away)
        prescription = ("keep the merged weights in float32 in the engine (vllm_dtype = \"float32\"), or sync the "
                        "adapter instead of merging it (vllm_sync_mode = \"lora\": the engine applies A and B on their "
                        "own scale, so no delta is added to a large weight); a larger learning_rate only shrinks the "
                        f"share rounded away. Otherwise: {prescription}")
    if findings:
        return v.fail("; ".join(findings), evidence, prescription,
                      refs("sync_lora", "sync_sleep", "verl_rollout", *(("bf16_merge",) if rounded_away else ())))
    if not evidence.keys() - {"policy_drift_noise_floor"}:
        return v.inconclusive("the policy has not moved far enough beyond the sampler's precision noise to tell "
                              "which weights the sampler serves", evidence, "run more steps with the full probes")
    return v.passed("the sampler follows the trained policy", evidence, refs("verl_rollout"))


def _drift_noise_floor(drift) -> float:
    """sync/policy_drift at the run's first step (the policy has not moved yet), else 0."""
    finite = drift.finite()
    return float(finite.values[0]) if len(finite) and finite.steps[0] == 1 else 0.0


def _merged_finding(h, kept, evidence: dict) -> str:
    """Adds the merged sync's numbers to evidence; the finding when the engine kept under MERGED_KEPT_LOW of it."""
    if not len(kept):
        return ""
    median, last = kept.median(), float(kept.values[-1])
    evidence.update(merged_total_kept_median=median, merged_total_kept_last=last, merged_syncs=len(kept))
    changed = h.series("sync/merged_total_changed").finite()
    if len(changed):
        evidence["merged_total_changed_median"] = changed.median()
    step = h.series("sync/merged_update_kept").finite()
    if len(step):
        evidence["merged_update_kept_median"] = step.median()
    if median >= MERGED_KEPT_LOW:
        return ""
    dtype = h.setting("vllm_dtype")
    dtype = h.setting("dtype") if dtype == "auto" else dtype
    dtype = dtype or "narrow-dtype"
    touched = f"; {changed.median():.1%} of the updated weights moved at all" if len(changed) else ""
    return (f"the merged sync into a {dtype} engine keeps {median:.0%} of the update trained since the start (median "
            f"over {len(kept)} syncs, {last:.0%} at the last{touched}): deltas below half a unit of W round back to W, "
            "so the engine serves (nearly) the starting weights")


def _gap_by_lag(lag, gap):
    """(median gap at lag 0, median gap at lag >= 1, max lag) over steps with both, or None without lagged steps."""
    steps = lag.by_step()
    pairs = [(steps[s], g) for s, g in zip(gap.steps, gap.values) if s in steps and math.isfinite(g)]
    synced = [g for l, g in pairs if l == 0]
    behind = [g for l, g in pairs if l >= 1]
    if not synced or not behind:
        return None
    return float(np.median(synced)), float(np.median(behind)), int(max(l for l, _ in pairs))
