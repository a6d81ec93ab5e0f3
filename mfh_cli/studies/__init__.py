"""Studies: a study is a YAML list of variants (config overrides) × seeds; plan, execute, collect runs.csv."""
