"""A plug-in's properties as a verdict of the cases (id plugins.<plug point>), with the failure text."""
from __future__ import annotations

from flatline.harness.properties.masks import chat_tokenizer
from flatline.harness.properties.runner import (
    MAX_EXAMPLES,
    dotted_path,
    find_violations,
    properties,
)

TITLES = {
    "advantage_fn": "advantage_fn keeps the group-advantage invariants",
    "mask_fn": "mask_fn covers each completion up to and including its first EOS",
    "loss_fn": "loss_fn's gradient raises positive-advantage tokens and lowers negative ones",
}
PRESCRIPTIONS = {
    "advantage_fn": "take each group's mean and std over its own num_generations adjacent rewards "
                    "(rewards.view(-1, G)) in float64, and give a group whose rewards are all equal exactly zero "
                    "advantages, as flatline.trainer.algorithm.group_advantages does",
    "mask_fn": "find each row's first EOS (any of eos_token_ids, never the pad id) and keep every token up to and "
               "including it; keep a row without EOS whole, as flatline.trainer.algorithm.completion_mask does",
    "loss_fn": "minimise -min(ratio * A, clip(ratio) * A) over the masked tokens, on logprobs that keep their "
               "autograd graph, as flatline.trainer.algorithm.policy_loss does",
}
# Characters of the counterexample and of the failure kept in a verdict's evidence (the case's message has all).
COUNTEREXAMPLE_CHARS = 500
FAILURE_CHARS = 300


def call_options(plug_point: str, cfg) -> dict:
    """The keyword arguments the trainer calls a plug point with under `cfg`."""
    if plug_point == "advantage_fn":
        return {"scale_rewards": cfg.scale_rewards, "eps": cfg.advantage_eps}
    if plug_point == "loss_fn":
        return {"loss_type": cfg.loss_type, "epsilon_low": cfg.epsilon, "epsilon_high": cfg.epsilon_upper,
                "max_completion_length": cfg.max_completion_length}
    return {}


def judge_plugin(plug_point: str, cfg, max_examples: int = MAX_EXAMPLES):
    """The property verdict of `cfg`'s plug-in at `plug_point` (flatline's default when the config names none).

    Returns (Verdict with id plugins.<plug_point>, the failure text: every violation with its counterexample)."""
    from flatline.diagnostics.verdict import Verdict
    from flatline.trainer.plugins import load_plugins

    plug_in = getattr(load_plugins(cfg), plug_point)
    tokenizer = chat_tokenizer(cfg.model) if plug_point == "mask_fn" else None
    options = call_options(plug_point, cfg)
    checked = properties(plug_point, options.get("scale_rewards", "group"))
    violations = find_violations(plug_point, plug_in, tokenizer=tokenizer, max_examples=max_examples, **options)
    evidence = {"plug_in": dotted_path(plug_in), "properties": len(checked), "examples_each": max_examples}
    verdict_id, title = f"plugins.{plug_point}", TITLES[plug_point]
    if not violations:
        reason = f"{len(checked)} properties held on {max_examples} generated examples each"
        return Verdict(verdict_id, title, "pass", evidence, "", [], reason), ""
    first = violations[0]
    names = ", ".join(v.property.name for v in violations)
    evidence.update(violated=names, failure=first.error[:FAILURE_CHARS],
                    counterexample=" ".join(first.counterexample.split())[:COUNTEREXAMPLE_CHARS])
    statement = first.property.statement
    reason = f"{dotted_path(plug_in)} breaks {names} (first: {statement[0].lower()}{statement[1:].rstrip('.')})"
    verdict = Verdict(verdict_id, title, "fail", evidence, PRESCRIPTIONS[plug_point], [], reason)
    header = f"{verdict_id} [fail] {dotted_path(plug_in)} violates {len(violations)} of {len(checked)} properties"
    details = "\n\n".join(v.describe() for v in violations)
    return verdict, f"{header}\n\n{details}\n\ntry: {PRESCRIPTIONS[plug_point]}"
