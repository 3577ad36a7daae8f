"""What every layer of flatline may import, and which imports nothing else of flatline: errors, the step record
that a training loop hands to the probes, the listener policy, JSONL and atomic files, reward-group statistics."""
