"""entropy.collapse: has sampling diversity collapsed? Entropy falling while reward rises is convergence."""
from __future__ import annotations

import math

from flatline.diagnostics.hypotheses.common import progress
from flatline.diagnostics.references import refs
from flatline.diagnostics.verdict import hypothesis

# Near-zero token entropy (nats): sampling at this entropy picks the same token essentially every time.
ENTROPY_FLOOR = 0.05
# A fall to a tenth of the starting entropy is a collapse in the making (Cui et al. 2025 track the same ratio).
ENTROPY_FALL_RATIO = 0.1
# Groups whose G completions are all identical: at 90% nearly every group has zero variance by construction.
IDENTICAL_FRAC = 0.9


@hypothesis("entropy.collapse", "has sampling diversity collapsed (identical samples, entropy near zero)?")
def collapse(h, v):
    entropy = h.series("entropy").finite()
    if not len(entropy):
        entropy = h.series("policy/entropy_mean").finite()
    identical = h.series("policy/identical_frac").finite()
    if not len(entropy) and not len(identical):
        return v.skipped("no entropy or policy/identical_frac in the log")
    evidence = {}
    first = float(entropy.head(3).values.mean()) if len(entropy) else math.nan
    last = float(entropy.tail(3).values.mean()) if len(entropy) else math.nan
    if len(entropy):
        evidence.update(entropy_first=first, entropy_last=last)
    recent_identical = float(identical.tail(max(1, len(identical) // 4)).values.mean()) if len(identical) else math.nan
    if len(identical):
        evidence["identical_groups_recent"] = recent_identical
    temperature = h.setting("temperature")
    if temperature is not None:
        evidence["temperature"] = temperature
    collapsed = (last < ENTROPY_FLOOR if len(entropy) else False) or recent_identical >= IDENTICAL_FRAC
    falling = len(entropy) and first > 0 and last / first < ENTROPY_FALL_RATIO
    if not collapsed and not falling:
        return v.passed("sampling stays diverse", evidence)
    p = progress(h)
    if p is not None:
        evidence.update(p.evidence(trend=False))
        if p.at_ceiling or (p.rising and p.last > p.first):
            return v.passed("entropy fell while the reward rose: the policy converged, it did not collapse", evidence,
                            refs("entropy"))
    if temperature is not None and float(temperature) == 0:
        prescription = "sample with temperature = 1.0 (temperature 0 is greedy: every completion in a group is the same)"
    else:
        prescription = "raise temperature, lower learning_rate, or use clip-higher (epsilon_high = 0.28)"
    if collapsed:
        return v.fail("sampling collapsed without a reward gain: " +
                      (f"{recent_identical:.0%} of groups hold identical completions" if recent_identical >= IDENTICAL_FRAC
                       else f"token entropy {last:.3g} nats"), evidence, prescription, refs("entropy", "dapo"))
    return v.inconclusive(f"entropy fell from {first:.3g} to {last:.3g} without a reward gain", evidence, prescription,
                          refs("entropy"))
