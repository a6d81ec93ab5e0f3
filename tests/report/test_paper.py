"""The paper check: the paper's own numbers, rendered as one-seed results, give back the percentages it printed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mfh_cli.report.build import run_report
from mfh_cli.report.paper import PAPER_TABLES, paper_tables

SOURCE = Path(__file__).resolve().parents[3] / "shared" / "paper" / "appendix_tables.csv"  # beside the repository
PRINTED_DIGITS_HALF_UNIT = 0.00005  # the paper printed values to 4 decimals (".5138")
PRINTED_CHANGE_HALF_UNIT = 0.005  # and changes to 2 decimals ("+0.35%")


def _change(value, reference):
    return (value - reference) / reference * 100


def rounding_tolerance(value: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """How far a change recomputed from 4-digit values can honestly sit from the printed one: ±0.01 points
    (SPEC §4), widened where the 4-digit rounding of both values alone moves the change further (tiny gaps:
    .4562 vs .4560 can be anything from +0.022% to +0.066%)."""
    exact = _change(value, reference)
    extremes = np.maximum(np.abs(_change(value + PRINTED_DIGITS_HALF_UNIT, reference - PRINTED_DIGITS_HALF_UNIT)
                                 - exact),
                          np.abs(_change(value - PRINTED_DIGITS_HALF_UNIT, reference + PRINTED_DIGITS_HALF_UNIT)
                                 - exact))
    return np.maximum(0.01, extremes + PRINTED_CHANGE_HALF_UNIT)


@pytest.fixture
def paper_as_results(write_study) -> pd.DataFrame:
    """Each appendix table written as a one-seed study whose values are the paper's."""
    paper = paper_tables()
    for (table, study), rows in paper.groupby(["table", "study"]):
        cells = pd.DataFrame({"variant": rows["model"], "seed": 0, "group": rows["group"], "task": rows["task"],
                              "metric": rows["metric"], "value": rows["value"]})
        write_study(study, cells, reference=rows.loc[rows["is_reference"] == 1, "model"].iloc[0],
                    variants=list(dict.fromkeys(rows["model"])), paper_table=int(table))
    return paper


def test_packaged_tables_are_the_papers_numbers_unchanged():
    if not SOURCE.is_file():
        pytest.skip(f"{SOURCE} not present")
    assert PAPER_TABLES.read_bytes() == SOURCE.read_bytes()
    assert (PAPER_TABLES.parent / "PAPER_SOURCE.md").is_file()


def test_rendering_the_paper_reproduces_every_printed_percentage(paper_as_results, results_dir,
                                                                 captured_console):
    summary = run_report(results_dir, console=captured_console)

    for study, printed in paper_as_results.groupby("study"):
        tidy = pd.read_csv(results_dir / "tables" / f"{study}.csv").query("group != 'pooled'")
        changed = tidy[tidy["relative_change"].notna()]
        expected_cells = printed[printed["is_reference"] == 0]
        assert len(changed) == len(expected_cells)
        # Our change and the paper's printed change side by side in one tidy row.
        assert changed["paper_change"].notna().all()
        reference = tidy[tidy["relative_change"].isna()].set_index(["group", "task"])["mean"]
        reference_values = reference.loc[list(zip(changed["group"], changed["task"]))].to_numpy()
        tolerance = rounding_tolerance(changed["mean"].to_numpy(), reference_values)
        gap = (changed["relative_change"] - changed["paper_change"]).abs().to_numpy()
        assert (gap <= tolerance).all(), changed.loc[gap > tolerance, ["group", "variant", "task"]]
        # One seed: no interval, no test, and the table says so.
        assert tidy["ci_low"].isna().all() and tidy["p_value"].isna().all()
        assert "one seed only: no interval and no paired test" in (results_dir / "tables" / f"{study}.md").read_text()

    assert len(summary.agreement) == 4


def test_direction_agreement_counts_the_cells(paper_as_results, results_dir, captured_console):
    summary = run_report(results_dir, console=captured_console)
    lines = {line.split(" (synthetic)")[0]: line for line in summary.agreement}
    for study, printed in paper_as_results.groupby("study"):
        rows = printed[printed["is_reference"] == 0]
        reference = printed[printed["is_reference"] == 1].set_index(["group", "task"])["value"]
        # An exact tie in the printed values has no direction, so it cannot agree with the paper's '-0.00'.
        ties = int((rows["value"].to_numpy() == reference.loc[list(zip(rows["group"], rows["task"]))].to_numpy()).sum())
        expected = f"direction agrees with the paper in {len(rows) - ties} of {len(rows)} cells (0 significant)"
        assert lines[f"{study} study"].endswith(expected)


def test_no_paper_leaves_the_paper_out(paper_as_results, results_dir, captured_console):
    summary = run_report(results_dir, study="hierarchical", paper=False, console=captured_console)
    tidy = pd.read_csv(results_dir / "tables" / "hierarchical.csv")
    assert summary.agreement == []
    assert tidy["paper_value"].isna().all() and tidy["paper_change"].isna().all()
    assert "paper" not in (results_dir / "tables" / "hierarchical.md").read_text().split("\n")[2]

