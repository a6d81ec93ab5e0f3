"""Golden numbers of every model: parameter counts and outputs for fixed weights and inputs (see regenerate.py)."""
