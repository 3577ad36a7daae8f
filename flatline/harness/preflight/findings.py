"""What a preflight check reports: a Finding (severity, the numbers, the fix), and how findings are shown.

    Finding("memory", "refuse", "estimated 96.2 GiB of GPU memory for a 80 GiB device", {"total_gib": 96.2},
            "set gradient_checkpointing = true (61.4 GiB)")

Severities, worst first: refuse (the run cannot work: `flatline train` stops before any weights load), warn (it
can run, but this is a documented way for it not to learn), info (a number worth knowing, nothing to change).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

SEVERITIES = ("refuse", "warn", "info")


@dataclass(frozen=True)
class Finding:
    check: str  # which check: context, memory, lora, tokenizer, chat_template, reward, disk, wandb
    severity: str  # refuse | warn | info
    message: str  # what is wrong (or worth knowing), with its numbers in words
    numbers: dict = field(default_factory=dict)  # the numbers it rests on, by name
    fix: str = ""  # the change to make ("" for info that needs none)
    error: str = ""  # a refusal `flatline train` already gave before preflight existed: its one line, kept as it was

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def line(self, pad: bool = True) -> str:
        """One line: `REFUSE context: ...; fix: ...` (pad: severities aligned in a column)."""
        text = f"{self.severity.upper():{6 if pad else 0}} {self.check}: {self.message}"
        return f"{text}; fix: {self.fix}" if self.fix else text


def worst_first(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))


def refusals(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "refuse"]


def render_text(findings: list[Finding], seconds: float | None = None) -> str:
    """Every finding worst first, each with its numbers on the next line, then a count by severity."""
    lines = []
    for finding in worst_first(findings):
        lines.append(finding.line())
        if finding.numbers:
            lines.append("       " + ", ".join(f"{k}={_number(v)}" for k, v in finding.numbers.items()))
    counts = {s: sum(f.severity == s for f in findings) for s in SEVERITIES}
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    lines.append(f"preflight: {counts['refuse']} refuse, {counts['warn']} warn, {counts['info']} info{took}")
    return "\n".join(lines) + "\n"


def render_json(findings: list[Finding]) -> str:
    """{"findings": [{"check", "severity", "message", "numbers", "fix"}], "refuse": n, "warn": n, "info": n}"""
    body = {"findings": [{k: v for k, v in asdict(f).items() if k != "error"} for f in worst_first(findings)]}
    body.update({s: sum(f.severity == s for f in findings) for s in SEVERITIES})
    return json.dumps(body, indent=2, allow_nan=False, default=str) + "\n"


def refusal_line(findings: list[Finding]) -> str:
    """The one line `flatline train` stops with: the first refusal, and how many more there are."""
    refused = refusals(findings)
    first = refused[0]
    if first.error:
        return first.error + (f" (and {len(refused) - 1} more: flatline preflight CONFIG lists them)"
                              if len(refused) > 1 else "")
    more = f" (and {len(refused) - 1} more refusal{'s' * (len(refused) > 2)}: flatline preflight CONFIG lists them)" \
        if len(refused) > 1 else ""
    fix = f"; fix: {first.fix}" if first.fix else ""
    return f"preflight refused: {first.check}: {first.message}{fix}{more}"


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)
