"""flatline: why isn't my GRPO run learning?

One namespace, four layers; each imports only the layers above it in this list (tests/test_layering.py):

    flatline.common       errors, the step record, listeners, JSONL and atomic files, reward-group statistics
    flatline.trainer      a minimal GRPO trainer that really learns
    flatline.probes       instruments: a step record in, named numbers out
    flatline.diagnostics  judges over metric histories: verdicts, reports, the log book
    flatline.harness      the wiring: the CLI, the cases' runs, the selftest, plug-in property tests

(trainer, probes and diagnostics each import common alone; harness imports them all.)
"""

__version__ = "0.1.0"
