"""Where the seed-to-seed spread comes from, and which training recipe cuts it: one study (Table 1 by default) under
several recipes on the same seeds, one dataset at a time.

A recipe is a list of overrides (RECIPES; `--recipes` picks some, `--recipe NAME=override,override` adds one). Each
runs `mfh ablate --study <study> --seeds <n>` through the library (finished runs are reused, so a rerun resumes);
every recipe's runs.csv is kept in `<results>/bench_noise/<study>/<dataset>/<recipe>.csv`. For each recipe it
prints, per compared variant against the study's reference:
- spread: the median over the table's cells of the paired per-seed spread, sd over seeds of (variant − reference)
  in a cell divided by the reference's mean there, in % (what the seeds needed grow with, squared);
- pooled spread: the sd over seeds of the per-seed pooled change (the mean sign-aligned relative change over the
  cells, SPEC §4's table verdict), and the pooled change itself with its 95% t interval;
- the mean test AUC over the AUC cells and the mean MSE over the MSE cells of the reference (does the recipe train
  better?);
- against the first recipe (the authors' training): the ratio of the spreads and the seeds-needed factor it implies
  (the square of the spread ratio);
- the noise budget (report/noise.py) where the runs kept their test predictions: the median over cells of the test
  share (a fresh test set's variance of one seed's difference / the seed-to-seed variance) and of the training's
  own share (Jordan 2024's distribution-level part / the seed-to-seed variance).

Run: python -m benchmarks.bench_noise [--data synthetic|kuairand] [--study multifaceted] [--seeds 8] [--jobs 2]
[--recipes authors low_noise ...] [--record]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from benchmarks.common import record
from mfh_cli.report.collect import StudyResults
from mfh_cli.report.noise import noise_budget
from mfh_cli.studies.execute import ablate
from mfh_cli.studies.spec import load_study
from mfh_cli.tasks import PRIMARY, lower_is_better

# One thing switched at a time against the authors' training (the first entry is the baseline every ratio is
# against), then the adopted default (docs/results/recipes.md). Named explicitly: the default recipe may change.
RECIPES: dict[str, list[str]] = {
    "authors": ["recipe=authors"],
    "no_batch_norm": ["recipe=authors", "model.dense.batch_norm=none"],
    "torch_batch_norm": ["recipe=authors", "model.dense.batch_norm=torch"],
    "precise_batch_norm": ["recipe=authors", "trainer.precise_bn_batches=100"],
    "weight_averaging": ["recipe=authors", "trainer.ema_decay=0.998"],
    "fixed_epochs": ["recipe=authors", "trainer.selection=last"],
    "low_noise": ["recipe=low_noise"],
}


def run_recipe(study: str, seeds: int, jobs: int, overrides: list[str], results: Path) -> pd.DataFrame:
    """The study's runs.csv (test split, primary metrics) after `mfh ablate` with `overrides`."""
    outcome = ablate([study], seeds=seeds, jobs=jobs, overrides=overrides, results_dir=results, quiet=True)
    return pd.read_csv(outcome[0].directory / "runs.csv")


def primary_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Test values of each run's primary metric per cell: columns variant, seed, group, task, metric, value."""
    primary = set(PRIMARY.values())
    test = runs[(runs["split"] == "test") & runs["metric"].isin(primary) & (runs["variant"] != "oracle")]
    return test[["variant", "seed", "group", "task", "metric", "value"]]


def paired_changes(cells: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per variant, seed and cell: the sign-aligned relative change against the reference's same seed (positive =
    better, SPEC §4's pooled convention) and the raw difference, with the reference's value."""
    ref = cells[cells["variant"] == reference].rename(columns={"value": "reference"}).drop(columns="variant")
    merged = cells[cells["variant"] != reference].merge(ref, on=["seed", "group", "task", "metric"])
    merged["difference"] = merged["value"] - merged["reference"]
    sign = np.where(merged["metric"].map(lower_is_better), -1.0, 1.0)
    merged["aligned_change"] = sign * merged["difference"] / merged["reference"] * 100
    return merged


def summarise_recipe(cells: pd.DataFrame, reference: str) -> pd.DataFrame:
    """One row per compared variant: the median per-cell spread, the pooled spread and change, and the
    reference's mean test AUC and MSE."""
    changes = paired_changes(cells, reference)
    rows = []
    for variant, per_variant in changes.groupby("variant", sort=False):
        per_cell = per_variant.groupby(["group", "task", "metric"]).agg(
            sd=("difference", "std"), reference=("reference", "mean"))
        spread = (per_cell["sd"] / per_cell["reference"].abs() * 100)
        pooled = per_variant.groupby("seed")["aligned_change"].mean()
        n = len(pooled)
        half = stats.t.ppf(0.975, n - 1) * pooled.std() / np.sqrt(n) if n > 1 else np.nan
        rows.append({"variant": variant, "seeds": n, "cell_spread": float(spread.median()),
                     "pooled_spread": float(pooled.std()), "pooled_change": float(pooled.mean()),
                     "pooled_low": float(pooled.mean() - half), "pooled_high": float(pooled.mean() + half),
                     "cells": spread.rename("spread").reset_index()})
    references = cells[cells["variant"] == reference]
    for row in rows:
        row["reference_auc"] = float(references.loc[references["metric"] == "auc", "value"].mean())
        row["reference_mse"] = float(references.loc[references["metric"] == "mse", "value"].mean())
    return pd.DataFrame(rows)


def budget_medians(runs: pd.DataFrame, reference: str, results: Path) -> pd.DataFrame:
    """Per compared variant, the median test share and training share of the noise budget over the cells with
    predictions on both sides (NaN without)."""
    test = runs[(runs["split"] == "test") & (runs["variant"] != "oracle")]
    variants = [reference, *[name for name in dict.fromkeys(test["variant"]) if name != reference]]
    study = StudyResults({"study": "bench", "reference": reference, "variants": variants, "dataset": ""}, test,
                         results)
    budget = noise_budget(study, results)
    if budget.empty:
        return pd.DataFrame({"variant": variants[1:], "test_share": np.nan, "training_share": np.nan})
    return budget.groupby("variant", sort=False)[["test_share", "training_share"]].median().reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic", choices=["synthetic", "kuairand"])
    parser.add_argument("--study", default="multifaceted")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    parser.add_argument("--recipe", action="append", default=[], metavar="NAME=OVERRIDE,OVERRIDE",
                        help="another recipe, e.g. no_bn_fixed=model.dense.batch_norm=none,trainer.selection=last")
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--record", action="store_true")
    arguments = parser.parse_args()
    recipes = {name: RECIPES[name] for name in arguments.recipes}
    for extra in arguments.recipe:
        name, _, overrides = extra.partition("=")
        recipes[name] = [item for item in overrides.split(",") if item]
    reference = load_study(arguments.study).reference
    kept = arguments.results_dir / "bench_noise" / arguments.study / arguments.data
    kept.mkdir(parents=True, exist_ok=True)
    summaries, lines = {}, []
    for name, overrides in recipes.items():
        started = time.perf_counter()
        runs = run_recipe(arguments.study, arguments.seeds, arguments.jobs, [f"data={arguments.data}", *overrides],
                          arguments.results_dir)
        runs.to_csv(kept / f"{name}.csv", index=False)
        summaries[name] = summarise_recipe(primary_cells(runs), reference).merge(
            budget_medians(runs, reference, arguments.results_dir), on="variant", how="left")
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    baseline = next(iter(summaries))
    lines.append(f"`python -m benchmarks.bench_noise --data {arguments.data} --study {arguments.study} --seeds "
                 f"{arguments.seeds}` (the same seeds 0-{arguments.seeds - 1} under every recipe; spread = median "
                 f"over cells of sd over seeds of (variant − {reference}) / {reference} × 100; pooled = the per-seed "
                 f"mean sign-aligned change over the cells, + = the variant better):")
    lines.append("")
    lines.append("| recipe | overrides | variant | cell spread | × fewer seeds | pooled spread | pooled change "
                 f"[95%] | {reference} AUC | {reference} MSE | test share | training share |")
    lines.append("|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for name, summary in summaries.items():
        for row in summary.itertuples(index=False):
            base = summaries[baseline].set_index("variant").loc[row.variant]
            ratio = base["cell_spread"] / row.cell_spread
            lines.append(f"| {name} | {' '.join(recipes[name]) or '—'} | {row.variant} | {row.cell_spread:.2f}% "
                         f"({ratio:.1f}× lower) | {ratio ** 2:.1f} | {row.pooled_spread:.2f}% | "
                         f"{row.pooled_change:+.2f}% [{row.pooled_low:+.2f}, {row.pooled_high:+.2f}] | "
                         f"{row.reference_auc:.4f} | {row.reference_mse:.5f} | {_share(row.test_share)} | "
                         f"{_share(row.training_share)} |")
    record(f"Noise: where the seed-to-seed spread comes from ({arguments.data}, {arguments.study}, "
           f"{arguments.seeds} seeds)", lines, quick=not arguments.record)


def _share(value: float) -> str:
    return "—" if value != value else f"{value:.0%}"


if __name__ == "__main__":
    main()
