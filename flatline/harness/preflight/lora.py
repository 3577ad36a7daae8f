"""LoRA settings that cannot work or will barely move the policy: target modules that match nothing in the model,
and a learning rate far below the documented ranges for LoRA in RL.

Documented LoRA RL learning rates (docs/failure-catalogue.md C2, docs/field-2026-11.md row 5):
- TRL, "LoRA Without Regret" (docs/source/lora_without_regret.md, after Schulman et al. 2025, Thinking Machines):
  GRPO with LoRA r=1 on all linear layers at 1e-5 (SmolLM3-3B; full fine-tuning 1e-6) and 5e-5 (Qwen3-0.6B); the
  best LoRA rate is about 10x full fine-tuning's and nearly independent of the rank.
- verl, docs/advance/ppo_lora.rst: "increase the learning rate by an order of magnitude"; GRPO on Qwen2.5-72B with
  LoRA r=32 at 3e-5.
- trl#2872: LoRA r=8 at 5e-7 stays flat where full fine-tuning learns.
"""
from __future__ import annotations

import json

from flatline.harness.preflight.findings import Finding

# The lowest learning rate the sources above use for LoRA in RL (TRL's LoRA Without Regret, SmolLM3-3B).
LORA_RL_LR_LOW = 1e-5
# "Far below": this factor under LORA_RL_LR_LOW, where full fine-tuning's rates (1e-6 and below) lie.
FAR_BELOW = 5.0
LR_SOURCES = "TRL LoRA Without Regret: 1e-5 to 5e-5; verl ppo_lora: 3e-5"


def lora_lr_findings(lora_r: int, learning_rate: float) -> list[Finding]:
    """warn when a LoRA learning rate is FAR_BELOW times under the documented range, info when merely under it."""
    if lora_r == 0 or learning_rate >= LORA_RL_LR_LOW:
        return []
    ratio = LORA_RL_LR_LOW / learning_rate
    numbers = {"learning_rate": learning_rate, "documented_low": LORA_RL_LR_LOW, "times_below": round(ratio, 1)}
    if ratio >= FAR_BELOW:
        return [Finding("lora", "warn", f"learning_rate {learning_rate:g} with LoRA is {ratio:.0f}x below "
                        f"{LORA_RL_LR_LOW:g}, the lowest documented for LoRA in RL ({LR_SOURCES}); LoRA needs about "
                        f"10x full fine-tuning's rate, and at this one the update is too small to move the policy "
                        f"(trl#2872)", numbers, f"set learning_rate = {LORA_RL_LR_LOW:g} or higher (try 5e-5)")]
    return [Finding("lora", "info", f"learning_rate {learning_rate:g} with LoRA is under the documented LoRA RL range "
                    f"({LR_SOURCES})", numbers, "")]


def matches(target: str, module_name: str) -> bool:
    """peft's rule for a list of target names: the module's full name is the target or ends with '.' + target."""
    return module_name == target or module_name.endswith("." + target)


def target_findings(targets: list[str], module_names: list[str], linear_names: list[str]) -> list[Finding]:
    """refuse when no target matches a module (peft would refuse after the weights load), warn for targets that match
    nothing beside ones that do (those adapters silently do not exist). module_names: every module's full name;
    linear_names: the full names of the nn.Linear ones (the usual targets)."""
    if targets == ["all-linear"]:
        return []
    choices = sorted({name.rsplit(".", 1)[-1] for name in linear_names if not name.endswith("lm_head")})
    missing = [t for t in targets if not any(matches(t, name) for name in module_names)]
    if not missing:
        adapted = sum(1 for name in module_names if any(matches(t, name) for t in targets))
        return [Finding("lora", "info", f"lora_target_modules {targets} adapt {adapted} modules",
                        {"modules_adapted": adapted})]
    numbers = {"unmatched": ", ".join(missing), "linear_modules": ", ".join(choices)}
    severity = "refuse" if len(missing) == len(targets) else "warn"
    what = "" if severity == "refuse" else " (the other targets do: these get no adapter)"
    return [Finding("lora", severity, f"lora_target_modules {missing} match no module of this model{what}; its "
                    f"linear modules are {', '.join(choices)}", numbers,
                    f"lora_target_modules = {json.dumps([c for c in _ATTENTION if c in choices] or choices)} or "
                    f"[\"all-linear\"]")]


_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
