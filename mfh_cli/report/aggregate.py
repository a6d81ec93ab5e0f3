"""Seeds → one cell per (group, variant, task): mean, 95% t interval, relative change against the reference with
its paired interval, direction, a paired t-test over seeds and the verdict (SPEC §4, report/verdicts.py). The
result is the one tidy table every output is rendered from."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from mfh_cli.report.collect import ORACLE, StudyResults
from mfh_cli.report.verdicts import ALPHA, FIXED, LOWER_IS_BETTER, SEQUENTIAL, decide, paired_statistics

CONFIDENCE = 1 - ALPHA
SIGNIFICANCE = ALPHA
CELL = ["group", "task", "metric"]
PAIRED_COLUMNS = ["n_pairs", "difference_mean", "difference_sd", "paired_reference_mean"]
TIDY_COLUMNS = ["group", "variant", "task", "metric", "mean", "ci_low", "ci_high", "n_seeds", "relative_change",
                "p_value", "significant", "better", "paper_value", "paper_change", "reason",
                "change_ci_low", "change_ci_high", "p_adjusted", "detectable_change", "seeds_needed", "verdict",
                "n_pairs", "difference_mean", "difference_sd", "paired_reference_mean", "paper_change_as_ours",
                "p_paper", "p_paper_adjusted", "inference"]


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


def summarise(study: StudyResults) -> pd.DataFrame:
    """The tidy table of a study (TIDY_COLUMNS) with verdicts against no paper; `paper.attach_paper` then fills
    the paper columns and decides again."""
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

    cells = cells.join(_paired_cells(runs, cells, study.reference))
    cells["inference"] = SEQUENTIAL if study.sequential else FIXED
    cells["paper_value"] = np.nan
    cells["paper_change"] = np.nan
    cells["paper_change_as_ours"] = np.nan
    missing_seeds = cells["n_runs"] - cells["n_seeds"]
    cells["reason"] = np.where(missing_seeds == 0, "",
                               np.where(cells["n_seeds"] == 0, cells["reason"],
                                        missing_seeds.astype(str) + " of " + cells["n_runs"].astype(str)
                                        + " seeds: " + cells["reason"]))
    return decide(_ordered(cells, study))[TIDY_COLUMNS]


def _first_reason(reasons: pd.Series) -> str:
    return next((reason for reason in reasons if reason), "")


def _paired_cells(runs: pd.DataFrame, cells: pd.DataFrame, reference: str) -> pd.DataFrame:
    """PAIRED_COLUMNS of each non-reference, non-oracle cell against the reference's cell, paired by seed (a seed
    missing on either side is dropped); NaN elsewhere."""
    per_seed = runs.set_index(["variant", *CELL, "seed"])["value"].unstack("seed")
    reference_seeds = per_seed.xs(reference, level="variant")
    paired = pd.DataFrame(np.nan, index=cells.index, columns=PAIRED_COLUMNS)
    for position, row in cells.iterrows():
        if row["variant"] in (reference, ORACLE):
            continue
        key = (row["group"], row["task"], row["metric"])
        variant_values = per_seed.loc[(row["variant"], *key)]
        reference_values = reference_seeds.loc[key]
        both = variant_values.notna() & reference_values.notna()
        statistics = paired_statistics((variant_values - reference_values)[both].to_numpy())
        statistics["paired_reference_mean"] = float(reference_values[both].mean()) if both.any() else np.nan
        paired.loc[position] = pd.Series(statistics)
    return paired


def _ordered(cells: pd.DataFrame, study: StudyResults) -> pd.DataFrame:
    """Groups and tasks in the order runs.csv lists them, variants in the study's row order."""
    orders = {"group": list(dict.fromkeys(study.runs["group"])), "variant": study.variants,
              "task": list(dict.fromkeys(study.runs["task"]))}
    keys = {column: pd.Categorical(cells[column], categories=order, ordered=True) for column, order in orders.items()}
    return cells.assign(**{f"_{column}": key for column, key in keys.items()}).sort_values(
        ["_group", "_variant", "_task"]).reset_index(drop=True)
