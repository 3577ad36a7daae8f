"""episodes.*: multi-turn tool-use episodes: do they end early, is infrastructure scored as reward, do tool calls
fail, does a per-call bonus own the reward, does the chat template rewrite earlier turns.

Read from flatline's episodes probe (episodes/*); every judge is skipped on single-turn runs. Sources:
docs/field-2026-11.md rows 9 and 11 (prefix-preserving templates; infra/grader failures scored as 0: rllm PR#710,
NeMo-Gym PR#2015, verifiers PR#1245), issue 16 (a sandbox agent paid +0.5 per valid call and -0.5 per error).
"""
from __future__ import annotations

from flatline.diagnostics.hypotheses.common import MIN_GAIN, end_means, recent_part
from flatline.diagnostics.verdict import hypothesis

TEMPLATE_REFS = ["prime-rl#1334: Qwen3's template strips past <think> blocks, so re-rendered turns differ",
                 "trl#6361, PR#6363: is_chat_template_prefix_preserving"]
INFRA_REFS = ["rllm-org/rllm PR#710: episodes cut at the wall clock reported as done; grader crashes trained as 0",
              "PrimeIntellect-ai/verifiers PR#1245: sandbox TTL equal to the rollout deadline gives correct answers 0"]
# A fifth of the episodes cut short by a budget other than the model's own turn limit: the advantages then compare
# episodes that were allowed to finish with episodes that were not (issue 16: a step budget shared by 8 rollouts).
EARLY_MAX = 0.2
# Infrastructure failures scored as reward: above 2% of episodes the zeros are a visible share of every group's
# signal (a group of 8 then holds a false 0 in one step out of six); any at all is reported.
INFRA_SCORED_MAX = 0.02
# Excluded infrastructure failures are safe but waste the batch; a quarter of episodes lost is worth a warning.
INFRA_EXCLUDED_WARN = 0.25
# Half of the attempted tool calls failing over the recent part, without falling by FAIL_FALL over the run.
FAIL_RATE_MAX = 0.5
FAIL_FALL = 0.1
# The per-call terms own the reward when they carry this share of its within-group variance and this share of its
# absolute mass (recent means) while the outcome term has not gained MIN_GAIN.
PER_CALL_VARIANCE_OWNS = 0.6
PER_CALL_MASS_OWNS = 0.5
# ... and the policy is farming the calls: calls per episode up by a whole call over the run, or most recent episodes
# ending at max_turns while still calling. Without that the outcome is simply not earned (a task too hard for the
# model) and the per-call terms own the reward by default: a smaller bonus would change nothing.
CALLS_GROWTH = 1.0
FARMED_TURNS = 0.5
MIN_STEPS = 4


def _needs(h, v, metric: str):
    if not h.has(metric):
        return v.skipped(f"needs flatline's episodes probe ({metric}): a multi-turn environment task")
    return None


@hypothesis("episodes.early_termination", "do episodes end before max_turns because a budget ran out?")
def early_termination(h, v):
    skip = _needs(h, v, "episodes/early_end_frac")
    if skip:
        return skip
    early = h.series("episodes/early_end_frac").mean()
    budget = h.series("episodes/outcome/env_budget_exhausted").mean()
    context = h.series("episodes/outcome/context_full").mean()
    evidence = {"early_end_frac_mean": early, "env_budget_exhausted_frac": budget, "context_full_frac": context,
                "env_budget_shared": str(h.setting("env_budget_shared", "unknown")),
                "env_step_budget": h.setting("env_step_budget", "unknown"),
                "max_episode_length": h.setting("max_episode_length", "unknown")}
    if early < EARLY_MAX:
        return v.passed(f"{early:.0%} of episodes ended early (below {EARLY_MAX:.0%})", evidence)
    if budget >= context:
        shared = h.setting("env_budget_shared", False)
        why = (f"{budget:.0%} of episodes found the environment's step budget empty"
               + (" - one budget is shared by the num_generations rollouts of a prompt, so they compete for it"
                  if shared else ""))
        fix = ("give every rollout its own environment and budget (env_budget_shared = false), or a budget of at "
               "least max_turns calls per rollout" if shared else
               "raise env_step_budget to at least the calls an episode needs (max_turns)")
    else:
        why = f"{context:.0%} of episodes ran out of context (max_episode_length) before the model answered"
        fix = ("raise max_episode_length to the prompt plus max_turns x (max_completion_length + a tool answer), or "
               "shorten tool outputs and max_completion_length")
    return v.fail(why + "; an episode cut short scores as a failure the model did not make, and the advantages "
                  "reward the rollouts that happened to run first or shortest", evidence, fix)


@hypothesis("episodes.infra_scored_as_reward", "are grader or environment failures fed to the trainer as reward?")
def infra_scored_as_reward(h, v):
    skip = _needs(h, v, "episodes/infra_scored_frac")
    if skip:
        return skip
    scored = h.series("episodes/infra_scored_frac").mean()
    infra = h.series("episodes/infra_frac").mean()
    evidence = {"infra_scored_frac_mean": scored, "infra_frac_mean": infra,
                "grader_error_frac": h.series("episodes/outcome/grader_error").mean(),
                "tool_error_frac": h.series("episodes/outcome/tool_error").mean(),
                "timeout_frac": h.series("episodes/outcome/timeout").mean(),
                "infra_failure": str(h.setting("infra_failure", "unknown"))}
    if scored >= INFRA_SCORED_MAX:
        return v.fail(f"{scored:.0%} of episodes failed in the grader or the environment yet were scored as reward: "
                      "the model is punished for infrastructure, at random", evidence,
                      "exclude infrastructure failures (infra_failure = \"exclude\": no reward, advantage 0), fix the "
                      "grader's deadline (grader_timeout_s) or the environment, and count them per step", INFRA_REFS)
    if infra >= INFRA_EXCLUDED_WARN:
        return v.warn(f"{infra:.0%} of episodes failed in the grader or the environment (excluded, not scored): "
                      "a quarter of the batch teaches nothing", evidence,
                      "fix the grader or environment failures (see the outcome shares)", INFRA_REFS)
    return v.passed("no infrastructure failure reached the reward" if scored == 0 else
                    f"{scored:.1%} of episodes had an infrastructure failure scored as reward (below "
                    f"{INFRA_SCORED_MAX:.0%})", evidence)


@hypothesis("episodes.tool_call_failures", "do most tool calls fail, without the rate falling?")
def tool_call_failures(h, v):
    skip = _needs(h, v, "episodes/tool_calls_per_episode")
    if skip:
        return skip
    rate = h.series("episodes/tool_call_fail_rate").finite()
    if len(rate) < MIN_STEPS:
        return v.skipped(f"tool calls were attempted on {len(rate)} steps; needs {MIN_STEPS}")
    first, last, _ = end_means(rate)
    recent = recent_part(rate).mean()
    evidence = {"tool_call_fail_rate_first": first, "tool_call_fail_rate_last": last, "recent_mean": recent,
                "parse_error_rate_recent": recent_part(h.series("episodes/parse_error_rate")).mean(),
                "tool_calls_per_episode": h.series("episodes/tool_calls_per_episode").mean()}
    if recent >= FAIL_RATE_MAX and last > first - FAIL_FALL:
        parse = evidence["parse_error_rate_recent"]
        kind = "malformed (the parser could not read them)" if parse >= recent / 2 else "valid calls the tool refused"
        return v.fail(f"{recent:.0%} of tool calls failed over the recent steps ({first:.0%} at the start), mostly "
                      f"{kind}: episodes spend their turns on errors", evidence,
                      "show the exact call format in the prompt (a worked example), check the parser accepts what the "
                      "model writes (arguments as an object or a JSON string), and keep error messages short and fed back")
    trend = "falling" if last <= first - FAIL_FALL else "steady"
    return v.passed(f"tool-call failure rate {recent:.0%} recently ({trend}; {first:.0%} -> {last:.0%})", evidence)


@hypothesis("episodes.bonus_dominates",
            "does a per-call bonus own the reward, farmed by the policy, while the outcome does not move?")
def bonus_dominates(h, v):
    skip = _needs(h, v, "episodes/per_call_variance_share")
    if skip:
        return skip
    share = h.series("episodes/per_call_variance_share").finite()
    outcome = h.series("episodes/outcome_mean").finite()
    if len(share) < MIN_STEPS or len(outcome) < MIN_STEPS:
        return v.skipped(f"needs {MIN_STEPS} steps with reward variance and a scored outcome")
    variance_share = recent_part(share).mean()
    mass_share = recent_part(h.series("episodes/per_call_share")).mean()
    first, last, _ = end_means(outcome)
    calls_first, calls_last, _ = end_means(h.series("episodes/tool_calls_per_episode"))
    at_max_turns = recent_part(h.series("episodes/outcome/max_turns")).mean()
    evidence = {"per_call_variance_share_recent": variance_share, "per_call_share_recent": mass_share,
                "outcome_first": first, "outcome_last": last,
                "tool_calls_per_episode_first": calls_first, "tool_calls_per_episode_last": calls_last,
                "max_turns_frac_recent": at_max_turns}
    owned = variance_share >= PER_CALL_VARIANCE_OWNS and mass_share >= PER_CALL_MASS_OWNS and last - first < MIN_GAIN
    farmed = calls_last - calls_first >= CALLS_GROWTH or at_max_turns >= FARMED_TURNS
    if owned and farmed:
        return v.fail(f"the per-call terms carry {variance_share:.0%} of the within-group reward variance and "
                      f"{mass_share:.0%} of the reward while the outcome went {first:.2f} -> {last:.2f}, and calls per "
                      f"episode went {calls_first:.2f} -> {calls_last:.2f} with {at_max_turns:.0%} of recent episodes "
                      "ending at max_turns: the run learns to call tools, not to solve the task", evidence,
                      "cap or shrink the per-call bonus (tool_call_reward_cap, reward_weights.tool_calls) so the outcome "
                      "term carries most of the variance, or pay per-call terms only in episodes that finish")
    if owned:
        return v.passed(f"the per-call terms own the reward ({variance_share:.0%} of its variance) only because the "
                        f"outcome is not earned ({first:.2f} -> {last:.2f}); the calls are not farmed (calls per "
                        f"episode {calls_first:.2f} -> {calls_last:.2f}, {at_max_turns:.0%} of recent episodes at "
                        "max_turns), so a smaller bonus would not change that", evidence)
    return v.passed(f"the outcome carries the reward ({1 - variance_share:.0%} of its within-group variance recently) "
                    f"or is improving ({first:.2f} -> {last:.2f})", evidence)


@hypothesis("episodes.template_not_prefix_preserving", "does re-rendering the conversation change earlier turns?")
def template_not_prefix_preserving(h, v):
    skip = _needs(h, v, "episodes/template_break_frac")
    if skip:
        return skip
    breaks = h.series("episodes/template_break_frac").max()
    mode = h.setting("episode_prompts", "unknown")
    evidence = {"template_break_frac_max": breaks, "episode_prompts": str(mode)}
    if breaks <= 0:
        return v.passed("re-rendering the conversation kept every earlier token (prefix-preserving)", evidence)
    reason = (f"on up to {breaks:.0%} of tool turns the chat template rendered the conversation so far differently "
              "from the tokens already in it")
    fix = ("use a template that renders earlier turns unchanged, or build each turn's prompt by appending tokens "
           "(episode_prompts = \"append\")")
    if mode == "render":
        return v.fail(reason + "; each turn was sampled from the re-rendered text, so the trainer scores tokens in a "
                      "context the sampler never saw (off-policy, sync.sampler_mismatch)", evidence, fix, TEMPLATE_REFS)
    return v.warn(reason + "; training appends tokens and stays consistent, but the deployed model will see the "
                  "re-rendered conversation", evidence, fix, TEMPLATE_REFS)
