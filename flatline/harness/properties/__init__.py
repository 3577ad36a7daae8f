"""Property tests of a user's own advantage_fn, mask_fn and loss_fn (the plug points), driven by Hypothesis.

Each check_* function takes the plug-in and one example and raises AssertionError naming what went wrong;
find_violations runs every property of a plug point over generated examples and returns Hypothesis's minimal
counterexample of each that fails. The cases run them on the session config's plug-ins, no model trained:

    pytest cases/ --flatline-config my.toml -k advantage        # also: -k masking (mask_fn), -k gradients (loss_fn)

From Python:

    for violation in find_violations("advantage_fn", my_advantages, scale_rewards="group", eps=1e-4):
        print(violation.describe())
"""

from flatline.harness.properties.runner import (
    PLUG_POINTS,
    Property,
    Violation,
    find_violations,
    properties,
)
from flatline.harness.properties.verdict import judge_plugin

__all__ = ["PLUG_POINTS", "Property", "Violation", "find_violations", "judge_plugin", "properties"]
