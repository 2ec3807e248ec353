"""Planning before a run: the cost model and the measured estimate."""
