"""Rewrite tests/models/golden/models.json: `python -m tests.models.golden.regenerate`.

Only for an INTENDED change of model numerics (a new part, a different initialisation, a changed layer); a
refactoring must leave the golden file as it is (tests/models/test_golden.py proves it). Say in the commit why
the numbers changed.
"""

from __future__ import annotations

import json

from mfh_cli.config import compose
from tests.models.golden.cases import CASES, GOLDEN_FILE, record, schema_to_json, simulator_schema


def main() -> None:
    """Record every case and write the golden file."""
    schema = simulator_schema(compose([]))
    golden = {"note": "regenerate only for an intended numerics change: python -m tests.models.golden.regenerate",
              "schema": schema_to_json(schema),
              "cases": {label: record(overrides, schema) for label, overrides in CASES}}
    GOLDEN_FILE.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {GOLDEN_FILE} ({len(golden['cases'])} cases)")


if __name__ == "__main__":
    main()
