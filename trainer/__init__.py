"""flatline's minimal GRPO trainer: config, tasks and rewards, models, samplers, the algorithm, the loop."""
