"""What a simulated GRPO run is: its settings (RunSpec) and the policy's hidden state at every step (Latent),
for healthy runs of several kinds and for pathologies planted at a change point. bench/grpo_log.py samples batches
from them and writes the metrics TRL logs.

    spec, latent = healthy_run(seed=3, dynamic="staircase")
    spec, latent = planted_run(seed=3, pathology="kl_blowup")   # healthy until spec.onset, then the pathology

The latent state is the mechanism, not the curve: `skill` is the logit of a correct answer on a prompt of
difficulty 0, and each step's reward comes from sampled prompts and completions (grpo_log.py), so the reward's
noise, the share of zero-variance groups, the truncation share and the loss follow from the batch as they do in a
real run. The settings' ranges are named constants; each healthy dynamic's shape is drawn inside its function,
whose docstring says which real run it stands for.

Leaves out: per-token data, multi-turn/tool rollouts, sampler/trainer mismatch (sampling/* metrics), and any
coupling between steps other than through these trajectories (no optimiser is simulated).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# -- ranges a healthy run's settings are drawn from ------------------------------------------------------------------
STEPS = (500, 1500)  # run length; 20 runs average ~1000 steps, over the 10,000 healthy steps the bench needs
PLANTED_STEPS = (600, 900)
ONSET = (0.35, 0.5)  # where a planted pathology starts, as a share of the run
PROMPTS = (4, 8, 16, 32)  # prompts per step (TRL: per_device_train_batch_size x devices / num_generations)
GENERATIONS = (4, 8, 16)  # num_generations
MAX_COMPLETIONS = 256  # prompts x generations per step at most (a single 8-GPU node's usual batch)
FORMAT_WEIGHTS = (0.1, 0.2, 0.5, 1.0)  # TRL reward_weights of a format reward next to correctness (1.0)
PARTIAL_WEIGHTS = (0.5, 1.0)
DIFFICULTY_SD = (1.0, 2.0)  # spread of prompt difficulty (logits): pass rates from ~0.1 to ~0.9 across prompts
UNSOLVABLE = 10.0  # difficulty of a prompt out of the model's reach: p = sigmoid(skill - 10) ~ 0
LENGTH_SD = (0.35, 0.5)  # log-sd of completion lengths in a batch (lognormal, as sampled lengths are)
PROMPT_LENGTH_SD = 0.25  # log-sd of the per-prompt typical length
EVAL_EVERY = (10, 20, 25, 50, 100)  # TRL eval_steps
EVAL_PROMPTS = (8, 16, 32, 64, 128, 256)  # held-out prompts: 8 is "eval on a few prompts" (noisy, quantised)
LEARNING_RATES = (1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5)  # full fine-tuning at the low end, LoRA at the high end
SCHEDULES = ("constant", "cosine", "linear", "constant_with_warmup")  # transformers lr_scheduler_type
BETA = 0.04  # TRL's former default KL coefficient (its default is now 0.0: no reference model, no kl logged)
GRAD_NORM = (0.05, 2.0)  # typical pre-clip gradient norm, log-uniform (LoRA runs sit low, full fine-tuning high)
GRAD_TAIL = (0.12, 0.25)  # scale of the Student-t (df 5) noise on log grad_norm: heavy-tailed, rarely 5x
GRAD_TAIL_DF = 5
ISOLATED_SPIKES = ((0, 0.5), (1, 0.3), (2, 0.2))  # (count, probability): a healthy run has at most two ...
SPIKE_FACTOR = (6.0, 25.0)  # ... single-step spikes of this size (a long or odd batch), at least SPIKE_GAP apart
SPIKE_GAP = 100
IDENTICAL_GROUPS = 0.02  # share of groups whose completions are all the same (short, forced answers)
ENTROPY_START = (0.3, 1.5)  # mean token entropy at the start, nats (Qwen-class instruct models at T = 1)
ENTROPY_KEEPS = (0.25, 0.8)  # a healthy decay keeps at least a quarter of it (Cui et al. 2025: entropy falls, then
#                            levels off while the reward rises; a collapse ends near 0)
KL_LEVEL = (0.01, 0.4)  # where per-token KL to the reference levels off with beta = 0.04, log-uniform
CLIP_LEVEL = (0.003, 0.05)  # share of tokens outside the ratio clip with num_iterations = 2 (PPO: 0.1-0.2 is normal)
CREEP = (0.3, 0.8)  # logits a healthy run still gains over its length after the main rise (see _creep)


@dataclass(frozen=True)
class RunSpec:
    """A run's settings: what TRL's GRPOConfig and the data set fix before the first step."""

    name: str
    seed: int
    dynamic: str
    steps: int
    prompts: int
    generations: int
    rewards: tuple  # ((reward function name, weight), ...), TRL's reward_funcs and reward_weights
    beta: float
    num_iterations: int
    max_completion_length: int
    eval_every: int
    eval_prompts: int
    difficulty_sd: float
    unsolvable: float  # share of prompts no completion solves: the reward's ceiling sits below the maximum
    length_sd: float
    prompt_tokens: int
    seconds_per_step: float
    grad_tail: float  # scale of the Student-t noise on log grad_norm
    onset: int = -1  # first step of a planted pathology (-1: none)
    pathology: str = ""


@dataclass(frozen=True)
class Latent:
    """The policy at each step [steps]: what the batch sampler turns into metrics."""

    skill: np.ndarray  # logit of a correct answer on a train prompt of difficulty 0
    eval_skill: np.ndarray  # the same on held-out prompts
    format_skill: np.ndarray  # logit that a completion has the format the format reward checks
    identical: np.ndarray  # probability that a group's completions are all the same completion
    difficulty_shift: np.ndarray  # added to every train prompt's difficulty (the data moving out of reach)
    length: np.ndarray  # median completion length in tokens, before the cut at max_completion_length
    entropy: np.ndarray  # mean token entropy, nats
    kl: np.ndarray  # per-token KL to the reference (unused when beta = 0)
    clip: np.ndarray  # share of tokens outside the ratio clip (0 on-policy, num_iterations = 1)
    grad: np.ndarray  # typical pre-clip gradient norm
    spikes: np.ndarray  # factor on the gradient norm: 1, except at spikes
    lr: np.ndarray  # learning rate


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _loguniform(rng, lo, hi) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


# -- healthy dynamics: the skill curve (logits over u = step / steps in [0, 1]) --------------------------------------


def _creep(u, rng):
    """A healthy run keeps improving a little while its groups still disagree (there is still a gradient): after
    the main rise the skill creeps on, and the reward levels off only as prompts end up all solved or out of reach."""
    return rng.uniform(*CREEP) * u


def skill_logistic(u, rng):
    """Rise, then saturation below the ceiling (prompts out of reach stay unsolved): the common GSM8K/MATH curve."""
    rise = rng.uniform(2.5, 4.5) * sigmoid((u - rng.uniform(0.25, 0.55)) / rng.uniform(0.06, 0.12))
    return rng.uniform(-2.0, -0.5) + rise + _creep(u, rng)


def skill_linear(u, rng):
    """A slow, steady gain over the whole run (small learning rate, hard data): no saturation in sight."""
    return rng.uniform(-2.0, 0.0) + rng.uniform(0.6, 1.5) * u


def skill_staircase(u, rng):
    """Jumps: the policy finds a strategy (or the answer format) at a few points and holds it (grokking-like)."""
    jumps = int(rng.integers(2, 4))
    where = np.sort(rng.uniform(0.1, 0.85, jumps))
    heights = rng.dirichlet(np.ones(jumps)) * rng.uniform(2.0, 3.5)
    widths = rng.uniform(0.005, 0.02, jumps)
    steps = sum(h * sigmoid((u - w) / s) for h, w, s in zip(heights, where, widths))
    return rng.uniform(-2.5, -1.0) + steps + _creep(u, rng)


def skill_solved(u, rng):
    """A fast rise to the task's maximum: every prompt solvable, then most groups all correct (solved, not stuck)."""
    rise = rng.uniform(5.0, 7.0) * sigmoid((u - rng.uniform(0.05, 0.2)) / rng.uniform(0.02, 0.05))
    return rng.uniform(-1.0, 0.5) + rise


def skill_noisy(u, rng):
    """A real but small gain under heavy batch noise (2-4 prompts a step): the gain is below one step's noise."""
    return rng.uniform(-1.5, 0.0) + rng.uniform(0.4, 0.7) * u


def skill_concise(u, rng):
    """flatline's own arithmetic run (reports/examples/default-arithmetic): answers get shorter as it learns."""
    rise = rng.uniform(1.5, 3.0) * sigmoid((u - rng.uniform(0.2, 0.5)) / rng.uniform(0.08, 0.15))
    return rng.uniform(-1.0, 0.0) + rise + _creep(u, rng)


def skill_reasoning(u, rng):
    """Longer reasoning that pays (R1-Zero-like): the completion length grows with a held-out gain."""
    rise = rng.uniform(2.5, 3.5) * sigmoid((u - rng.uniform(0.3, 0.5)) / rng.uniform(0.08, 0.15))
    return rng.uniform(-2.0, -1.0) + rise + _creep(u, rng)


@dataclass(frozen=True)
class Dynamic:
    skill: object  # (u, rng) -> logits [steps]
    lengths: tuple  # length modes this dynamic may draw
    unsolvable: tuple  # range of the share of unsolvable prompts
    prompts: tuple = PROMPTS
    generations: tuple = GENERATIONS


DYNAMICS = {
    "logistic": Dynamic(skill_logistic, ("flat", "shrink", "grow"), (0.1, 0.35)),
    "linear": Dynamic(skill_linear, ("flat", "shrink"), (0.0, 0.3)),
    "staircase": Dynamic(skill_staircase, ("flat", "shrink", "grow"), (0.0, 0.25)),
    "solved": Dynamic(skill_solved, ("flat", "shrink"), (0.0, 0.0)),
    "noisy": Dynamic(skill_noisy, ("flat",), (0.0, 0.2), prompts=(2, 3, 4), generations=(4, 8)),
    "concise": Dynamic(skill_concise, ("concise",), (0.0, 0.1)),
    "reasoning": Dynamic(skill_reasoning, ("reasoning",), (0.0, 0.2)),
}
# Length modes: (start median tokens, end/start ratio) ranges. The length moves with learning (see _length).
LENGTHS = {
    "flat": ((60, 600), (0.85, 1.15)),
    "shrink": ((60, 600), (0.6, 0.85)),  # answers get to the point as the policy learns
    "grow": ((60, 400), (1.2, 1.6)),  # moderate growth, only where the skill gain is large (held-out gain)
    "concise": ((28, 36), (0.33, 0.45)),  # the arithmetic run: 24.5 -> 12.5 mean tokens, truncated 0.56 -> 0.09
    "reasoning": ((150, 500), (1.4, 2.2)),
}
CONCISE_LIMIT = 32  # the arithmetic run's max_completion_length
CONCISE_LENGTH_SD = 0.6


# -- the trajectories ------------------------------------------------------------------------------------------------


def _progress(skill: np.ndarray) -> np.ndarray:
    """How far the run has learned, 0 at the start and 1 at its best skill: length and entropy move with it."""
    gain = skill - skill[0]
    top = gain.max()
    return np.clip(gain / top, 0.0, 1.0) if top > 0 else np.linspace(0.0, 1.0, len(skill))


def _learning_rate(steps: int, rng) -> np.ndarray:
    peak = float(rng.choice(LEARNING_RATES))
    schedule = str(rng.choice(SCHEDULES))
    warmup = int(rng.choice([0, 10, int(0.03 * steps), int(0.1 * steps)])) if schedule != "constant" else 0
    t = np.arange(steps, dtype=float)
    ramp = np.minimum(1.0, (t + 1) / warmup) if warmup else np.ones(steps)
    after = np.clip((t - warmup) / max(steps - warmup, 1), 0.0, 1.0)
    decay = {"cosine": 0.5 * (1 + np.cos(np.pi * after)), "linear": 1.0 - after}.get(schedule, np.ones(steps))
    return peak * ramp * decay


def _length(mode: str, progress: np.ndarray, rng) -> tuple[np.ndarray, float]:
    (lo, hi), (r_lo, r_hi) = LENGTHS[mode]
    start = _loguniform(rng, lo, hi)
    end = start * rng.uniform(r_lo, r_hi)
    return start * (end / start) ** progress, end


def _entropy(steps: int, progress: np.ndarray, rng) -> np.ndarray:
    start = rng.uniform(*ENTROPY_START)
    if rng.random() < 0.5:  # flat, with a slow drift either way
        return start * (1 + rng.uniform(-0.1, 0.15) * np.linspace(0, 1, steps))
    keeps = rng.uniform(*ENTROPY_KEEPS)
    return start * (keeps + (1 - keeps) * np.exp(-3.0 * progress))


def _kl(steps: int, rng) -> np.ndarray:
    """Sub-linear growth that levels off: the policy moves away from the reference, then the KL term holds it."""
    t = np.arange(steps, dtype=float)
    return _loguniform(rng, *KL_LEVEL) * (1 - np.exp(-t / (rng.uniform(0.15, 0.6) * steps)))


def _grad(steps: int, rng) -> np.ndarray:
    t = np.arange(steps, dtype=float)
    start, keeps = _loguniform(rng, *GRAD_NORM), rng.uniform(0.4, 1.3)
    return start * (keeps + (1 - keeps) * np.exp(-t / (rng.uniform(0.1, 0.5) * steps)))


def _isolated_spikes(steps: int, rng) -> np.ndarray:
    counts, weights = zip(*ISOLATED_SPIKES)
    count = int(rng.choice(counts, p=weights))
    factor = np.ones(steps)
    chosen: list[int] = []
    while len(chosen) < count:
        step = int(rng.integers(SPIKE_GAP // 2, steps))
        if all(abs(step - c) >= SPIKE_GAP for c in chosen):
            chosen.append(step)
            factor[step] = rng.uniform(*SPIKE_FACTOR)
    return factor


def _rewards(rng, need_format: bool = False, binary: bool = False) -> tuple:
    """accuracy_reward (1.0), then a format reward and a partial-credit reward (graded: never flat in a group)."""
    count = 2 if need_format else int(rng.integers(1, 3 if binary else 4))
    rewards = [("accuracy_reward", 1.0)]
    if count >= 2:
        rewards.append(("format_reward", float(rng.choice(FORMAT_WEIGHTS))))
    if count == 3:
        rewards.append(("partial_credit_reward", float(rng.choice(PARTIAL_WEIGHTS))))
    return tuple(rewards)


def healthy_run(seed: int, dynamic: str, steps: int | None = None, need_format: bool = False,
                binary: bool = False, beta: float | None = None) -> tuple[RunSpec, Latent]:
    """A healthy run of the given dynamic; its other settings drawn from the ranges above with this seed.
    need_format: a format reward beside accuracy; binary: no graded reward (a group can only be flat without one)."""
    kind = DYNAMICS[dynamic]
    rng = np.random.default_rng([seed, sorted(DYNAMICS).index(dynamic)])
    steps = steps or int(rng.integers(STEPS[0], STEPS[1] + 1))
    u = np.linspace(0.0, 1.0, steps)
    skill = kind.skill(u, rng)
    progress = _progress(skill)
    mode = str(rng.choice(kind.lengths))
    length, end = _length(mode, progress, rng)
    if mode == "concise":
        limit, length_sd = CONCISE_LIMIT, CONCISE_LENGTH_SD
    else:
        limit = int(np.ceil(max(length[0], end) * rng.uniform(3.0, 6.0) / 64) * 64)
        length_sd = rng.uniform(*LENGTH_SD)
    while True:
        prompts, generations = int(rng.choice(kind.prompts)), int(rng.choice(kind.generations))
        if prompts * generations <= MAX_COMPLETIONS:
            break
    rewards = _rewards(rng, need_format, binary)
    beta = float(rng.choice([0.0, BETA])) if beta is None else beta
    iterations = int(rng.choice([1, 2]))
    lr = _learning_rate(steps, rng)
    t = np.arange(steps, dtype=float)
    format_start, format_end = rng.uniform(-1.0, 1.5), rng.uniform(3.5, 6.0)
    format_skill = format_end + (format_start - format_end) * np.exp(-t / (rng.uniform(0.02, 0.1) * steps))
    clip = rng.uniform(*CLIP_LEVEL) * lr / lr.max() if iterations > 1 else np.zeros(steps)
    latent = Latent(skill=skill, eval_skill=skill - rng.uniform(0.0, 0.4), format_skill=format_skill,
                    identical=np.full(steps, IDENTICAL_GROUPS), difficulty_shift=np.zeros(steps), length=length,
                    entropy=_entropy(steps, progress, rng), kl=_kl(steps, rng) if beta > 0 else np.zeros(steps),
                    clip=clip, grad=_grad(steps, rng), spikes=_isolated_spikes(steps, rng), lr=lr)
    spec = RunSpec(name=f"{dynamic}-s{seed}", seed=seed, dynamic=dynamic, steps=steps, prompts=prompts,
                   generations=generations, rewards=rewards, beta=beta, num_iterations=iterations,
                   max_completion_length=limit, eval_every=int(rng.choice(EVAL_EVERY)),
                   eval_prompts=int(rng.choice(EVAL_PROMPTS)), difficulty_sd=rng.uniform(*DIFFICULTY_SD),
                   unsolvable=rng.uniform(*kind.unsolvable), length_sd=length_sd,
                   prompt_tokens=int(rng.integers(40, 400)), seconds_per_step=rng.uniform(10.0, 120.0),
                   grad_tail=rng.uniform(*GRAD_TAIL))
    return spec, latent
