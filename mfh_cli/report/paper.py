"""The paper's appendix tables (packaged `paper_tables.csv`, see PAPER_SOURCE.md) beside ours, the paper's printed
changes converted to our formula for the verdicts, and whether the direction of each change agrees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mfh_cli.report.verdicts import counted_cells, decide
from mfh_cli.tasks import lower_is_better

PAPER_TABLES = Path(__file__).resolve().with_name("paper_tables.csv")
# SPEC §4: Table 4's printed changes divide by the compared row (mfh), not by the reference (biasnet).
DIVIDED_BY_THE_VARIANT = {4}


def paper_tables() -> pd.DataFrame:
    """All four appendix tables: table, study, group, model, is_reference, task, metric, value,
    printed_rel_change_pct (empty on reference rows)."""
    return pd.read_csv(PAPER_TABLES)


def attach_paper(tidy: pd.DataFrame, table: int) -> pd.DataFrame:
    """The tidy table with `paper_value` / `paper_change` filled from the paper's Table `table` (matched on
    group, variant = the paper's model, task and metric), `paper_change_as_ours` in our formula (variant −
    reference) / reference, and the verdicts decided against it."""
    rows = paper_tables()
    rows = rows[rows["table"] == table]
    references = rows.loc[rows["is_reference"] == 1, ["group", "task", "metric", "value"]].rename(
        columns={"value": "paper_reference_value"})
    rows = rows[["group", "model", "task", "metric", "value", "printed_rel_change_pct"]].merge(
        references, on=["group", "task", "metric"], how="left")
    rows = rows.rename(columns={"model": "variant", "value": "paper_value", "printed_rel_change_pct": "paper_change"})
    rows["paper_change_as_ours"] = rows["paper_change"]
    if table in DIVIDED_BY_THE_VARIANT:  # printed = (v − r) / v; ours = (v − r) / r = printed · v / r
        rows["paper_change_as_ours"] = rows["paper_change"] * rows["paper_value"] / rows["paper_reference_value"]
    merged = tidy.drop(columns=["paper_value", "paper_change", "paper_change_as_ours"]).merge(
        rows.drop(columns="paper_reference_value"), on=["group", "variant", "task", "metric"], how="left")
    return decide(merged[tidy.columns])


def paper_better(printed_change: pd.Series, metric: pd.Series) -> pd.Series:
    """Whether the paper's printed change is better for its metric. A printed '-0.00' still carries the paper's
    sign (the unrounded change was negative), so the sign bit decides, not the value."""
    negative = np.signbit(printed_change.to_numpy(float))
    lower = metric.map(lower_is_better).astype(bool).to_numpy()
    better = pd.Series(np.where(lower, negative, ~negative), index=printed_change.index, dtype="boolean")
    return better.mask(printed_change.isna())


def agreement_line(tidy: pd.DataFrame, label: str) -> str:
    """'<label>: direction agrees with the paper in k of n cells (m significant)': a cell agrees when our change
    and the paper's printed change are both better or both worse; m counts agreeing cells significant after Holm
    (the `confirmed` verdicts); cells that could not be computed are left out of n and counted apart. A secondary
    figure: the verdicts say what the cells establish."""
    compared, left_out = counted_cells(tidy[tidy["paper_change"].notna() & (tidy["verdict"] != "")])
    agrees = (compared["better"] == paper_better(compared["paper_change"], compared["metric"])).fillna(False)
    significant = int((agrees & compared["significant"]).sum())
    return (f"{label}: direction agrees with the paper in {int(agrees.sum())} of {len(compared)} cells "
            f"({significant} significant){left_out}")
