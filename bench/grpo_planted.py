"""Pathologies planted at a change point in an otherwise healthy simulated run (bench/grpo_runs.py).

    spec, latent = planted_run(seed=2, pathology="entropy_collapse")
    spec.onset  # the first step of the pathology; before it the run is the healthy base dynamic

Each plant rewrites the policy's hidden state from the onset on, by its mechanism (what a real run with this
failure does), and leaves everything else to the healthy base: the base dynamic rotates with the seed over
PLANT_BASES, so one pathology is seen on several healthy shapes. Amounts are drawn from the ranges in each function.
v = steps since the onset, span = steps from the onset to the end.

Leaves out: pathologies present from step 1 (rldoctor's scenarios are that, see bench/diagnose_peers.py), two
pathologies at once, and recovery (every planted pathology lasts to the end of the run).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from bench.grpo_runs import ONSET, PLANTED_STEPS, Latent, RunSpec, healthy_run

# The healthy dynamics a pathology is planted into ("solved" and "noisy" runs have no room for a late change:
# one sits at the ceiling, the other's gain is below its noise).
PLANT_BASES = ("logistic", "linear", "staircase", "concise", "reasoning")
NO_CONCISE = ("logistic", "linear", "staircase", "reasoning")  # plants that lengthen completions need room to


def _after(latent: Latent, onset: int):
    steps = len(latent.skill)
    v = np.arange(steps, dtype=float) - onset
    return np.clip(v, 0.0, None), max(steps - onset, 1), np.arange(steps) >= onset


def _hold(series: np.ndarray, onset: int) -> np.ndarray:
    """The series frozen at its onset value from the onset on."""
    out = series.copy()
    out[onset:] = series[onset]
    return out


def entropy_collapse(spec, latent, onset, rng):
    """Token entropy falls to 0.5-3% of its onset value within 20-60 steps; groups fill with identical completions
    (the policy samples one answer) and learning stops (Cui et al. 2025; DAPO's clip-higher motivation)."""
    v, span, _ = _after(latent, onset)
    keeps = rng.uniform(0.005, 0.03)
    fade = np.exp(-v / (rng.uniform(0.05, 0.15) * span))
    entropy = np.where(v > 0, latent.entropy[onset] * (keeps + (1 - keeps) * fade), latent.entropy)
    identical = np.maximum(latent.identical, np.where(v > 0, 0.9 * (1 - fade), 0.0))
    return spec, replace(latent, entropy=entropy, identical=identical, skill=_hold(latent.skill, onset),
                         eval_skill=_hold(latent.eval_skill, onset))


def kl_blowup(spec, latent, onset, rng):
    """KL to the reference grows without bound (accelerating, to 3-10 nats/token by the end) while the reward still
    follows its healthy course: learning now, but the policy is leaving the reference's support."""
    v, span, _ = _after(latent, onset)
    return spec, replace(latent, kl=latent.kl + rng.uniform(3.0, 10.0) * (v / span) ** rng.uniform(1.5, 2.5))


def plateau(spec, latent, onset, rng):
    """The reward stops improving at the onset and stays there, groups still mixed (signal but no progress)."""
    return spec, replace(latent, skill=_hold(latent.skill, onset), eval_skill=_hold(latent.eval_skill, onset))


def length_growth(spec, latent, onset, rng):
    """Completions grow 3-4.5x longer and the training reward keeps climbing (the verifier pays length), while the
    held-out score stays where it was at the onset (length hacking)."""
    v, span, _ = _after(latent, onset)
    length = latent.length * (1 + (rng.uniform(3.0, 4.5) - 1) * (v / span) ** 1.2)
    limit = max(spec.max_completion_length, int(np.ceil(4 * length.max() / 64) * 64))  # long, but not truncated
    return replace(spec, max_completion_length=limit), replace(
        latent, length=length, skill=latent.skill + rng.uniform(0.5, 1.5) * v / span,
        eval_skill=_hold(latent.eval_skill, onset))


def eval_falls(spec, latent, onset, rng):
    """The training reward climbs faster while the held-out score falls by 1-2 logits (overfitting, or a verifier
    being gamed)."""
    v, span, _ = _after(latent, onset)
    return spec, replace(latent, skill=latent.skill + rng.uniform(0.8, 1.5) * v / span,
                         eval_skill=_hold(latent.eval_skill, onset) - rng.uniform(1.0, 2.0) * v / span)


def component_saturates(spec, latent, onset, rng):
    """The format reward, rarely met before the onset, saturates within 10-30 steps while correctness stays flat: the
    reward now moves only through the format (the run learns the format, not the task). The one plant that changes
    the healthy part too: there the format is not learned yet, where a healthy base learns it in its first steps."""
    v, _, after = _after(latent, onset)
    low, high = rng.uniform(-2.0, -1.0), rng.uniform(5.0, 7.0)
    format_skill = np.where(after, high + (low - high) * np.exp(-v / rng.uniform(10.0, 30.0)), low)
    return spec, replace(latent, format_skill=format_skill, skill=_hold(latent.skill, onset),
                         eval_skill=_hold(latent.eval_skill, onset))


def truncation_rising(spec, latent, onset, rng):
    """Completions grow until 50-80% are cut at max_completion_length; a cut completion has no answer and scores 0."""
    v, span, _ = _after(latent, onset)
    final = rng.uniform(1.0, 1.5) * spec.max_completion_length
    growth = final / latent.length[-1]
    return spec, replace(latent, length=latent.length * (1 + (growth - 1) * v / span))


def grad_spikes(spec, latent, onset, rng):
    """Gradient-norm spikes of 15-100x recur every 15-40 steps on average (an unstable update, not one odd batch)."""
    _, _, after = _after(latent, onset)
    hits = after & (rng.random(len(after)) < 1.0 / rng.uniform(15.0, 40.0))
    return spec, replace(latent, spikes=np.where(hits, rng.uniform(15.0, 100.0, len(after)), latent.spikes))


def zero_variance_takeover(spec, latent, onset, rng):
    """The data moves out of reach (a curriculum step too far, a broken answer key): within 10-30% of the rest of
    the run most groups are all wrong, so most groups carry no advantage (planted where the rewards are binary: a
    graded reward keeps all-wrong groups varied)."""
    v, span, _ = _after(latent, onset)
    ramp = np.minimum(v / (rng.uniform(0.1, 0.3) * span), 1.0)
    return spec, replace(latent, difficulty_shift=latent.difficulty_shift + rng.uniform(5.0, 8.0) * ramp)


def entropy_blowup(spec, latent, onset, rng):
    """Entropy grows without bound (6-12x by the end: the policy drifts to gibberish), the reward falls and the
    completions ramble longer."""
    v, span, _ = _after(latent, onset)
    entropy = latent.entropy[onset] * np.exp(np.log(rng.uniform(6.0, 12.0)) * v / span)
    drop = rng.uniform(1.0, 2.5) * v / span
    return spec, replace(latent, entropy=np.where(v > 0, entropy, latent.entropy),
                         skill=_hold(latent.skill, onset) - drop, eval_skill=_hold(latent.eval_skill, onset) - drop,
                         length=latent.length * (1 + rng.uniform(0.3, 1.0) * v / span))


# name -> (plant, the base dynamics it goes into, settings the healthy base must have)
PLANTS = {
    "entropy_collapse": (entropy_collapse, PLANT_BASES, {}),
    "kl_blowup": (kl_blowup, PLANT_BASES, {"beta": 0.04}),
    "plateau": (plateau, PLANT_BASES, {}),
    "length_growth": (length_growth, NO_CONCISE, {}),
    "eval_falls": (eval_falls, PLANT_BASES, {}),
    "component_saturates": (component_saturates, PLANT_BASES, {"need_format": True}),
    "truncation_rising": (truncation_rising, NO_CONCISE, {}),
    "grad_spikes": (grad_spikes, PLANT_BASES, {}),
    "zero_variance_takeover": (zero_variance_takeover, PLANT_BASES, {"binary": True}),
    "entropy_blowup": (entropy_blowup, PLANT_BASES, {}),
}


def planted_base(seed: int, pathology: str):
    """The healthy base run a pathology goes into, its onset, and the generator the plant draws from."""
    _, bases, needs = PLANTS[pathology]
    rng = np.random.default_rng([seed, 1000 + list(PLANTS).index(pathology)])
    steps = int(rng.integers(PLANTED_STEPS[0], PLANTED_STEPS[1] + 1))
    spec, latent = healthy_run(seed, bases[seed % len(bases)], steps=steps, **needs)
    return spec, latent, int(rng.uniform(*ONSET) * steps), rng


def planted_run(seed: int, pathology: str) -> tuple[RunSpec, Latent]:
    """A healthy base run (its dynamic chosen by the seed) with the pathology from spec.onset to the end."""
    spec, latent, onset, rng = planted_base(seed, pathology)
    spec, latent = PLANTS[pathology][0](spec, latent, onset, rng)
    return replace(spec, name=f"{pathology}@{spec.dynamic}-s{seed}", onset=onset, pathology=pathology), latent
