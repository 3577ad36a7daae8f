"""Verdicts and the hypothesis registry.

A hypothesis is a function History -> Verdict registered under its stable id (docs/DESIGN.md):
fail = confirmed (part of why the run is not learning), warn = the pathology is there while the run still learns
(learning now, but this will stop it), pass = ruled out, inconclusive = mixed evidence (the reason says what would
settle it), skipped = inputs missing (the reason names the metric or probe).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

STATUSES = ("fail", "warn", "inconclusive", "pass", "skipped")
# --fail-on ranks: a verdict at or above the threshold makes `flatline diagnose` exit 1.
SEVERITY = {"fail": 4, "warn": 3, "inconclusive": 2, "pass": 1, "skipped": 0}
# Statuses that flag a pathology (a healthy run may raise neither).
FLAGGED = ("fail", "warn")


@dataclass
class Verdict:
    id: str
    title: str
    status: str
    evidence: dict = field(default_factory=dict)  # name -> number | str
    prescription: str = ""
    references: list[str] = field(default_factory=list)
    reason: str = ""  # one sentence: why this status (shown in reports and pytest's skip/fail message)

    @property
    def family(self) -> str:
        return self.id.split(".", 1)[0]

    def to_json(self) -> dict:
        evidence = {k: _json_number(v) for k, v in self.evidence.items()}
        return {"id": self.id, "title": self.title, "status": self.status, "reason": self.reason,
                "evidence": evidence, "prescription": self.prescription, "references": list(self.references)}

    def message(self) -> str:
        """The verdict as one readable paragraph (pytest failure and skip messages)."""
        numbers = ", ".join(f"{k}={format_number(v)}" for k, v in self.evidence.items())
        text = f"{self.id} [{self.status}] {self.reason}"
        if numbers:
            text += f"\n  evidence: {numbers}"
        if self.prescription and self.status in ("fail", "warn", "inconclusive"):
            text += f"\n  try: {self.prescription}"
        if self.references and self.status in FLAGGED:
            text += f"\n  references: {'; '.join(self.references)}"
        return text


def _json_number(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "item"):
        return _json_number(value.item())
    return value


def format_number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.3g}"
    return f"{value:.4g}"


@dataclass(frozen=True)
class Hypothesis:
    id: str
    title: str
    judge: Callable  # History -> Verdict

    @property
    def family(self) -> str:
        return self.id.split(".", 1)[0]


REGISTRY: dict[str, Hypothesis] = {}


def hypothesis(id: str, title: str):
    """Register `fn(history, v) -> Verdict`; `v` is a VerdictMaker bound to this id and title."""

    def register(fn):
        def judge(history) -> Verdict:
            return fn(history, VerdictMaker(id, title))

        REGISTRY[id] = Hypothesis(id, title, judge)
        return fn

    return register


@dataclass(frozen=True)
class VerdictMaker:
    """Builds the four kinds of verdict for one hypothesis, so each judge reads as its decision."""

    id: str
    title: str

    def fail(self, reason: str, evidence: dict, prescription: str, references=()) -> Verdict:
        return Verdict(self.id, self.title, "fail", evidence, prescription, list(references), reason)

    def warn(self, reason: str, evidence: dict, prescription: str, references=()) -> Verdict:
        """The run still learns, but this pathology will stop it (entropy gone, KL without bound, ...)."""
        return Verdict(self.id, self.title, "warn", evidence, prescription, list(references), reason)

    def passed(self, reason: str, evidence: dict, references=()) -> Verdict:
        return Verdict(self.id, self.title, "pass", evidence, "", list(references), reason)

    def inconclusive(self, reason: str, evidence: dict, prescription: str = "", references=()) -> Verdict:
        return Verdict(self.id, self.title, "inconclusive", evidence, prescription, list(references), reason)

    def skipped(self, reason: str, evidence: dict | None = None) -> Verdict:
        return Verdict(self.id, self.title, "skipped", evidence or {}, "", [], reason)
