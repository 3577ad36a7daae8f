"""control.learns: does the same trainer and config learn the control task (GSM8K-format)? Control flat too ->
the fault is in the infrastructure; control learns while the subject is flat -> in the task's signal."""
from __future__ import annotations

from flatline.diagnostics.hypotheses.common import enough_steps, progress
from flatline.diagnostics.hypotheses.progress import PLATEAU_MIN_STEPS
from flatline.diagnostics.references import refs
from flatline.diagnostics.verdict import hypothesis

# Tasks that are themselves controls: a run of one of these is its own control.
CONTROL_TASKS = ("gsm8k", "arithmetic", "bandit")


@hypothesis("control.learns", "does this trainer and config learn the control task at all?")
def learns(h, v):
    control = h.control
    if control is None and h.setting("task") in CONTROL_TASKS:
        control = h
    if control is None:
        return v.skipped("no control run: `pytest cases/` trains one, or `flatline diagnose RUN --control CONTROL_RUN`")
    p = progress(control)
    if p is None or not enough_steps(control):
        return v.skipped(f"the control run {control.run} has too few steps with a reward")
    evidence = {"control_run": control.run, **p.evidence("control_")}
    subject = progress(h) if control is not h else None
    if subject is not None:
        evidence.update(subject.evidence("subject_", trend=False))
    if p.rising or p.eval_rising or p.at_ceiling:
        if subject is not None and not (subject.rising or subject.eval_rising or subject.at_ceiling):
            return v.passed("the control learns with the same trainer and config while this run is flat: the fault "
                            "lies in the task's signal (reward, data, difficulty), not the infrastructure",
                            evidence, refs("control"))
        if subject is not None:
            return v.passed("the control learns with the same trainer and config, so the infrastructure works: "
                            "what limits this run lies in the task's signal (see the reward and advantage verdicts)",
                            evidence, refs("control"))
        return v.passed("the control task learns with this trainer and config", evidence, refs("control"))
    if control.steps < PLATEAU_MIN_STEPS:
        return v.inconclusive(f"the control run has only {control.steps} steps and no gain yet", evidence,
                              f"train the control for at least {PLATEAU_MIN_STEPS} steps")
    return v.fail(f"the control task does not learn either ({p.first:.3g} -> {p.last:.3g}): the fault lies in the "
                  "infrastructure (trainer, optimizer, sampler sync, masks), not in the task", evidence,
                  "fix the failed gradients/update/sync/masking hypotheses first; check learning_rate against the "
                  "model size; run configs/bandit.toml to test the trainer alone", refs("control"))
