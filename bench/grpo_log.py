"""Sample a simulated run's batches and log them as TRL's GRPOTrainer does (trainer_state.json log_history).

    spec, latent = healthy_run(seed=0, dynamic="logistic")     # bench/grpo_runs.py
    history = log_history(spec, latent)     # [{"step": 1, "reward": ..., ...}, ..., {"eval_reward": ...}, ...]
    write_trainer_state(run_dir, history, spec.steps, spec.eval_every)   # bench/trl_state.py

Every step draws `prompts` prompts (difficulty ~ N(0, difficulty_sd), a share unsolvable) and `generations`
completions each; a completion is correct with p = sigmoid(skill - difficulty), has a lognormal length, and is cut at
max_completion_length (a cut completion has no final answer: it scores 0 on every reward). The metrics are computed
from that batch as TRL 1.x computes them (trl/trainer/grpo_trainer.py, _generate_and_score_completions):
`reward` = mean of the weighted sum, `reward_std` = its std over the batch, `frac_reward_zero_std` = share of groups
whose rewards are all equal, `rewards/<f>/mean|std` per reward function (unweighted), `completions/*` from the
lengths; `loss` is the on-policy DAPO loss (-sum(A * length) / sum(length), A = (r - group mean) / (group std +
1e-4), TRL's default loss_type "dapo" and scale_rewards "group") plus beta * kl. Evaluation (every eval_every steps,
TRL's eval_steps) scores a fixed held-out set of eval_prompts prompts, num_generations completions each, logged
under TRL's eval_ names.
Leaves out: TRL's sampling/* metrics (vLLM importance sampling), tools/*, num_input_tokens_seen, per-process logs.
"""
from __future__ import annotations

import numpy as np

from bench.grpo_runs import PROMPT_LENGTH_SD, UNSOLVABLE, Latent, RunSpec, sigmoid
from bench.trl_state import closing_entry

ADVANTAGE_EPS = 1e-4  # TRL: advantages / (std + 1e-4)
PARTIAL_STEP = 0.05  # a partial-credit reward (token F1 and the like) lands on a grid
EVAL_SECONDS_PER_PROMPT = 0.5
NOISE = {"entropy": 0.03, "kl": 0.1, "clip": 0.25, "step_time": 0.05}  # log-sd of per-step measurement noise


def difficulties(spec: RunSpec, count: int, rng) -> np.ndarray:
    """Prompt difficulties in logits; a share spec.unsolvable of prompts are out of reach."""
    d = rng.normal(0.0, spec.difficulty_sd, count)
    return np.where(rng.random(count) < spec.unsolvable, UNSOLVABLE, d)


def sample_batch(spec: RunSpec, latent: Latent, t: int, difficulty: np.ndarray, skill: float, rng) -> dict:
    """One batch: per reward function its scores [B, G], their weighted sum, the lengths and the cut mask."""
    prompts, g = len(difficulty), spec.generations
    p = sigmoid(skill - difficulty)  # [B]
    typical = np.log(latent.length[t]) + rng.normal(0.0, PROMPT_LENGTH_SD, (prompts, 1))
    lengths = np.maximum(1.0, np.rint(np.exp(typical + rng.normal(0.0, spec.length_sd, (prompts, g)))))  # [B, G]
    correct = rng.random((prompts, g)) < p[:, None]
    formatted = rng.random((prompts, g)) < sigmoid(latent.format_skill[t])
    graded = np.clip(rng.beta(2.0, 2.0, (prompts, g)) * (0.5 + p[:, None]), 0, 1)
    partial = np.round(graded / PARTIAL_STEP) * PARTIAL_STEP
    same = rng.random(prompts) < latent.identical[t]  # groups of one completion repeated
    for values in (lengths, correct, formatted, partial):
        values[same] = values[same, :1]
    cut = lengths >= spec.max_completion_length
    lengths = np.minimum(lengths, spec.max_completion_length)
    scores = {"accuracy_reward": (correct & ~cut).astype(float), "format_reward": (formatted & ~cut).astype(float),
              "partial_credit_reward": np.where(cut, 0.0, np.where(correct, 1.0, partial))}
    rewards = {name: scores[name] for name, _ in spec.rewards}
    total = sum(weight * scores[name] for name, weight in spec.rewards)
    return {"rewards": rewards, "total": total, "lengths": lengths, "cut": cut}


def batch_metrics(batch: dict, prefix: str = "") -> dict:
    total, lengths, cut = batch["total"], batch["lengths"], batch["cut"]
    finished = lengths[~cut]
    out = {"reward": total.mean(), "reward_std": total.std(ddof=1),
           "frac_reward_zero_std": np.isclose(total.std(axis=1), 0.0).mean()}
    for name, scores in batch["rewards"].items():
        out[f"rewards/{name}/mean"], out[f"rewards/{name}/std"] = scores.mean(), scores.std(ddof=1)
    out.update({"completions/mean_length": lengths.mean(), "completions/min_length": lengths.min(),
                "completions/max_length": lengths.max(), "completions/clipped_ratio": cut.mean(),
                "completions/mean_terminated_length": finished.mean() if finished.size else 0.0,
                "completions/min_terminated_length": finished.min() if finished.size else 0.0,
                "completions/max_terminated_length": finished.max() if finished.size else 0.0})
    return {prefix + k: float(v) for k, v in out.items()}


def dapo_loss(total: np.ndarray, lengths: np.ndarray) -> float:
    """The on-policy policy-gradient loss value: -sum(A * tokens) / sum(tokens) (ratio 1, DAPO normalisation)."""
    centred = total - total.mean(axis=1, keepdims=True)  # [B, G]
    advantages = centred / (total.std(axis=1, ddof=1, keepdims=True) + ADVANTAGE_EPS)
    return float(-(advantages * lengths).sum() / lengths.sum())


def optimiser_metrics(spec: RunSpec, latent: Latent, t: int, batch: dict, flat_groups: float, rng) -> dict:
    """What the policy and the optimiser report: entropy, kl, the ratio clip, grad_norm (pre-clip), loss, lr."""
    out = {"entropy": float(latent.entropy[t] * np.exp(rng.normal(0.0, NOISE["entropy"])))}
    kl = float(latent.kl[t] * np.exp(rng.normal(0.0, NOISE["kl"]))) if spec.beta > 0 else 0.0
    if spec.beta > 0:  # TRL logs kl only with a reference model (beta != 0)
        out["kl"] = kl
    low = high = 0.0
    if spec.num_iterations > 1:  # on-policy the ratio is exactly 1: nothing is clipped
        low = latent.clip[t] / 2 * np.exp(rng.normal(0.0, NOISE["clip"]))
        high = latent.clip[t] / 2 * np.exp(rng.normal(0.0, NOISE["clip"]))
    out.update({"clip_ratio/low_mean": low, "clip_ratio/low_min": low * rng.uniform(0.0, 0.5),
                "clip_ratio/high_mean": high, "clip_ratio/high_max": high * rng.uniform(1.5, 4.0),
                "clip_ratio/region_mean": low + high})
    if flat_groups >= 1.0:  # no advantage anywhere: only the KL term pulls (nothing at all with beta = 0)
        grad = latent.grad[t] * spec.beta * kl
    else:
        grad = (latent.grad[t] * np.sqrt(1.0 - flat_groups) * latent.spikes[t]
                * np.exp(spec.grad_tail * rng.standard_t(5)))
    out["grad_norm"] = float(grad)
    out["loss"] = dapo_loss(batch["total"], batch["lengths"]) + spec.beta * kl
    out["learning_rate"] = float(latent.lr[t])
    return out


def log_history(spec: RunSpec, latent: Latent) -> list[dict]:
    """TRL log_history: a training entry per step (step = global_step from 1), an eval_ entry at every eval step."""
    rng = np.random.default_rng([spec.seed, 7])
    held_out = difficulties(spec, spec.eval_prompts, np.random.default_rng([spec.seed, 11]))
    history, tokens, seconds = [], 0.0, 0.0
    for t in range(spec.steps):
        step = t + 1
        difficulty = difficulties(spec, spec.prompts, rng) + latent.difficulty_shift[t]
        batch = sample_batch(spec, latent, t, difficulty, latent.skill[t], rng)
        metrics = batch_metrics(batch)
        tokens += batch["lengths"].sum() + spec.prompt_tokens * batch["lengths"].size
        step_time = (spec.seconds_per_step * (batch["lengths"].mean() / latent.length[0]) ** 0.7
                     * np.exp(rng.normal(0.0, NOISE["step_time"])))
        seconds += step_time
        entry = {"step": step, "epoch": round(step / spec.steps, 4), **metrics,
                 **optimiser_metrics(spec, latent, t, batch, metrics["frac_reward_zero_std"], rng),
                 "num_tokens": float(tokens), "step_time": float(step_time)}
        history.append(entry)
        if step % spec.eval_every == 0:
            history.append(eval_entry(spec, latent, t, held_out, rng))
    history.append(closing_entry(spec.steps, seconds))
    return history


def eval_entry(spec: RunSpec, latent: Latent, t: int, held_out: np.ndarray, rng) -> dict:
    batch = sample_batch(spec, latent, t, held_out, latent.eval_skill[t], rng)
    runtime = EVAL_SECONDS_PER_PROMPT * len(held_out)
    return {"step": t + 1, "epoch": round((t + 1) / spec.steps, 4),
            "eval_loss": dapo_loss(batch["total"], batch["lengths"]), **batch_metrics(batch, "eval_"), "eval_runtime": runtime,
            "eval_samples_per_second": len(held_out) / runtime, "eval_steps_per_second": 1.0 / runtime}
