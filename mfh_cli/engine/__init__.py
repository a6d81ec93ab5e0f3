"""Engine: one run = one model on one dataset with one seed → a run directory (metrics, history, weights)."""
