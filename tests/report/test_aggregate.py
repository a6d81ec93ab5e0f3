"""Aggregation over seeds against values computed by hand: mean, bounded interval, change, direction, paired test,
small-sample flags."""

from __future__ import annotations

import json
import math
import statistics

import pandas as pd
import pytest

from mfh_cli.report.aggregate import summarise
from mfh_cli.report.collect import read_study

# Student t with 2 degrees of freedom has a closed form: F(t) = 1/2 + t / (2 sqrt(2 + t²)), so the 97.5% quantile
# is a·sqrt(2 / (1 − a²)) with a = 2·0.975 − 1, and the two-sided p of |t| is 1 − |t| / sqrt(2 + t²).
T_975_TWO_DEGREES = 0.95 * math.sqrt(2 / (1 - 0.95**2))


def two_sided_p_two_degrees(t: float) -> float:
    return 1 - abs(t) / math.sqrt(2 + t * t)


REFERENCE_MSE = [0.50, 0.52, 0.51]
FLAT_MSE = [0.53, 0.54, 0.56]  # clearly worse on every seed
REFERENCE_AUC = [0.80, 0.81, 0.79]
FLAT_AUC = [0.801, 0.812, 0.789]  # a hair better on average, not consistently


def _cells(variant: str, task: str, metric: str, values: list[float | None]) -> pd.DataFrame:
    return pd.DataFrame({"variant": variant, "seed": [0, 1, 2], "group": "new", "task": task, "metric": metric,
                         "value": values})


@pytest.fixture
def tidy(write_study, results_dir) -> pd.DataFrame:
    cells = pd.concat([_cells("mfh", "cmpl", "mse", REFERENCE_MSE), _cells("flat", "cmpl", "mse", FLAT_MSE),
                       _cells("mfh", "finish", "auc", REFERENCE_AUC), _cells("flat", "finish", "auc", FLAT_AUC),
                       _cells("oracle", "cmpl", "mse", [0.40, 0.41, 0.39]),
                       _cells("oracle", "finish", "auc", [0.90, 0.91, 0.89])])
    # study.json lists flat before the reference: the table must still put the reference first, the oracle last.
    directory = write_study("toy", cells, reference="mfh", variants=["flat", "mfh"])
    return summarise(read_study(directory)).set_index(["variant", "task"])


def _t_interval_on(values: list[float], forward, backward) -> tuple[float, float]:
    """The 95% t interval (2 degrees of freedom) of the mean of `forward(values)`, mapped back by `backward`."""
    scaled = [forward(value) for value in values]
    half_width = T_975_TWO_DEGREES * statistics.stdev(scaled) / math.sqrt(3)
    return backward(statistics.mean(scaled) - half_width), backward(statistics.mean(scaled) + half_width)


def _logit(value: float) -> float:
    return math.log(value / (1 - value))


def _expit(value: float) -> float:
    return 1 / (1 + math.exp(-value))


def test_mean_and_interval_on_the_metric_scale(tidy):
    row = tidy.loc[("mfh", "cmpl")]
    assert row["mean"] == pytest.approx(0.51)
    # MSE: the t interval of the mean log MSE, mapped back (never below 0).
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(_t_interval_on(REFERENCE_MSE, math.log, math.exp))
    assert row["n_seeds"] == 3
    assert math.isnan(row["relative_change"]) and math.isnan(row["p_value"])
    auc = tidy.loc[("mfh", "finish")]
    assert auc["mean"] == pytest.approx(0.80)
    assert (auc["ci_low"], auc["ci_high"]) == pytest.approx(_t_interval_on(REFERENCE_AUC, _logit, _expit))
    assert auc["ci_low"] < 0.80 < auc["ci_high"]


def test_auc_interval_stays_inside_zero_and_one(write_study, results_dir):
    # Two seeds far apart: a plain t interval (1 degree of freedom) would be 0.75 ± 2.8.
    cells = pd.concat([_cells("mfh", "share", "auc", [0.53, 0.97, None]), _cells("flat", "share", "auc",
                                                                             [0.60, 0.70, None])])
    tidy = summarise(read_study(write_study("wide", cells, reference="mfh", variants=["mfh", "flat"])))
    row = tidy.set_index("variant").loc["mfh"]
    assert 0 < row["ci_low"] < 0.53 and 0.97 < row["ci_high"] < 1


def _write_positives(results_dir, run_id: str, positives: int, rows: int = 500) -> None:
    """The run's metrics.json as the engine writes it for one AUC cell (new users, share)."""
    path = results_dir / "runs" / run_id / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    cell = {"metric": "auc", "value": 0.7, "rows": rows, "positives": positives, "reason": None}
    path.write_text(json.dumps({"metrics": {"test": {"new": {"share": cell}}}}))


def test_too_few_positives_and_an_oracle_below_the_models_are_flagged(write_study, results_dir):
    cells = pd.concat([_cells("mfh", "share", "auc", [0.70, 0.62, 0.66]),
                       _cells("flat", "share", "auc", [0.64, 0.60, 0.61]),
                       _cells("oracle", "share", "auc", [0.65, 0.65, 0.65])])
    # The oracle's rows belong to the reference's runs (studies/execute.py).
    cells["run_id"] = cells["variant"].replace("oracle", "mfh") + "-" + cells["seed"].astype(str)
    directory = write_study("rare", cells, reference="mfh", variants=["mfh", "flat"])
    for seed in range(3):
        for variant in ("mfh", "flat"):
            _write_positives(results_dir, f"{variant}-{seed}", positives=3)
    tidy = summarise(read_study(directory)).set_index("variant")
    assert (tidy["small_sample"] == "too few positives (3 in test)").all()
    assert tidy.loc["oracle", "oracle_below"] == "mfh"  # 0.66 beats the oracle's 0.65; flat's 0.617 does not
    assert (tidy.loc[["mfh", "flat"], "oracle_below"] == "").all()

    for seed in range(3):
        for variant in ("mfh", "flat"):
            _write_positives(results_dir, f"{variant}-{seed}", positives=10 + seed)
    tidy = summarise(read_study(directory)).set_index("variant")
    assert (tidy["small_sample"] == "").all()  # 10 positives (the smallest over seeds) is enough
    _write_positives(results_dir, "mfh-1", positives=495)
    assert summarise(read_study(directory)).set_index("variant").loc["mfh", "small_sample"] == (
        "too few negatives (5 in test)")


def test_relative_change_direction_and_paired_test_for_mse(tidy):
    row = tidy.loc[("flat", "cmpl")]
    differences = [variant - reference for variant, reference in zip(FLAT_MSE, REFERENCE_MSE)]
    t = statistics.mean(differences) / (statistics.stdev(differences) / math.sqrt(3))
    assert row["relative_change"] == pytest.approx((statistics.mean(FLAT_MSE) - 0.51) / 0.51 * 100)
    assert row["better"] == False  # noqa: E712 (pandas boolean) — a higher MSE is worse
    assert row["p_value"] == pytest.approx(two_sided_p_two_degrees(t))
    assert row["significant"] == (two_sided_p_two_degrees(t) < 0.05)


def test_relative_change_direction_and_paired_test_for_auc(tidy):
    row = tidy.loc[("flat", "finish")]
    differences = [variant - reference for variant, reference in zip(FLAT_AUC, REFERENCE_AUC)]
    t = statistics.mean(differences) / (statistics.stdev(differences) / math.sqrt(3))
    assert row["relative_change"] == pytest.approx((statistics.mean(FLAT_AUC) - 0.80) / 0.80 * 100)
    assert row["better"] == True  # noqa: E712 — a higher AUC is better
    assert row["p_value"] == pytest.approx(two_sided_p_two_degrees(t))
    assert not row["significant"]


def test_row_order_and_oracle_is_last_and_never_tested(tidy):
    assert list(dict.fromkeys(tidy.index.get_level_values("variant"))) == ["mfh", "flat", "oracle"]
    oracle = tidy.loc[("oracle", "cmpl")]
    assert math.isnan(oracle["p_value"]) and not oracle["significant"]
    assert oracle["relative_change"] == pytest.approx((0.40 - 0.51) / 0.51 * 100)


def test_missing_seeds_are_counted_and_explained(write_study, results_dir):
    cells = pd.concat([_cells("mfh", "share", "auc", [0.70, 0.72, 0.71]),
                       _cells("flat", "share", "auc", [0.69, None, 0.73]),
                       _cells("hmtl", "share", "auc", [None, None, None])])
    directory = write_study("sparse", cells, reference="mfh", variants=["mfh", "flat", "hmtl"])
    tidy = summarise(read_study(directory)).set_index("variant")

    flat = tidy.loc["flat"]
    assert flat["n_seeds"] == 2 and flat["mean"] == pytest.approx(0.71)
    assert flat["reason"] == "1 of 3 seeds: not computable"
    # Paired on the two seeds both have: differences -0.01 and +0.02.
    t = statistics.mean([-0.01, 0.02]) / (statistics.stdev([-0.01, 0.02]) / math.sqrt(2))
    assert flat["p_value"] == pytest.approx(1 - 2 * math.atan(abs(t)) / math.pi)  # t, 1 dof = Cauchy
    hmtl = tidy.loc["hmtl"]
    assert hmtl["n_seeds"] == 0 and math.isnan(hmtl["mean"]) and math.isnan(hmtl["p_value"])
    assert hmtl["reason"] == "not computable"


def test_an_mse_cell_of_few_test_rows_says_so():
    from mfh_cli.report.aggregate import MIN_CELL_ROWS, small_sample

    assert small_sample("mse", math.nan, math.nan, MIN_CELL_ROWS - 1) == f"too few rows ({MIN_CELL_ROWS - 1} in test)"
    assert small_sample("mse", math.nan, math.nan, MIN_CELL_ROWS) == small_sample("mse", math.nan, math.nan) == ""
    assert small_sample("auc", 50, 50, 5) == ""  # a class-count metric goes by its classes
