"""Judge a run: every registered hypothesis over its History, fails ordered likeliest cause first.

    diagnosis = judge(load_history("runs/x"), control=load_history("runs/control"))
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from flatline.diagnostics.history import History
from flatline.diagnostics.hypotheses.common import reward_fall
from flatline.diagnostics.readers.base import nothing_judged
from flatline.diagnostics.verdict import FLAGGED, REGISTRY, SEVERITY, STATUSES, Verdict

# When several hypotheses are confirmed, the headline lists them in this order: a root cause before the
# symptoms it produces (no gradient -> weights unchanged -> plateau), infrastructure before signal (the
# failure catalogue's control logic: A/C before B), and the catch-all plateau last.
CAUSE_ORDER = (
    "gradients.non_finite",
    "update.optimizer_coverage",
    "gradients.no_flow",
    "sync.sampler_mismatch",
    "sync.stale_weights",
    "sync.sampling_semantics",
    "sync.importance_weights",
    "update.nondeterministic_forward",
    "masking.prompt_in_loss",
    "masking.padding_in_loss",
    "masking.eos_excluded",
    "masking.env_tokens_in_loss",
    "masking.completion_excluded",
    "advantage.grouping",
    "advantage.numerics",
    "episodes.infra_scored_as_reward",
    "episodes.template_not_prefix_preserving",
    "reward.parse_failures",
    "update.precision_swallowed",
    "update.too_small",
    "kl.penalty_dominates",
    "length.context_overflow",
    "length.truncation",
    "episodes.early_termination",
    "episodes.tool_call_failures",
    "reward.component_dominance",  # a format term that owns the signal leaves the groups flat: before their verdicts
    "reward.no_signal",
    "advantage.degenerate_groups",
    "episodes.bonus_dominates",
    "entropy.collapse",
    "entropy.explosion",
    "gradients.clipping_dominates",
    "update.clip_saturation",
    "update.weights_unchanged",
    "update.base_drift",
    "reward.hacking",
    "length.growth",
    "length.collapse",
    "kl.drift",
    "gradients.spikes",
    "control.learns",
    "progress.plateau",
    "gradients.zero_loss",  # a guard: never fails
)


# Fails present from a run's first step whatever its course (a missing gradient, a mask, a sampler serving other
# weights, a broken scorer, a context that cannot fit): every id before FIRST_COURSE_ID in CAUSE_ORDER, and the
# reward's design (a component that owns the signal, a reward without variance). A fail that says when its evidence
# moved gives evidence["onset_step"]; any other fail about the run's course follows those that do.
FIRST_COURSE_ID = "length.truncation"
FROM_THE_START = ("reward.component_dominance", "reward.no_signal")


# A fail whose evidence says it came with the reward's fall (groups that went flat or silent once the policy stopped
# earning the reward it earned before) gives the step the reward fell from under this key: a consequence, it follows
# every fail dated before it in the headline, whatever its place in CAUSE_ORDER.
FOLLOWS_FALL = "follows_fall_from_step"


def onset(verdict: Verdict, first_step: float) -> float:
    """The step where a fail's evidence moved first: its onset_step, the first step for a structural fault, else inf
    (a consequence of the reward's fall, FOLLOWS_FALL, too)."""
    if FOLLOWS_FALL in verdict.evidence:
        return math.inf
    step = verdict.evidence.get("onset_step")
    if isinstance(step, (int, float)) and not isinstance(step, bool) and math.isfinite(step):
        return float(step)
    structural = verdict.id in FROM_THE_START or (
        verdict.id in CAUSE_ORDER and CAUSE_ORDER.index(verdict.id) < CAUSE_ORDER.index(FIRST_COURSE_ID))
    return first_step if structural else math.inf


def _load_families() -> None:
    import flatline.diagnostics.hypotheses  # noqa: F401  (registers every family)


def hypothesis_ids() -> list[str]:
    _load_families()
    return [i for i in CAUSE_ORDER if i in REGISTRY] + sorted(set(REGISTRY) - set(CAUSE_ORDER))


def cause_rank(verdict: Verdict) -> tuple:
    """Sort key: fail, warn, inconclusive, pass, skipped; within a status, CAUSE_ORDER."""
    order = CAUSE_ORDER.index(verdict.id) if verdict.id in CAUSE_ORDER else len(CAUSE_ORDER)
    return (-SEVERITY[verdict.status], order)


@dataclass
class Diagnosis:
    run: str
    verdicts: list[Verdict]  # fails first (likeliest cause first), then warn, inconclusive, pass, skipped
    key_metrics: dict = field(default_factory=dict)
    control_run: str | None = None
    nothing_to_judge: str = ""  # the log was read but nothing could be judged (readers.base.nothing_judged)
    reward_fall: tuple | None = None  # (step the reward falls from, its peak, its last window mean) when it fell

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == "fail"]

    @property
    def warned(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == "warn"]

    def counts(self) -> dict:
        return {s: sum(v.status == s for v in self.verdicts) for s in STATUSES}

    @property
    def status(self) -> str:
        """The run's status for the log book: the worst verdict (fail > warn > inconclusive > pass > skipped)."""
        worst = max((SEVERITY[v.status] for v in self.verdicts), default=0)
        return next(s for s in STATUSES if SEVERITY[s] == worst)

    def headline(self) -> str:
        if self.nothing_to_judge:
            return self.nothing_to_judge
        if self.failed:
            return self._why()
        if self.warned:
            return "Learning now, but this will stop it: " + "; ".join(f"{v.id} ({v.reason})" for v in self.warned)
        if any(v.status == "inconclusive" for v in self.verdicts):
            return "No hypothesis confirmed; some evidence is mixed (see inconclusive verdicts)."
        return "No hypothesis confirmed: every judged hypothesis is ruled out."

    def _why(self) -> str:
        """The fail whose evidence moved first (fails are ordered by onset), with the step, the reward's fall when it
        came after it, then the other fails as what followed."""
        first, *rest = self.failed
        step = first.evidence.get("onset_step")
        text = f"Not learning because: {first.id}" + (f" from step {step:.0f}" if isinstance(step, (int, float))
                                                       and math.isfinite(step) else "") + f" ({first.reason})"
        fall = self.reward_fall
        if fall is not None and "reward falls from step" not in first.reason:
            text += f"; the reward falls from step {fall[0]:.0f} ({fall[1]:.3g} -> {fall[2]:.3g})"
        if rest:
            text += "; then, as consequences: " + "; ".join(f"{v.id} ({v.reason})" for v in rest)
        return text

    def worst_at_or_above(self, level: str) -> bool:
        return any(SEVERITY[v.status] >= SEVERITY[level] for v in self.verdicts)

    def to_json(self) -> dict:
        return {"run": self.run, "status": self.status, "headline": self.headline(), "counts": self.counts(),
                "control_run": self.control_run, "key_metrics": self.key_metrics,
                "verdicts": [v.to_json() for v in self.verdicts]}


# Minimum evidence. A fail or warn about a rate or a course over steps (no signal on 80% of steps, most groups flat,
# zero gradients, a mean importance ratio, a trend) asserts that something persists; one or two logged rows cannot
# show that. Each row is one observation: a window mean over logging_steps optimizer steps, with grad_norm that of its
# last step alone (references: log_window), and on a live run (`flatline watch`) the first rows are the warm-up. So
# such a verdict needs MIN_EVIDENCE_ROWS logged training rows; with fewer it is inconclusive and says how many it needs.
MIN_EVIDENCE_ROWS = 3
# Faults one row proves, flagged at once: a non-finite value; a config or code path that cannot work whatever the run
# does (parameters outside the optimizer, a context that cannot hold prompt + completion, dropout in the policy,
# frozen weights that moved); and what flatline's probes count per token, group or episode at every step (a loss mask,
# advantages that do not sum to zero in a group, a template that rewrites earlier turns, a scorer that raises, an
# episode cut by its budget): each row holds every case of it, not a window's mean.
IMMEDIATE = frozenset({
    "gradients.non_finite", "update.optimizer_coverage", "length.context_overflow", "update.nondeterministic_forward",
    "update.base_drift", "advantage.numerics", "advantage.grouping", "reward.parse_failures",
    "masking.prompt_in_loss", "masking.padding_in_loss", "masking.eos_excluded", "masking.env_tokens_in_loss",
    "masking.completion_excluded", "episodes.infra_scored_as_reward", "episodes.template_not_prefix_preserving",
    "episodes.early_termination", "episodes.tool_call_failures", "episodes.bonus_dominates",
})


def minimum_evidence(verdict: Verdict, history: History) -> Verdict:
    """The verdict, or inconclusive when it flags (fail or warn) a persisting fault on fewer than MIN_EVIDENCE_ROWS
    logged rows; faults in IMMEDIATE are flagged from one row."""
    rows = history.steps
    if verdict.status not in FLAGGED or verdict.id in IMMEDIATE or rows >= MIN_EVIDENCE_ROWS:
        return verdict
    evidence = {**verdict.evidence, "logged_rows": rows, "rows_needed": MIN_EVIDENCE_ROWS}
    evidence.pop("onset_step", None)
    reason = (f"{verdict.reason}; but this is {rows} logged row{'s' if rows != 1 else ''} and a {verdict.status} needs "
              f"{MIN_EVIDENCE_ROWS} to show it persists: judged again as the log grows")
    return replace(verdict, status="inconclusive", evidence=evidence, reason=reason)


def judge_one(hypothesis_id: str, history: History) -> Verdict:
    """One hypothesis, under the minimum-evidence rule; a judge that raises gives a skipped verdict naming the error,
    never a crash."""
    _load_families()
    hypothesis = REGISTRY[hypothesis_id]
    try:
        verdict = hypothesis.judge(history)
    except Exception as exc:  # a malformed foreign log must not take the whole diagnosis down
        return Verdict(hypothesis.id, hypothesis.title, "skipped", {}, "", [],
                       f"could not be judged from this log ({type(exc).__name__}: {exc})")
    return minimum_evidence(verdict, history)


def judge(history: History, control: History | None = None, ids=None) -> Diagnosis:
    if control is not None:
        history.control = control
    chosen = [i for i in hypothesis_ids() if ids is None or i in ids]
    verdicts = sorted((judge_one(i, history) for i in chosen), key=cause_rank)
    first_step = float(history.rows[0].get("step", 1)) if history.rows else 1.0
    fails = sorted((v for v in verdicts if v.status == "fail"), key=lambda v: onset(v, first_step))  # stable
    verdicts = fails + [v for v in verdicts if v.status != "fail"]
    control_run = history.control.run if history.control is not None else None
    fall = reward_fall(history) if fails else None
    blind = history.log.nothing_to_judge or (nothing_judged(history.log, history.steps)
                                             if ids is None and all_skipped(verdicts) else "")
    return Diagnosis(history.run, verdicts, key_metrics(history), control_run, blind,
                     (fall.peak_step, fall.peak, fall.last) if fall is not None else None)


def all_skipped(verdicts: list[Verdict]) -> bool:
    """Every hypothesis skipped: the log was read, but nothing was judged (the headline must not say "ruled out")."""
    return bool(verdicts) and all(v.status == "skipped" for v in verdicts)


# Steps averaged at each end of the run for "first" and "last" figures (as the run summary's).
KEY_WINDOW = 5
# Health figures in a log book entry: (name, metric, how the steps are summarised).
KEY_FIGURES = (("zero_std_frac", "frac_reward_zero_std", "mean"),
               ("clipped_ratio", "completions/clipped_ratio", "mean"), ("grad_norm_median", "grad_norm", "median"), ("rel_update_median", "update/rel_update", "median"),
               ("entropy_last", "entropy", "last"), ("kl_last", "kl", "last"))


def key_metrics(history: History) -> dict:
    """The few numbers a log book entry shows: reward and held-out score at both ends, and the health figures."""
    out: dict = {"steps": history.steps}
    reward = history.series("reward").finite()
    if len(reward):
        out["reward_first"] = round(reward.head(KEY_WINDOW).mean(), 4)
        out["reward_last"] = round(reward.tail(KEY_WINDOW).mean(), 4)
    held_out = history.series("eval/reward").finite()
    if len(held_out):
        out["eval_first"], out["eval_last"] = round(float(held_out.values[0]), 4), round(float(held_out.values[-1]), 4)
    for key, name, how in KEY_FIGURES:
        s = history.series(name).finite()
        if len(s):
            out[key] = round({"mean": s.mean, "median": s.median, "last": s.last}[how](), 6)
    wall = history.summary.get("total_seconds") or history.summary.get("wall_seconds")
    if wall:
        out["wall_seconds"] = round(float(wall), 1)
    return out
