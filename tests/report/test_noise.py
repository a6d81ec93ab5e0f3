"""The noise budget (report/noise.py): DeLong against a direct computation and a bootstrap, the user bootstrap
against the cluster-robust variance, the distribution-level part recovered on simulated seeds, and the report
reading real runs' predictions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mfh_cli.report.noise import (auc_difference_variance, bootstrap_mean_variance, cell_budget, midranks,
                                  placement_values)


def direct_delong(scores_a: np.ndarray, scores_b: np.ndarray, positive: np.ndarray) -> float:
    """DeLong et al. (1988) as written: the structural components by explicit pairs, their covariance matrix."""
    def components(scores):
        pos, neg = scores[positive], scores[~positive]
        kernel = np.array([[1.0 if p > q else 0.5 if p == q else 0.0 for q in neg] for p in pos])
        return kernel.mean(axis=1), kernel.mean(axis=0)

    (a10, a01), (b10, b01) = components(scores_a), components(scores_b)
    s10 = np.cov(np.stack([a10, b10]))
    s01 = np.cov(np.stack([a01, b01]))
    contrast = np.array([1.0, -1.0])
    return float(contrast @ s10 @ contrast / a10.size + contrast @ s01 @ contrast / a01.size)


def test_midranks_average_ties():
    assert midranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_delong_matches_the_direct_computation_on_a_small_case_with_ties():
    generator = np.random.default_rng(0)
    positive = np.array([True, False] * 7 + [True])
    scores_a = np.round(generator.normal(size=15) + positive, 1)  # rounded: ties within and across classes
    scores_b = np.round(scores_a + generator.normal(scale=0.7, size=15), 1)
    v10, v01 = placement_values(scores_a, positive)
    pairs = [(p, q) for p, q in itertools.product(scores_a[positive], scores_a[~positive])]
    auc = np.mean([1.0 if p > q else 0.5 if p == q else 0.0 for p, q in pairs])
    assert v10.mean() == pytest.approx(auc) and v01.mean() == pytest.approx(auc)
    assert auc_difference_variance(scores_a, scores_b, positive) == pytest.approx(
        direct_delong(scores_a, scores_b, positive))


def test_delong_agrees_with_a_bootstrap_of_the_rows():
    generator = np.random.default_rng(1)
    rows = 3000
    positive = generator.random(rows) < 0.3
    shared = generator.normal(size=rows) + 0.8 * positive
    scores_a = shared + generator.normal(scale=0.6, size=rows)
    scores_b = shared + generator.normal(scale=0.9, size=rows)

    def auc(scores, labels):
        v10, _ = placement_values(scores, labels)
        return v10.mean()

    draws = []
    for _ in range(1500):
        chosen = generator.integers(0, rows, rows)
        draws.append(auc(scores_a[chosen], positive[chosen]) - auc(scores_b[chosen], positive[chosen]))
    assert auc_difference_variance(scores_a, scores_b, positive) == pytest.approx(np.var(draws, ddof=1), rel=0.12)


def test_the_user_bootstrap_matches_the_cluster_robust_variance():
    generator = np.random.default_rng(2)
    users = np.repeat(np.arange(400), generator.integers(1, 12, 400))  # users with 1 to 11 rows
    user_effect = generator.normal(size=400)[users]  # a user's rows move together
    values = user_effect + generator.normal(scale=0.5, size=users.size)
    mean = values.mean()
    sums = np.bincount(users, weights=values - mean)
    cluster_robust = float((sums ** 2).sum() / values.size ** 2)
    assert bootstrap_mean_variance(values, users, draws=4000) == pytest.approx(cluster_robust, rel=0.1)
    assert bootstrap_mean_variance(values, users, draws=4000) > 2 * np.var(values) / values.size  # not rows


def simulated_mse_seeds(seeds: int, rows: int, seed_shift: float, row_noise: float, seed: int = 0):
    """Outputs whose squared-error difference to a zero reference on zero labels is 1 + δ_s + ε_si: a shift per
    seed (the training's own, variance seed_shift²) plus independent noise per row and seed (variance
    row_noise²)."""
    generator = np.random.default_rng(seed)
    shifts = generator.normal(scale=seed_shift, size=seeds)
    variant = [np.sqrt(1 + shift + generator.normal(scale=row_noise, size=rows)) for shift in shifts]
    reference = [np.zeros(rows)] * seeds
    return variant, reference, np.zeros(rows), np.arange(rows)


def test_the_distribution_level_part_is_recovered_on_simulated_seeds():
    """V_seed = var(δ) + var(ε)/rows: the budget splits it back (Jordan 2024's estimator), whatever the mix."""
    for seed_shift, row_noise in ((0.01, 0.2), (0.005, 0.2), (0.0, 0.2)):  # var(δ) 5×, 1.25×, 0× var(ε)/rows
        variant, reference, labels, users = simulated_mse_seeds(200, 2000, seed_shift, row_noise)
        budget = cell_budget("mse", variant, reference, labels, users)
        expected_seed_variance = seed_shift ** 2 + row_noise ** 2 / 2000
        assert budget["var_seed"] == pytest.approx(expected_seed_variance, rel=0.25)
        assert budget["var_distribution"] == pytest.approx(seed_shift ** 2, rel=0.35, abs=6e-6)
        assert budget["var_test"] == pytest.approx(row_noise ** 2 / 2000, rel=0.25)  # one seed's rows redrawn


def test_auc_cells_whose_seeds_differ_only_row_by_row_have_no_training_share():
    generator = np.random.default_rng(4)
    rows, seeds = 4000, 30
    positive = generator.random(rows) < 0.4
    signal = generator.normal(size=rows) + positive
    labels = positive.astype(float)
    variant = [signal + generator.normal(scale=0.5, size=rows) for _ in range(seeds)]
    reference = [signal + generator.normal(scale=0.5, size=rows) for _ in range(seeds)]
    budget = cell_budget("auc", variant, reference, labels, np.arange(rows))
    assert budget["var_distribution"] / budget["var_seed"] < 0.25
    assert budget["var_test"] / budget["var_seed"] > 0.5  # the row-level noise a new test set redraws
    few = cell_budget("auc", variant[:1], reference[:1], labels, np.arange(rows))
    assert np.isnan(few["var_seed"])  # one seed: no budget
