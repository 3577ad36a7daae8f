"""The wiring that runs training and judges it: the `flatline` CLI, the cases' runs, the planted-fault selftest and
the plug-in property tests. The only layer that imports trainer, probes and diagnostics together."""
