"""The verdict per table (report/pooled.py): the per-seed pooled change computed by hand, its interval and test,
Holm over the variants, each metric's cells apart, the paper's pooled change, cells that could not be computed."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mfh_cli.report.aggregate import summarise
from mfh_cli.report.collect import read_study
from mfh_cli.report.pooled import ALL_CELLS, pooled_line, pooled_verdicts
from mfh_cli.report.verdicts import ALPHA, holm

SEEDS = 6
GROUPS = ("new", "low", "high")
TASKS = (("cmpl", "mse"), ("finish", "auc"), ("skip", "auc"))


def _values(base: float, change: float, noise: float, generator: np.random.Generator) -> np.ndarray:
    return base * (1 + change / 100) * (1 + noise / 100 * generator.standard_normal(SEEDS))


def cells_frame(changes: dict[str, tuple[float, float]], noise: float = 0.3, seed: int = 0) -> pd.DataFrame:
    """Per variant: (change of every AUC in %, change of every MSE in %) against the reference `mfh`, raw, with
    independent per-seed noise of `noise` % around it."""
    generator = np.random.default_rng(seed)
    frames = []
    for variant, (auc_change, mse_change) in {"mfh": (0.0, 0.0), **changes}.items():
        for group in GROUPS:
            for task, metric in TASKS:
                base, change = (0.05, mse_change) if metric == "mse" else (0.70, auc_change)
                frames.append(pd.DataFrame({"variant": variant, "seed": range(SEEDS), "group": group, "task": task,
                                            "metric": metric, "value": _values(base, change, noise, generator)}))
    return pd.concat(frames, ignore_index=True)


def judge(write_study, cells: pd.DataFrame, variants: list[str]):
    study = read_study(write_study("pooled", cells, reference="mfh", variants=["mfh", *variants]))
    tidy = summarise(study)
    return study, tidy, pooled_verdicts(study, tidy).set_index(["variant", "scope"])


def test_the_pooled_change_is_the_per_seed_mean_of_sign_aligned_changes(write_study):
    cells = cells_frame({"hmtl": (-1.0, 4.0)})  # AUC 1% lower, MSE 4% higher: worse on both
    study, _, pooled = judge(write_study, cells, ["hmtl"])
    wide = cells.pivot_table(index=["group", "task", "metric", "seed"], columns="variant", values="value")
    aligned = (wide["hmtl"] - wide["mfh"]) / wide["mfh"] * 100
    aligned[aligned.index.get_level_values("metric") == "mse"] *= -1  # lower MSE is better
    per_seed = aligned.groupby("seed").mean()
    row = pooled.loc[("hmtl", ALL_CELLS)]
    assert row["relative_change"] == pytest.approx(per_seed.mean())
    assert row["relative_change"] == pytest.approx((-1.0 * 6 - 4.0 * 3) / 9, abs=0.3)
    half = stats.t.ppf(0.975, SEEDS - 1) * per_seed.std(ddof=1) / math.sqrt(SEEDS)
    assert (row["change_ci_low"], row["change_ci_high"]) == pytest.approx((per_seed.mean() - half,
                                                                          per_seed.mean() + half))
    assert row["p_value"] == pytest.approx(stats.ttest_1samp(per_seed, 0).pvalue)
    assert row["verdict"] == "worse" and row["share_improved"] < 0.2
    assert (row["cells"], row["cells_total"], row["n_seeds"]) == (9, 9, SEEDS)
    # Each metric's cells apart: the MSE change does not swamp the AUC one.
    assert pooled.loc[("hmtl", "AUC cells"), "relative_change"] == pytest.approx(-1.0, abs=0.3)
    assert pooled.loc[("hmtl", "MSE cells"), "relative_change"] == pytest.approx(-4.0, abs=0.3)


def test_pooling_decides_what_no_single_cell_can(write_study):
    """A 1% change everywhere under 1.5% per-seed noise: no cell is decided after Holm over 9 cells, the table
    as a whole is (its per-seed mean averages the cells' independent noise)."""
    cells = cells_frame({"flat": (1.0, -1.0)}, noise=1.5, seed=3)
    _, tidy, pooled = judge(write_study, cells, ["flat"])
    assert not tidy["verdict"].isin(["better", "worse"]).any()
    assert pooled.loc[("flat", ALL_CELLS), "verdict"] == "better"


def test_holm_runs_over_the_table_variants_and_the_line_says_how_many(write_study):
    cells = cells_frame({"hmtl": (-1.0, 1.0), "flat": (0.0, 0.0)}, noise=1.0, seed=5)
    _, _, pooled = judge(write_study, cells, ["hmtl", "flat"])
    scope = pooled.xs(ALL_CELLS, level="scope")
    assert scope["p_adjusted"].to_numpy() == pytest.approx(holm(scope["p_value"]).to_numpy())
    assert scope.loc["hmtl", "verdict"] == "worse" and scope.loc["flat", "verdict"] == "no difference shown"
    line = pooled_line(pooled.reset_index(), "Table X (synthetic)")
    assert line.startswith(f"Table X (synthetic) as a whole (all cells), {SEEDS} seeds: hmtl worse (")
    assert "over 9 of 9 cells" in line and line.endswith(f"(+ = better than the reference; Holm over 2 variants, "
                                                         f"α = {ALPHA:g})")


def test_against_the_paper_the_pooled_paper_change_is_the_mean_of_its_aligned_cells(write_study):
    cells = cells_frame({"hmtl": (0.0, 0.0)}, noise=0.02, seed=1)
    study, tidy, _ = judge(write_study, cells, ["hmtl"])
    paper = {"auc": -0.2, "mse": 0.3}  # worse on both, in our formula
    tidy["paper_change_as_ours"] = tidy["metric"].map(paper).where(tidy["variant"] == "hmtl")
    pooled = pooled_verdicts(study, tidy).set_index(["variant", "scope"])
    assert pooled.loc[("hmtl", ALL_CELLS), "paper_change_as_ours"] == pytest.approx((-0.2 * 6 - 0.3 * 3) / 9)
    assert pooled.loc[("hmtl", "AUC cells"), "paper_change_as_ours"] == pytest.approx(-0.2)
    assert pooled.loc[("hmtl", ALL_CELLS), "verdict"] == "smaller"  # no change shown; the paper's ruled out


def test_cells_that_could_not_be_computed_are_left_out_and_counted(write_study):
    cells = cells_frame({"hmtl": (-1.0, 4.0)})
    cells.loc[cells["group"] == "new", "value"] = None  # no rows of new users in the test split
    _, _, pooled = judge(write_study, cells, ["hmtl"])
    row = pooled.loc[("hmtl", ALL_CELLS)]
    assert (row["cells"], row["cells_total"]) == (6, 9)
    assert row["relative_change"] == pytest.approx((-1.0 * 4 - 4.0 * 2) / 6, abs=0.3)
