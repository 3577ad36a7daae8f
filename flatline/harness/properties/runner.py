"""Run a plug point's properties under Hypothesis and keep the minimal counterexample of each one that fails."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis.errors import FailedHealthCheck, InvalidArgument, Unsatisfiable

from flatline.harness.properties import advantage as adv
from flatline.harness.properties import loss, masks

# The plug points whose properties are tested (a reward has no property to check without its task).
PLUG_POINTS = ("advantage_fn", "mask_fn", "loss_fn")
# Generated examples per property: enough to find the bugs of flatline/harness/selftest/plugins.py every time, fast
# enough (a second or two per plug point) to run in every `pytest cases/`.
MAX_EXAMPLES = 50

# Derandomized: the same plug-in gets the same verdict every run; no example database is written to the cwd.
_SETTINGS = dict(deadline=None, derandomize=True, database=None, report_multiple_bugs=False,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                 phases=(Phase.explicit, Phase.generate, Phase.shrink))
_HYPOTHESIS_PREFIX = re.compile(r"^(Failing|Falsifying) (test case|explicit example|example):\s*")


@dataclass(frozen=True)
class Property:
    plug_point: str
    name: str
    check: Callable  # check(plug_in, **example fields, **options); raises AssertionError
    examples: Callable  # examples(**inputs) -> a strategy of NamedTuples whose fields are the check's arguments
    explicit: tuple = ()  # examples always tried first

    @property
    def statement(self) -> str:
        return " ".join(self.check.__doc__.split())


def properties(plug_point: str, scale_rewards: str = "group") -> list[Property]:
    """The properties of a plug point; groups_independent only where each group is scaled on its own."""
    if plug_point == "advantage_fn":
        trap = adv.FlatGroup([adv.float32(1.350639)] * 8, 8, 0)
        chosen = [Property(plug_point, "finite_and_shaped", adv.check_finite_and_shaped,
                           lambda: adv.reward_batches(adv.WIDE)),
                  Property(plug_point, "groups_sum_to_zero", adv.check_groups_sum_to_zero, adv.reward_batches),
                  Property(plug_point, "flat_group_is_zero", adv.check_flat_group_is_zero, adv.flat_groups, (trap,)),
                  Property(plug_point, "shift_invariant", adv.check_shift_invariant, adv.shifted_groups),
                  Property(plug_point, "groups_independent", adv.check_groups_independent, adv.changed_groups),
                  Property(plug_point, "monotone_in_group", adv.check_monotone_in_group, adv.reward_batches)]
        return [p for p in chosen if not (p.name == "groups_independent" and scale_rewards == "batch")]
    if plug_point == "mask_fn":
        return [Property(plug_point, "sane", masks.check_mask_sane, masks.chat_completions),
                Property(plug_point, "ends_at_first_eos", masks.check_mask_ends_at_first_eos, masks.chat_completions),
                Property(plug_point, "keeps_truncated_whole", masks.check_mask_keeps_truncated_whole,
                         masks.chat_completions),
                Property(plug_point, "leaves_prompt_out", masks.check_mask_leaves_prompt_out, masks.chat_completions)]
    if plug_point == "loss_fn":
        return [Property(plug_point, "finite", loss.check_loss_finite, loss.policy_batches),
                Property(plug_point, "gradient_follows_advantage", loss.check_gradient_follows_advantage,
                         loss.policy_batches),
                Property(plug_point, "masked_tokens_get_no_gradient", loss.check_masked_tokens_get_no_gradient,
                         loss.policy_batches),
                Property(plug_point, "zero_advantage_gets_no_gradient", loss.check_zero_advantage_gets_no_gradient,
                         loss.policy_batches)]
    raise ValueError(f"plug point must be one of {PLUG_POINTS}, got {plug_point!r}")


def dotted_path(function: Callable) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', repr(function))}"


@dataclass(frozen=True)
class Violation:
    property: Property
    plug_in: str  # dotted path of the function tested
    error: str  # the assertion (or exception) on the minimal counterexample
    counterexample: str  # Hypothesis's minimal failing call

    def describe(self) -> str:
        return (f"{self.plug_in} violates {self.property.plug_point}.{self.property.name}: {self.property.statement}\n"
                f"  {self.error}\n"
                f"  Falsifying example (Hypothesis's minimal counterexample): {self.counterexample}")


def _counterexample(exc: BaseException) -> str:
    notes = [_HYPOTHESIS_PREFIX.sub("", note) for note in getattr(exc, "__notes__", [])
             if _HYPOTHESIS_PREFIX.match(note)]
    return notes[0] if notes else "(Hypothesis reported no example)"


def falsify(prop: Property, plug_in: Callable, options: dict, inputs: dict,
            max_examples: int = MAX_EXAMPLES) -> Violation | None:
    """Run one property under Hypothesis; None when it held on every example, else the minimal counterexample."""
    def holds(example):
        prop.check(plug_in, **example._asdict(), **options)

    holds.__name__ = holds.__qualname__ = prop.name
    test = given(example=prop.examples(**inputs))(holds)
    for explicit in prop.explicit:
        test = example(example=explicit)(test)
    test = settings(max_examples=max_examples, **_SETTINGS)(test)
    try:
        test()
    except (FailedHealthCheck, InvalidArgument, Unsatisfiable):
        raise  # the harness's own problem, not the plug-in's
    except Exception as exc:  # the plug-in may fail in any way; Hypothesis has shrunk it to its smallest example
        error = str(exc) if isinstance(exc, AssertionError) else f"raised {type(exc).__name__}: {exc}"
        return Violation(prop, dotted_path(plug_in), error, _counterexample(exc))
    return None


def find_violations(plug_point: str, plug_in: Callable, *, tokenizer=None, max_examples: int = MAX_EXAMPLES,
                    **options) -> list[Violation]:
    """Every violated property of `plug_in` at `plug_point`.

    options: how the trainer calls it (advantage_fn: scale_rewards, eps; loss_fn: loss_type, epsilon_low,
    epsilon_high, max_completion_length); mask_fn needs the tokenizer whose chats it is tested on."""
    inputs = {"tokenizer": tokenizer or masks.chat_tokenizer()} if plug_point == "mask_fn" else {}
    found = (falsify(p, plug_in, options, inputs, max_examples)
             for p in properties(plug_point, options.get("scale_rewards", "group")))
    return [v for v in found if v is not None]
