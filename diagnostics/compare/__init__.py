"""Compare runs: the seed table people write by hand (per task, baseline against variant, mean ± std over seeds, the
difference in percent, winner or tie by a significance test, n per cell), from any log `load_history` reads.

    flatline compare runs/* --by learning_rate --baseline 1e-5 [--metric reward] [--last K] [--format md|json]

    result = compare_runs(["runs/a", "runs/b", ...], CompareOptions(by="learning_rate", baseline="1e-5"))
    print(render_markdown(result))          # or json.dumps(render_json(result), allow_nan=False)

Runs need no language model: a world-model RL run logging `reward` and `plan_reward` compares the same way.
  labels.py  a run's task, variant and seed: from its config, KEY=VALUE path components, a name pattern, seed tokens
  runs.py    which paths are runs, a run's score (mean of its last 10% of logged values), the checks, the table
  stats.py   cells (n, mean, sample std) and the verdict: Welch's t-test at alpha 0.05, or tie / n/a said plainly
  render.py  markdown and JSON
Leaves out: correction for multiple comparisons, paired (per-seed) tests, and more than one --by key at a time.

JSON (`render_json`): {"metric", "window": str, "last": int|null, "higher_is_better": bool, "test": "welch",
"alpha", "by", "task_key", "seed_key", "pattern", "baseline", "tasks": [str], "variants": [str] (baseline first),
"runs": [{"path", "task", "variant", "seed", "sources": {"task", "variant", "seed"}, "score", "values", "logged",
"first_step", "last_step"}], "cells": [{"task", "variant", "n", "mean", "std", "seeds"}],
"comparisons": [{"task", "baseline", "variant", "n_baseline", "n_variant", "mean_baseline", "mean_variant",
"std_baseline", "std_variant", "difference", "percent", "p_value", "verdict": "variant|baseline|tie|n/a",
"winner": str|null, "reason"}], "left_out": [{"path", "reason"}]}. Label values are strings (numbers normalised);
a source is config|path|pattern|seed token|none. A number that does not exist (the std of one run, the p-value of an
untestable pair, the percent of a zero baseline, anything of an empty cell) is null; so is a seed that was not found.
"""
from flatline.diagnostics.compare.render import render_json, render_markdown
from flatline.diagnostics.compare.runs import CompareOptions, CompareResult, compare_runs

__all__ = ["CompareOptions", "CompareResult", "compare_runs", "render_json", "render_markdown"]
