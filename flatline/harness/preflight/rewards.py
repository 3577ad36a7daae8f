"""Run the reward on known-good and adversarial answers before training: a verifier that rejects correct answers, or
pays for junk, is caught before any GPU time is spent.

For a few training examples, each answer is scored by what will score completions in training (the task's scorer,
or the plug-in `reward` with the row's columns):
- reference:    the task's known-good answer (Example.reference / reference_ids); must earn the task's maximum (a
                plug-in reward, whose maximum is unknown: more than the empty answer)
- empty:        "" (no tokens); must earn less than the reference, and nothing at all ideally
- repeated:     the reference REPEATS times over; must not earn more than the reference once (a reward that grows
                with repetition is farmed by the policy)
- wrong_format: the bare final answer without the markup the prompt asks for ("#### 19", "Answer: ..."); a reward
                that pays it as much as the reference does not enforce the format (fine when intended: said as info)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from flatline.harness.preflight.findings import Finding

REPEATS = 20
# Training examples each answer is tried on.
EXAMPLES = 8
# Totals within this of each other are equal (weights such as 0.4 + 0.4 + 0.2 are inexact sums).
TOL = 1e-6


@dataclass(frozen=True)
class Answer:
    text: str
    ids: tuple[int, ...] = ()


def final_answer(task: str, row: dict) -> str | None:
    """The bare answer of a row for the tasks that ship, for the wrong-format answer; None when unknown."""
    if task in ("gsm8k", "arithmetic") and isinstance(row.get("answer"), str):
        return row["answer"].rpartition("####")[2].strip()
    if task == "musique" and isinstance(row.get("answer"), str):
        return row["answer"]
    return None


def adversarial_answers(task: str, reference: Answer, row: dict) -> dict[str, Answer]:
    """The answers every reward is tried on, by name (wrong_format only when the task's format is known)."""
    answers = {"reference": reference, "empty": Answer("", ()),
               "repeated": Answer("\n".join([reference.text] * REPEATS) if reference.text else "",
                                  reference.ids * REPEATS)}
    bare = final_answer(task, row)
    if bare is not None and bare != reference.text:
        answers["wrong_format"] = Answer(bare, ())
    return answers


@dataclass
class Payments:
    """What each answer earned on each example tried: totals (None: the reward raised or returned nothing)."""

    who: str  # e.g. "task arithmetic's scorer", "reward my_rewards:score"
    maximum: float | None  # the task's maximum total; None for a plug-in reward
    totals: dict[str, list[float | None]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # answer name -> the first error's text
    uncapped_per_call: bool = False  # the task pays every tool call, with no cap (tool_call_reward_cap = 0)


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def reward_findings(pay: Payments) -> list[Finding]:
    """refuse: the reference raises, earns nothing scorable, or earns no more than the empty answer; warn: the reference
    misses the task's maximum, the empty answer earns something, repetition earns more than the reference, the
    wrong format earns more; info: the wrong format earns as much (the format is not enforced), or all is well."""
    ref = pay.totals.get("reference", [])
    n = len(ref)
    means = {name: _mean(values) for name, values in pay.totals.items()}
    numbers = {f"{name}_mean": (round(v, 4) if v is not None else "none") for name, v in means.items()}
    numbers["examples"] = n
    if pay.maximum is not None:
        numbers["maximum"] = pay.maximum
    if "reference" in pay.errors or means.get("reference") is None:
        error = pay.errors.get("reference", "no score")
        return [Finding("reward", "refuse", f"{pay.who} cannot score the known-good reference answer ({error})",
                        numbers, "fix the reward so it scores the task's reference answers")]
    findings = []
    reference, empty = means["reference"], means.get("empty")
    if empty is not None and empty >= reference - TOL:
        findings.append(Finding("reward", "refuse", f"{pay.who} pays the empty answer {empty:.3g}, as much as the "
                                f"known-good reference ({reference:.3g}): it cannot tell a right answer from nothing",
                                numbers, "make the reward pay only answers it has checked"))
    if pay.maximum is not None:
        short = [v for v in ref if v is None or v < pay.maximum - TOL]
        if short:
            findings.append(Finding("reward", "warn", f"{pay.who} pays the known-good reference less than the maximum "
                                    f"{pay.maximum:g} on {len(short)} of {n} examples (mean {reference:.3g}): it "
                                    f"rejects correct answers (reward.parse_failures)", numbers,
                                    "fix the answer extraction, or the reference"))
    if empty is not None and TOL < empty < reference - TOL:
        findings.append(Finding("reward", "warn", f"{pay.who} pays {empty:.3g} for an empty answer", numbers,
                                "pay nothing for an answer with no content"))
    repeated = means.get("repeated")
    if repeated is not None and repeated > reference + TOL:
        findings.append(Finding("reward", "warn", f"{pay.who} pays the reference repeated {REPEATS} times "
                                f"{repeated:.3g}, more than once ({reference:.3g}): the policy can farm it by "
                                f"repeating itself", numbers,
                                "cap the per-call reward (tool_call_reward_cap = 1), or pay calls only in episodes that "
                                "finish: every repeated tool call is paid" if pay.uncapped_per_call else
                                "score one answer per completion (e.g. the last)"))
    wrong = means.get("wrong_format")
    if wrong is not None and wrong > reference + TOL:
        findings.append(Finding("reward", "warn", f"{pay.who} pays the answer in the wrong format {wrong:.3g}, more "
                                f"than the reference ({reference:.3g})", numbers, "reward the asked-for format"))
    elif wrong is not None and wrong >= reference - TOL:
        findings.append(Finding("reward", "info", f"{pay.who} pays the bare answer without the asked-for format as "
                                f"much as the reference ({wrong:.3g}): the format is not enforced", numbers))
    for name, error in pay.errors.items():
        if name != "reference":
            findings.append(Finding("reward", "info", f"{pay.who} raised on the {name} answer: {error} (training "
                                    f"counts such completions as unscored)", numbers))
    if not findings:
        findings.append(Finding("reward", "info", f"{pay.who} pays the reference {reference:.3g} and no adversarial "
                                f"answer more", numbers))
    return findings
