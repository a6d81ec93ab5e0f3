"""Seeds → one cell per (group, variant, task): mean, 95% t interval, relative change against the reference,
direction and a paired t-test over seeds (SPEC §4). The result is the one tidy table every output is rendered from."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from mfh_cli.report.collect import ORACLE, StudyResults

CONFIDENCE = 0.95
SIGNIFICANCE = 0.05
LOWER_IS_BETTER = {"mse": True, "auc": False}
CELL = ["group", "task", "metric"]
TIDY_COLUMNS = ["group", "variant", "task", "metric", "mean", "ci_low", "ci_high", "n_seeds", "relative_change",
                "p_value", "significant", "better", "paper_value", "paper_change", "reason"]


def relative_change(value: np.ndarray | float, reference: np.ndarray | float) -> np.ndarray:
    """(value − reference) / reference × 100, elementwise (SPEC §4)."""
    value, reference = np.asarray(value, dtype=float), np.asarray(reference, dtype=float)
    return (value - reference) / reference * 100


def better_direction(change: pd.Series, metric: pd.Series) -> pd.Series:
    """True where a change is better for its metric (lower MSE, higher AUC), False where worse, NA where none."""
    lower_is_better = metric.map(LOWER_IS_BETTER).astype(bool)
    better = pd.Series(np.where(lower_is_better, change < 0, change > 0), index=change.index, dtype="boolean")
    return better.mask(change.isna() | (change == 0))


def t_interval(mean: pd.Series, std: pd.Series, count: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The 95% t interval of a mean over `count` seeds (sample std); NaN with fewer than two seeds."""
    degrees = (count - 1).where(count >= 2)
    half_width = stats.t.ppf(0.5 + CONFIDENCE / 2, degrees) * std / np.sqrt(count)
    return mean - half_width, mean + half_width


def paired_p_values(variant: pd.DataFrame, reference: pd.DataFrame) -> np.ndarray:
    """Two-sided paired t-test (scipy ttest_rel) per row of two [cells, seeds] frames, pairs with a NaN dropped;
    NaN where fewer than two pairs remain or the differences have no spread and no mean."""
    variant, reference = variant.align(reference, join="left")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # too few pairs / zero spread: scipy warns and returns NaN, which we keep
        result = stats.ttest_rel(variant.to_numpy(float), reference.to_numpy(float), axis=1, nan_policy="omit")
    return np.asarray(result.pvalue, dtype=float)


def summarise(study: StudyResults) -> pd.DataFrame:
    """The tidy table of a study (TIDY_COLUMNS); paper columns are left empty for `paper.attach_paper`."""
    runs = study.runs
    cells = (runs.groupby(["group", "variant", "task", "metric"], sort=False)
             .agg(mean=("value", "mean"), std=("value", "std"), n_seeds=("value", "count"),
                  n_runs=("value", "size"), reason=("reason", _first_reason))
             .reset_index())
    cells["ci_low"], cells["ci_high"] = t_interval(cells["mean"], cells["std"], cells["n_seeds"])

    reference_means = (cells.loc[cells["variant"] == study.reference, CELL + ["mean"]]
                       .rename(columns={"mean": "reference_mean"}))
    cells = cells.merge(reference_means, on=CELL, how="left")
    is_reference = cells["variant"] == study.reference
    cells["relative_change"] = pd.Series(relative_change(cells["mean"], cells["reference_mean"])).mask(is_reference)
    cells["better"] = better_direction(cells["relative_change"], cells["metric"])

    cells["p_value"] = _paired_tests(runs, cells, study.reference)
    cells["significant"] = cells["p_value"] < SIGNIFICANCE
    cells["paper_value"] = np.nan
    cells["paper_change"] = np.nan
    missing_seeds = cells["n_runs"] - cells["n_seeds"]
    cells["reason"] = np.where(missing_seeds == 0, "",
                               np.where(cells["n_seeds"] == 0, cells["reason"],
                                        missing_seeds.astype(str) + " of " + cells["n_runs"].astype(str)
                                        + " seeds: " + cells["reason"]))
    return _ordered(cells, study)[TIDY_COLUMNS]


def _first_reason(reasons: pd.Series) -> str:
    return next((reason for reason in reasons if reason), "")


def _paired_tests(runs: pd.DataFrame, cells: pd.DataFrame, reference: str) -> pd.Series:
    """p of each non-reference, non-oracle cell against the reference's cell, paired by seed."""
    per_seed = runs.set_index(["variant", *CELL, "seed"])["value"].unstack("seed")
    reference_seeds = per_seed.xs(reference, level="variant")
    p_values = pd.Series(np.nan, index=cells.index)
    for variant in cells["variant"].unique():
        if variant in (reference, ORACLE):
            continue
        variant_seeds = per_seed.xs(variant, level="variant")
        tested = pd.Series(paired_p_values(variant_seeds, reference_seeds), index=variant_seeds.index)
        rows = cells["variant"] == variant
        p_values[rows] = tested.reindex(pd.MultiIndex.from_frame(cells.loc[rows, CELL])).to_numpy()
    return p_values


def _ordered(cells: pd.DataFrame, study: StudyResults) -> pd.DataFrame:
    """Groups and tasks in the order runs.csv lists them, variants in the study's row order."""
    orders = {"group": list(dict.fromkeys(study.runs["group"])), "variant": study.variants,
              "task": list(dict.fromkeys(study.runs["task"]))}
    keys = {column: pd.Categorical(cells[column], categories=order, ordered=True) for column, order in orders.items()}
    return cells.assign(**{f"_{column}": key for column, key in keys.items()}).sort_values(
        ["_group", "_variant", "_task"]).reset_index(drop=True)
