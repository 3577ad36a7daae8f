"""Multi-turn episodes against a tool environment, turned into one GRPO generation batch.

    rollout = episode_rollout(trainer, examples)       # what Trainer.rollout returns for an environment task

Each of the P x G rollouts is an episode: the model writes a turn; a turn with tool calls gets the environment's
answers appended as a tool message (its tokens are the environment's: env_mask True, never in the loss); a turn
without one is the final answer, graded once with a deadline. Turns are sampled token in, token out: each turn's
prompt is the transcript so far (episode_prompts = "append"), or the chat template re-rendered over the messages
(episode_prompts = "render", what many agent loops do; it differs when the template is not prefix-preserving).

The batch: prompt_ids [N, L] (the first prompt), completion_ids [N, T] (the transcript: model and environment tokens,
ending with the model's last turn), completion_mask [N, T] (the model's own tokens only), env_mask [N, T].
Rewards: the task's outcome term plus its per-call terms; an infrastructure failure is excluded (NaN) or, with
infra_failure = "zero", scored 0 and flagged. Each episode keeps the policy step that sampled it.
"""
from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass, field

import torch

from flatline.common.errors import PluginExit
from flatline.trainer.episodes.env import StepBudget
from flatline.trainer.episodes.outcomes import INFRA_OUTCOMES
from flatline.trainer.episodes.toolcall import parse_turn
from flatline.trainer.plugins import call_mask_fn, call_reward, reward_components
from flatline.trainer.rollout import Rollout, combine_rewards
from flatline.trainer.samplers import SampleBatch
from flatline.trainer.samplers.base import left_pad
from flatline.trainer.tasks.base import Example
from flatline.trainer.tasks.tools import clip_calls

# One grading pool for the process: a grader that overruns its deadline keeps its thread until it returns.
_GRADERS = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="flatline-grader")


@dataclass
class Episode:
    example: Example
    policy_step: int  # optimizer steps taken when the episode started: the policy that sampled it
    prompt_ids: list[int]
    messages: list[dict]
    ids: list[int] = field(default_factory=list)  # the transcript after the prompt: model and environment tokens
    env: list[bool] = field(default_factory=list)  # per transcript token: True for the environment's
    logprobs: list[float] = field(default_factory=list)  # the sampler's, 0 on environment tokens
    turns: int = 0
    outcome: str | None = None
    answer: str = ""
    truncated: bool = False  # the last model turn hit max_completion_length without EOS
    calls_ok: int = 0
    calls_failed: int = 0  # calls that ran and failed (unknown tool, bad arguments, missing key)
    parse_errors: int = 0  # malformed tool calls
    call_reward: float = 0.0  # sum of per-call terms
    template_breaks: int = 0  # turns where re-rendering the conversation changed earlier tokens
    error: str = ""

    def end(self, outcome: str, error: str = "") -> None:
        if self.outcome is None:
            self.outcome, self.error = outcome, error

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.ids)

    def summary(self) -> dict:
        """What probes and trajectories.jsonl read of an episode."""
        return {"outcome": self.outcome, "turns": self.turns, "policy_step": self.policy_step,
                "calls_ok": self.calls_ok, "calls_failed": self.calls_failed, "parse_errors": self.parse_errors,
                "env_tokens": sum(self.env), "model_tokens": len(self.env) - sum(self.env),
                "template_breaks": self.template_breaks, "error": self.error}


def first_difference(shorter: list[int], longer: list[int]) -> int | None:
    """The first position where `shorter` is not a prefix of `longer` (None: it is)."""
    for index, token in enumerate(shorter):
        if index >= len(longer) or longer[index] != token:
            return index
    return None


def render(tokenizer, messages: list[dict], generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def shared_prompts(prompts: list[list[int]]) -> tuple[list[list[int]], int]:
    """(distinct prompts, rows each) when the rows are equal-length runs of one prompt each (the first turn of a
    prompt's G rollouts), so the sampler prefills each once; else (prompts, 1)."""
    run = 1
    while run < len(prompts) and prompts[run] == prompts[0]:
        run += 1
    if len(prompts) % run or any(prompts[i] != prompts[i - i % run] for i in range(len(prompts))):
        return prompts, 1
    return prompts[::run], run


def tool_message(observations: list[str]) -> dict:
    """The environment's answers as one message (Hermes: <tool_response> blocks, sent in a user turn)."""
    return {"role": "user", "content": "\n".join(f"<tool_response>{o}</tool_response>" for o in observations)}


def env_tokens(tokenizer, messages: list[dict], message: dict, eos_ids) -> tuple[list[int], bool]:
    """Tokens of the tool message and the next generation prompt, as the chat template renders them after the
    model's last turn (the end of `messages`), and whether the template kept the conversation so far as a prefix
    (prefix-preserving)."""
    before = render(tokenizer, messages, False)
    after = render(tokenizer, messages + [message], True)
    ends = [i for i, t in enumerate(before) if t in eos_ids]
    cut = ends[-1] + 1 if ends else len(before)  # just after the EOS that closed the model's turn
    if first_difference(before, after) is None:
        return after[cut:], True
    text = "\n" + message["content"]  # the template rewrote earlier turns: append the message as plain text
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]), False


def grade(trainer, episode: Episode) -> float:
    """The outcome term of a finished episode: the plug-in `reward` (TRL form, one episode) or the task's grader."""
    plugin = trainer.plugins.reward
    if plugin is None:
        return float(trainer.task.grade(episode.answer, episode.example))
    row = episode.example.row
    result = call_reward(plugin, [trainer.prompt_text(episode.example)], [episode.answer],
                         {key: [value] for key, value in row.items()})
    (values,) = reward_components(plugin, result, 1).values()
    if values[0] is None:
        raise ValueError("the grader returned None")
    return float(values[0])


def grade_all(trainer, episodes: list[Episode]) -> dict[int, float]:
    """Grade each finished episode within grader_timeout_s; a grader that raises or overruns ends its episode as
    grader_error (never a silent 0)."""
    finished = [(i, e) for i, e in enumerate(episodes) if e.outcome == "finished"]
    futures = [(i, e, _GRADERS.submit(grade, trainer, e)) for i, e in finished]
    deadline = time.monotonic() + trainer.cfg.grader_timeout_s
    scores = {}
    for i, episode, future in futures:
        try:
            scores[i] = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            episode.outcome, episode.error = "grader_error", f"grading took over {trainer.cfg.grader_timeout_s:g} s"
        except PluginExit:  # sys.exit() in the grader ends the run, named; never a quiet exit
            raise
        except Exception as exc:  # the grader is infrastructure: its failure is counted, not scored
            episode.outcome, episode.error = "grader_error", f"{type(exc).__name__}: {exc}"
    return scores


class EpisodeRunner:
    """Runs episodes of a batch of examples against the trainer's task environment, with its sampler."""

    def __init__(self, trainer):
        self.trainer, self.cfg, self.tokenizer = trainer, trainer.cfg, trainer.tokenizer
        self.eos_ids = set(trainer.eos_token_ids)

    def run(self, examples: list[Example], num_generations: int, temperature: float) -> list[Episode]:
        cfg, trainer = self.cfg, self.trainer
        step = trainer.step_count
        episodes, envs = [], []
        for example in examples:
            shared = StepBudget(cfg.env_step_budget)
            for _ in range(num_generations):
                budget = shared if cfg.env_budget_shared else StepBudget(cfg.env_step_budget)
                env = trainer.task.make_env(example, budget)
                env.reset()
                envs.append(env)
                episodes.append(Episode(example, step, list(trainer.prompt_ids[example.id]),
                                        [dict(m) for m in example.messages]))
        started = time.monotonic()
        for turn in range(cfg.max_turns):
            active = [(e, env) for e, env in zip(episodes, envs) if e.outcome is None]
            if not active:
                break
            if cfg.episode_timeout_s and time.monotonic() - started > cfg.episode_timeout_s:
                for e, _ in active:
                    e.end("timeout", f"episodes ran over {cfg.episode_timeout_s:g} s")
                break
            self.turn(active, temperature, last=turn == cfg.max_turns - 1)
        for e in episodes:
            while e.env and e.env[-1]:  # a transcript ends with the model's own last turn
                e.ids.pop(), e.env.pop(), e.logprobs.pop()
        return episodes

    def turn(self, active: list, temperature: float, last: bool) -> None:
        cfg = self.cfg
        room = {id(e): cfg.max_episode_length - e.length for e, _ in active}
        for e, _ in active:
            if room[id(e)] < 1:
                e.end("context_full")
        active = [(e, env) for e, env in active if e.outcome is None]
        if not active:
            return
        prompts = [e.prompt_ids + e.ids if cfg.episode_prompts == "append" else render(self.tokenizer, e.messages, True)
                   for e, _ in active]
        budget = min(cfg.max_completion_length, max(room[id(e)] for e, _ in active))
        distinct, repeats = shared_prompts(prompts)
        samples = self.trainer.sampler.sample(distinct, repeats, budget, temperature, cfg.top_p, cfg.top_k)
        for row, (e, env) in enumerate(active):
            n = int(samples.completion_lengths[row])
            ids = samples.completion_ids[row, :n].tolist()
            cut = n > room[id(e)]
            ids = ids[: room[id(e)]]
            e.ids += ids
            e.env += [False] * len(ids)
            e.logprobs += samples.sampler_logprobs[row, : len(ids)].tolist()
            e.turns += 1
            finished_turn = bool(ids) and ids[-1] in self.eos_ids
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            e.messages.append({"role": "assistant", "content": text})
            if cut or (not finished_turn and len(ids) >= room[id(e)]):
                e.end("context_full")
                continue
            e.truncated = not finished_turn
            self.act(e, env, text, last)

    def act(self, e: Episode, env, text: str, last: bool) -> None:
        """Run the turn's tool calls (or take it as the final answer) and append the environment's answer."""
        parsed = parse_turn(text)
        if not parsed.attempted:
            e.answer = text
            e.end("finished")
            return
        e.parse_errors += len(parsed.errors)
        e.call_reward -= len(parsed.errors)
        observations = [f"error: malformed tool call ({kind})" for kind in parsed.errors]
        for call in parsed.calls:
            try:
                result = env.step(call)
            except Exception as exc:  # the environment broke: infrastructure, not the model
                e.end("tool_error", f"{type(exc).__name__}: {exc}")
                return
            if result.info.get("budget_exhausted"):
                e.end("env_budget_exhausted")
                return
            e.call_reward += result.reward
            if result.info.get("ok"):
                e.calls_ok += 1
            else:
                e.calls_failed += 1
            observations.append(result.observation)
        if last:
            e.end("max_turns")
            return
        message = tool_message(observations)
        ids, kept = env_tokens(self.tokenizer, e.messages, message, self.eos_ids)
        e.template_breaks += not kept
        e.messages.append(message)
        e.ids += ids
        e.env += [True] * len(ids)
        e.logprobs += [0.0] * len(ids)


def components_of(trainer, episodes: list[Episode], scores: dict[int, float]) -> dict[str, list]:
    """Reward components per episode: outcome (graded, or 0 for an episode that never answered) and the per-call
    term; an infrastructure failure gets None (excluded) or 0 (infra_failure = "zero")."""
    cfg, task = trainer.cfg, trainer.task
    outcome, calls = [], []
    for i, e in enumerate(episodes):
        if e.outcome in INFRA_OUTCOMES:
            value = 0.0 if cfg.infra_failure == "zero" else None
            outcome.append(value), calls.append(value)
            continue
        outcome.append(scores.get(i, 0.0))
        calls.append(clip_calls(e.call_reward, task.call_cap))
    return {"outcome": outcome, "tool_calls": calls}


def to_batch(trainer, episodes: list[Episode]) -> tuple[SampleBatch, torch.Tensor, torch.Tensor]:
    """(samples, completion_mask [N, T] over the model's own tokens, env_mask [N, T])."""
    pad = trainer.tokenizer.pad_token_id
    pad = pad if pad is not None else trainer.eos_token_ids[0]
    prompt_ids, prompt_mask = left_pad([e.prompt_ids for e in episodes], pad)  # [N, L]
    width = max(1, max(len(e.ids) for e in episodes))
    N = len(episodes)
    completion_ids = torch.full((N, width), pad, dtype=torch.long)  # [N, T]
    logprobs = torch.zeros((N, width), dtype=torch.float32)
    env_mask = torch.zeros((N, width), dtype=torch.bool)
    for row, e in enumerate(episodes):
        n = len(e.ids)
        completion_ids[row, :n] = torch.as_tensor(e.ids, dtype=torch.long)
        logprobs[row, :n] = torch.as_tensor(e.logprobs, dtype=torch.float32)
        env_mask[row, :n] = torch.as_tensor(e.env, dtype=torch.bool)
    lengths = torch.tensor([len(e.ids) for e in episodes], dtype=torch.long)
    inside = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)  # [N, T]
    completion_mask = (inside & ~env_mask).long()
    samples = SampleBatch(prompt_ids, prompt_mask, completion_ids, logprobs * completion_mask, lengths,
                          torch.tensor([e.truncated for e in episodes], dtype=torch.bool))
    return samples, completion_mask, env_mask


def episode_rollout(trainer, examples: list[Example], num_generations: int | None = None,
                    temperature: float | None = None) -> Rollout:
    """Episodes for `examples` (G each), as a Rollout with env_mask and each episode's summary."""
    cfg = trainer.cfg
    G = num_generations or cfg.num_generations
    episodes = EpisodeRunner(trainer).run(examples, G, cfg.temperature if temperature is None else temperature)
    scores = grade_all(trainer, episodes)
    components = components_of(trainer, episodes, scores)
    weights = dict(trainer.task.weights)
    rewards = combine_rewards(components, weights)  # [N], NaN for excluded infrastructure failures
    samples, completion_mask, env_mask = to_batch(trainer, episodes)
    loss_mask, prompt_loss_mask = completion_mask, None
    if cfg.mask_fn:  # the user's mask over the transcript (its env_mask says what it put in the loss)
        loss_mask, prompt_loss_mask = call_mask_fn(trainer.plugins.mask_fn, samples.completion_ids,
                                                   trainer.eos_token_ids, samples.prompt_ids, samples.prompt_mask)
    advantages = trainer.advantages(rewards, G)  # over the global batch under several processes
    completions = trainer.tokenizer.batch_decode([e.ids for e in episodes], skip_special_tokens=False)
    errors = sum(e.outcome == "grader_error" for e in episodes)
    summaries = []
    for i, e in enumerate(episodes):
        summary = e.summary()
        summary.update(example=e.example.id, messages=e.messages, outcome_term=components["outcome"][i],
                       call_term=components["tool_calls"][i], reward=float(rewards[i]))
        summaries.append(summary)
    return Rollout(examples, samples, loss_mask, samples.completion_lengths, completions, rewards, components,
                   weights, errors, advantages, prompt_loss_mask=prompt_loss_mask, env_mask=env_mask,
                   episodes=summaries)


def with_logprobs(trainer, rollout: Rollout) -> Rollout:
    """Old and reference logprobs when the config needs them (as Trainer.rollout does for single-turn batches)."""
    if trainer.cfg.num_iterations > 1:
        rollout.old_logprobs = trainer.logprobs_no_grad(rollout, trainer.model).cpu()
    if trainer.cfg.beta > 0:
        rollout.ref_logprobs = trainer.reference_logprobs(rollout).cpu()
    return rollout


def evaluate_episodes(trainer) -> dict:
    """eval/*: one episode per held-out example at eval_temperature."""
    examples = trainer.eval_examples
    if not examples:
        return {}
    episodes = EpisodeRunner(trainer).run(examples, 1, trainer.cfg.eval_temperature)
    scores = grade_all(trainer, episodes)
    components = components_of(trainer, episodes, scores)
    rewards = combine_rewards(components, trainer.task.weights)
    row = {"eval/reward": float(torch.nanmean(rewards)),
           "eval/mean_length": sum(len(e.ids) for e in episodes) / len(episodes),
           "eval/clipped_ratio": sum(e.truncated for e in episodes) / len(episodes),
           "eval/finished": sum(e.outcome == "finished" for e in episodes) / len(episodes)}
    for name, values in components.items():
        scored = [v for v in values if v is not None]
        row[f"eval/{name}"] = sum(scored) / len(scored) if scored else float("nan")
    return row
