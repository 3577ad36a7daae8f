"""flatline's hypotheses, reports, log book and the `flatline` command line."""
