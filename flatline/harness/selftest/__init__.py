"""`flatline selftest`: planted faults that each verdict must catch, and healthy runs that must stay quiet."""
