"""flatline inside training loops it did not write: `flatline.integrations.trl.FlatlineCallback` for TRL."""
