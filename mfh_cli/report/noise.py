"""The noise budget of a table's cells (docs/statistics.md "Noise budget"): how much of the seed-to-seed spread of
a paired difference is the finite test set's, and how much the training's own.

For one cell (a user group × behaviour) and a variant against the reference, seed s gives the paired difference
d_s = metric(variant_s) − metric(reference_s) on the same test rows. Three variances:
- V_seed: the variance of d_s over the seeds (what the verdicts' intervals rest on);
- V_test: the test-set sampling variance of one seed's d_s, the variance a fresh draw of the test rows would give
  it: DeLong's variance of a difference of two correlated AUCs (placement values, O(n log n); DeLong, DeLong &
  Clarke-Pearson 1988; Sun & Xu 2014), and for MSE a bootstrap over the cell's test users (a user's rows are drawn
  together, as they are not independent), averaged over the seeds;
- V_dist: the part of V_seed that more test rows would not remove, the training's own (Jordan 2024, "On the variance
  of neural network training with respect to test sets and distributions"): d_s is a sum of per-unit terms (a
  user's squared-error difference for MSE, a row's placement-value difference for AUC); their variance over seeds,
  summed, is what the finite rows add to V_seed, and V_dist = V_seed minus that (corrected for the seed shift each
  term also carries), clipped at 0.
V_test is not a share of V_seed: it measures a source V_seed does not contain (the rows are fixed across seeds),
so V_test / V_seed exceeds 100% when the training barely varies but the test set is small. V_dist / V_seed is a
share: the rest of V_seed is the finite test rows' interaction with the seed.

Reads each run's `predictions.npz` and the shared test rows (mfh_cli/predictions.py); runs made before they were
kept are left out, and a cell needs two seeds with predictions on both sides. Never imports torch.
Shape letters: S seeds, R rows (or users) of a cell, U users.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mfh_cli.predictions import read_predictions, read_test_rows
from mfh_cli.report.collect import ORACLE, StudyResults
from mfh_cli.tasks import PRIMARY

BOOTSTRAP_DRAWS = 200
NOISE_COLUMNS = ["noise_seeds", "var_seed", "var_test", "var_distribution", "test_share", "training_share"]


def midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, ties given their average rank (O(n log n))."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    ends = np.append(np.flatnonzero(ordered[1:] != ordered[:-1]) + 1, ordered.size)  # tie blocks
    starts = np.concatenate(([0], ends[:-1]))
    average = (starts + 1 + ends) / 2
    ranks = np.empty(values.size)
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def placement_values(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components: V10 [m] per positive, the share of negatives it outranks (ties count a
    half), and V01 [n] per negative, the share of positives that outrank it; AUC = mean V10 = mean V01."""
    positives, negatives = scores[positive], scores[~positive]
    m, n = positives.size, negatives.size
    all_ranks = midranks(np.concatenate([positives, negatives]))
    v10 = (all_ranks[:m] - midranks(positives)) / n
    v01 = 1.0 - (all_ranks[m:] - midranks(negatives)) / m
    return v10, v01


def auc_difference_variance(scores_a: np.ndarray, scores_b: np.ndarray, positive: np.ndarray) -> float:
    """DeLong's variance of AUC(a) − AUC(b) on the same rows: var(ΔV10)/m + var(ΔV01)/n."""
    a10, a01 = placement_values(scores_a, positive)
    b10, b01 = placement_values(scores_b, positive)
    return float(np.var(a10 - b10, ddof=1) / a10.size + np.var(a01 - b01, ddof=1) / a01.size)


def user_sums(values: np.ndarray, user: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per user of the rows: the sum of `values` and the row count (users in first-seen order are irrelevant)."""
    _, index = np.unique(user, return_inverse=True)
    return np.bincount(index, weights=values), np.bincount(index).astype(float)


def bootstrap_mean_variance(values: np.ndarray, user: np.ndarray, draws: int = BOOTSTRAP_DRAWS,
                            seed: int = 0) -> float:
    """The variance of the mean of `values` over bootstrap redraws of the users (each user's rows drawn together,
    Poisson(1) weights per user, seeded: the same rows give the same figure)."""
    sums, counts = user_sums(values, user)
    weights = np.random.default_rng(seed).poisson(1.0, size=(draws, sums.size)).astype(float)
    rows = weights @ counts
    kept = rows > 0
    return float(np.var((weights @ sums)[kept] / rows[kept], ddof=1))


def cell_budget(metric: str, outputs_variant: list[np.ndarray], outputs_reference: list[np.ndarray],
                labels: np.ndarray, user: np.ndarray) -> dict:
    """The three variances of one cell from each paired seed's outputs on the cell's rows (lists of [R]) and the
    rows' labels [R] and users [R]; NaN where they cannot be formed (fewer than 2 seeds, one class)."""
    seeds = len(outputs_variant)
    empty = {"noise_seeds": seeds, "var_seed": np.nan, "var_test": np.nan, "var_distribution": np.nan}
    if seeds < 2 or labels.size < 2:
        return empty
    if metric == "auc":
        positive = labels > 0.5
        m, n = int(positive.sum()), int((~positive).sum())
        if m < 2 or n < 2:
            return empty
        differences, tests, terms = [], [], []
        for variant, reference in zip(outputs_variant, outputs_reference):
            v10, v01 = placement_values(variant, positive)
            r10, r01 = placement_values(reference, positive)
            differences.append(float(v10.mean() - r10.mean()))
            tests.append(float(np.var(v10 - r10, ddof=1) / m + np.var(v01 - r01, ddof=1) / n))
            # [R]: each row's term of ΔAUC's first-order (Hoeffding) expansion, as in DeLong's variance
            terms.append(np.concatenate([(v10 - r10) / m, (v01 - r01) / n]))
        # Every positive's term carries the seed's shift δ_s with weight 1/m, every negative's with 1/n: summed
        # over the rows, their variances over the seeds hold var(δ)·(1/m + 1/n) of it.
        shift_weight = 1 / m + 1 / n
        row_variance = float(np.var(np.stack(terms), axis=0, ddof=1).sum())
    else:  # regression: MSE
        differences, tests, terms = [], [], []
        for variant, reference in zip(outputs_variant, outputs_reference):
            squared = (variant.astype(np.float64) - labels) ** 2 - (reference.astype(np.float64) - labels) ** 2
            differences.append(float(squared.mean()))
            tests.append(bootstrap_mean_variance(squared, user))
            sums, counts = user_sums(squared, user)
            terms.append(sums / labels.size)  # [U]: Σ = ΔMSE
        shift_weight = float((counts ** 2).sum() / labels.size ** 2)  # a user's term carries its rows' share of δ
        row_variance = float(np.var(np.stack(terms), axis=0, ddof=1).sum())
    seed_variance = float(np.var(differences, ddof=1))
    distribution = max(0.0, (seed_variance - row_variance) / (1 - shift_weight)) if shift_weight < 1 else np.nan
    return {"noise_seeds": seeds, "var_seed": seed_variance, "var_test": float(np.mean(tests)),
            "var_distribution": min(distribution, seed_variance)}


def noise_budget(study: StudyResults, results_dir: Path) -> pd.DataFrame:
    """NOISE_COLUMNS per compared variant and cell (group, task, metric: the primary metric of each behaviour),
    from the test predictions of the seeds both sides kept; empty when no pair of runs kept them."""
    runs = study.runs[study.runs["variant"] != ORACLE].drop_duplicates(["variant", "seed"])[["variant", "seed",
                                                                                            "run_id"]]
    predictions = {(row.variant, row.seed): read_predictions(Path(results_dir) / "runs" / row.run_id)
                   for row in runs.itertuples(index=False)}
    reference = study.reference
    rows_cache: dict[str, object] = {}
    records = []
    for variant in [name for name in study.variants if name not in (reference, ORACLE)]:
        pairs = [(predictions.get((variant, seed)), predictions.get((reference, seed)))
                 for seed in sorted(set(runs.loc[runs["variant"] == variant, "seed"]))]
        pairs = [(mine, theirs) for mine, theirs in pairs
                 if mine is not None and theirs is not None and mine.test_rows == theirs.test_rows]
        digests = {mine.test_rows for mine, _ in pairs}
        if len(pairs) < 2 or len(digests) != 1:
            continue
        digest = digests.pop()
        if digest not in rows_cache:
            rows_cache[digest] = read_test_rows(results_dir, digest)
        rows = rows_cache[digest]
        if rows is None:
            continue
        kinds = {behaviour: ("binary" if set(np.unique(rows.labels[rows.mask[:, column], column])) <= {0.0, 1.0}
                             else "regression") for column, behaviour in enumerate(rows.behaviours)}
        for cell_index, cell in enumerate(rows.cells):
            in_cell = rows.cell == cell_index
            for column, behaviour in enumerate(rows.behaviours):
                chosen = in_cell & rows.mask[:, column]
                metric = "auc" if kinds[behaviour] == "binary" else PRIMARY["regression"]
                budget = cell_budget(metric, [mine.outputs[chosen, column] for mine, _ in pairs],
                                     [theirs.outputs[chosen, column] for _, theirs in pairs],
                                     rows.labels[chosen, column].astype(np.float64), rows.user[chosen])
                records.append({"variant": variant, "group": cell, "task": behaviour, "metric": metric, **budget})
    frame = pd.DataFrame(records, columns=["variant", "group", "task", "metric", "noise_seeds", "var_seed", "var_test",
                                           "var_distribution"])
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["test_share"] = frame["var_test"] / frame["var_seed"]
        frame["training_share"] = frame["var_distribution"] / frame["var_seed"]
    return frame


def noise_line(budget: pd.DataFrame, label: str, cells_total: int) -> str | None:
    """The line under a table: the median shares over its cells with a budget, or None without any."""
    usable = budget.dropna(subset=["test_share", "training_share"])
    if usable.empty:
        return None
    test, training = usable["test_share"], usable["training_share"]
    return (f"{label} noise budget ({len(usable)} of {cells_total} cells, {int(usable['noise_seeds'].min())}+ seeds "
            f"with test predictions): a fresh test set would move one seed's difference by a variance of "
            f"{test.median():.0%} of the seed-to-seed variance (median; {test.min():.0%}-{test.max():.0%}; DeLong for "
            f"AUC, a bootstrap over test users for MSE); of the seed-to-seed variance, {training.median():.0%} is the "
            f"training's own (median; {training.min():.0%}-{training.max():.0%}; Jordan 2024), the rest the finite "
            f"test rows': more test rows cut only that rest (docs/statistics.md)")
