"""Seeds → one cell per (group, variant, task): mean, 95% interval (on the scale where the metric is unbounded),
relative change against the reference with its paired interval, direction, a paired t-test over seeds, the verdict
(SPEC §4, report/verdicts.py) and the small-sample flags. The result is the one tidy table every output is rendered
from (docs/statistics.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from mfh_cli.report.collect import ORACLE, StudyResults
from mfh_cli.report.verdicts import ALPHA, FIXED, SEQUENTIAL, decide, paired_statistics
from mfh_cli.tasks import SCALES, lower_is_better, metric

CONFIDENCE = 1 - ALPHA
CELL = ["group", "task", "metric"]
PAIRED_COLUMNS = ["n_pairs", "difference_mean", "difference_sd", "paired_reference_mean"]
TIDY_COLUMNS = ["group", "variant", "task", "metric", "mean", "ci_low", "ci_high", "n_seeds", "relative_change",
                "p_value", "significant", "better", "paper_value", "paper_change", "reason", "small_sample",
                "oracle_below",
                "change_ci_low", "change_ci_high", "p_adjusted", "detectable_change", "seeds_needed", "verdict",
                "n_pairs", "difference_mean", "difference_sd", "paired_reference_mean", "paper_change_as_ours",
                "p_paper", "p_paper_adjusted", "inference"]


# An AUC cell whose test rows hold fewer positives (or negatives) than this prints no number: with k positives one
# row moves the AUC by up to 1/k, more than 0.1 below 10, larger than any effect the tables ask about.
MIN_CLASS_ROWS = 10
# Any other cell (an MSE) over fewer test rows than this prints no number either: the small cells of a grid split by
# a third facet (a rare scenario of a rare user group) can hold a few dozen rows.
MIN_CELL_ROWS = 30


def _scale(name: str) -> tuple:
    """(forward, backward) of metric `name`'s unbounded scale (tasks.SCALES: AUC in (0, 1): logit; MSE above 0:
    log). A cell's interval is the t interval of the mean there, mapped back: it never leaves what the metric can
    take."""
    return SCALES[metric(name).scale]


def to_unbounded(values: pd.Series, metrics: pd.Series) -> pd.Series:
    """Each value on its metric's unbounded scale; NaN for a value on or beyond the metric's bounds."""
    scaled = pd.Series(np.nan, index=values.index)
    for name in metrics.unique():
        rows = metrics == name
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled[rows] = _scale(name)[0](values[rows].to_numpy(float))
    return scaled.where(np.isfinite(scaled))


def bounded_interval(scaled_mean: pd.Series, scaled_std: pd.Series, count: pd.Series,
                     metrics: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The 95% interval of a cell's mean: the t interval on the metric's unbounded scale, mapped back."""
    low, high = t_interval(scaled_mean, scaled_std, count)
    for name in metrics.unique():
        rows = metrics == name
        backward = _scale(name)[1]
        low[rows], high[rows] = backward(low[rows].to_numpy(float)), backward(high[rows].to_numpy(float))
    return low, high


def relative_change(value: np.ndarray | float, reference: np.ndarray | float) -> np.ndarray:
    """(value − reference) / reference × 100, elementwise (SPEC §4)."""
    value, reference = np.asarray(value, dtype=float), np.asarray(reference, dtype=float)
    return (value - reference) / reference * 100


def better_direction(change: pd.Series, metrics: pd.Series) -> pd.Series:
    """True where a change is better for its metric (lower MSE, higher AUC), False where worse, NA where none."""
    lower = metrics.map(lower_is_better).astype(bool)
    better = pd.Series(np.where(lower, change < 0, change > 0), index=change.index, dtype="boolean")
    return better.mask(change.isna() | (change == 0))


def t_interval(mean: pd.Series, std: pd.Series, count: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The 95% t interval of a mean over `count` seeds (sample std); NaN with fewer than two seeds."""
    degrees = (count - 1).where(count >= 2)
    half_width = stats.t.ppf(0.5 + CONFIDENCE / 2, degrees) * std / np.sqrt(count)
    return mean - half_width, mean + half_width


def summarise(study: StudyResults) -> pd.DataFrame:
    """The tidy table of a study (TIDY_COLUMNS) with verdicts against no paper; `paper.attach_paper` then fills
    the paper columns and decides again."""
    runs = study.runs.assign(scaled=lambda frame: to_unbounded(frame["value"], frame["metric"]))
    cells = (runs.groupby(["group", "variant", "task", "metric"], sort=False)
             .agg(mean=("value", "mean"), n_seeds=("value", "count"), n_runs=("value", "size"),
                  reason=("reason", _first_reason), scaled_mean=("scaled", "mean"), scaled_std=("scaled", "std"),
                  n_scaled=("scaled", "count"), positives=("positives", "min"), negatives=("negatives", "min"),
                  rows=("rows", "min"))
             .reset_index())
    # A seed whose value sits on the metric's bound has no place on the unbounded scale: no interval then.
    scaled_std = cells["scaled_std"].where(cells["n_scaled"] == cells["n_seeds"])
    cells["ci_low"], cells["ci_high"] = bounded_interval(cells["scaled_mean"], scaled_std, cells["n_seeds"],
                                                         cells["metric"])
    # A cell without a value says why in its reason; the small-sample flag is for values resting on few rows.
    cells["small_sample"] = [small_sample(metric, positives, negatives, rows) if seeds else ""
                             for metric, positives, negatives, rows, seeds in
                             zip(cells["metric"], cells["positives"], cells["negatives"], cells["rows"],
                                 cells["n_seeds"])]
    cells["oracle_below"] = oracle_below(cells)

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
    # A compared cell with no pair (n_pairs 0) but values of its own: the reference's cell is the one missing.
    reference_reasons = cells.loc[is_reference, CELL + ["reason"]].rename(columns={"reason": "reference_reason"})
    cells = cells.merge(reference_reasons, on=CELL, how="left")
    no_pair = (cells["n_pairs"] == 0) & (cells["reason"] == "")
    cells.loc[no_pair, "reason"] = f"{study.reference}: " + cells.loc[no_pair, "reference_reason"].fillna("")
    return decide(_ordered(cells, study))[TIDY_COLUMNS]


def small_sample(name: str, positives: float, negatives: float, rows: float = float("nan")) -> str:
    """'too few positives (k in test)' (or negatives) for a cell of a metric resting on both classes (AUC, gAUC:
    tasks.Metric.class_counts) below MIN_CLASS_ROWS of a class; 'too few rows (k in test)' for another metric's
    cell below MIN_CELL_ROWS rows; else ''."""
    if not metric(name).class_counts:
        return f"too few rows ({int(rows)} in test)" if rows < MIN_CELL_ROWS else ""  # NaN compares False
    for name, count in (("positives", positives), ("negatives", negatives)):
        if count < MIN_CLASS_ROWS:  # NaN (not recorded) compares False
            return f"too few {name} ({int(count)} in test)"
    return ""


def oracle_below(cells: pd.DataFrame) -> pd.Series:
    """On the oracle's rows, the variants whose mean beats the oracle's in that cell (comma-separated, else ''):
    the true expectations cannot be beaten, so this is the test rows' small-sample noise."""
    flags = pd.Series("", index=cells.index)
    models = cells[cells["variant"] != ORACLE]
    for position, oracle in cells[cells["variant"] == ORACLE].iterrows():
        same = models[(models[CELL] == oracle[CELL]).all(axis=1)]
        beats = same["mean"] < oracle["mean"] if lower_is_better(oracle["metric"]) else same["mean"] > oracle["mean"]
        flags[position] = ", ".join(same.loc[beats, "variant"])
    return flags


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
