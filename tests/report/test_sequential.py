"""The anytime-valid confidence sequence (report/sequential.py): its closed form against a numerical mixture, its
coverage under peeking against naive re-testing, and its use for planning."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from mfh_cli.report.sequential import (anytime_p, chance_decided, half_width, mixture_martingale, seeds_to_detect,
                                       sequence_bounds, shrunk_effects, width_factor)


def numerical_mixture(values: np.ndarray, null: float, precision: float) -> float:
    """Lai's ratio by quadrature on a grid: the likelihood of y = values − null integrated over log σ (the Haar
    measure dσ/σ) and over the standardised mean θ ~ N(0, 1/precision), divided by the same at θ = 0."""
    y = values - null
    log_sigma = np.linspace(-8, 8, 4001)[:, None]
    theta = np.linspace(-12, 12, 2401)[None, :]
    sigma = np.exp(log_sigma)

    def likelihood(theta_values: np.ndarray) -> np.ndarray:
        squares = sum((value - theta_values * sigma) ** 2 for value in y)
        return np.exp(-len(y) * log_sigma - squares / (2 * sigma ** 2))

    prior = stats.norm(0, 1 / math.sqrt(precision)).pdf(theta)
    numerator = integrate.trapezoid(integrate.trapezoid(likelihood(theta) * prior, theta, axis=1), log_sigma[:, 0])
    denominator = integrate.trapezoid(likelihood(np.zeros((1, 1)))[:, 0], log_sigma[:, 0])
    return float(numerator / denominator)


@pytest.mark.parametrize("precision", [0.5, 4.0])
def test_closed_form_equals_the_numerical_mixture(precision):
    values = np.array([0.8, 1.9, 0.3, 1.1])
    for null in (0.0, 2.0):
        closed = mixture_martingale(values, null, precision)[-1]
        assert closed == pytest.approx(numerical_mixture(values, null, precision), rel=1e-4)


def test_one_value_carries_no_evidence():
    assert mixture_martingale(np.array([3.0]), 0.0)[0] == pytest.approx(1.0)


def test_interval_and_p_agree_at_the_last_seed():
    """μ0 inside the CS ⇔ M_n(μ0) < 1/α ⇔ anytime p > α: the interval shown and the verdict never disagree."""
    values = np.random.default_rng(0).normal(0.4, 1.0, size=12)
    n, mean, sd = len(values), values.mean(), values.std(ddof=1)
    half = half_width(n, sd, alpha=0.05)
    for offset, inside in ((0.999, True), (-0.999, True), (1.001, False), (-1.001, False)):
        null = mean + offset * half
        assert (mixture_martingale(values, null)[-1] < 1 / 0.05) == inside
        assert (anytime_p(n, mean, sd, null) > 0.05) == inside


def test_too_few_seeds_give_an_unbounded_interval():
    assert half_width(2, 1.0, alpha=0.05) == math.inf
    assert half_width(4, 1.0, alpha=0.05) == math.inf
    assert math.isfinite(half_width(5, 1.0, alpha=0.05))
    assert math.isnan(anytime_p(1, 0.3, math.nan, 0.0))


def test_coverage_holds_at_every_number_of_seeds_and_naive_retesting_does_not():
    """4,000 simulated cells, each peeked at after every seed from 2 to 40: the CS misses the true mean at some
    peek in at most 5% of cells (+3 Monte Carlo standard errors); the fixed-n t interval misses it far more."""
    rng = np.random.default_rng(7)
    cells, seeds, true_mean, alpha = 4000, 40, 0.3, 0.05
    draws = rng.normal(true_mean, 1.3, size=(cells, seeds))
    lows, highs = sequence_bounds(draws, alpha)
    sequence_misses = ((lows > true_mean) | (highs < true_mean)).any(axis=1).mean()
    n = np.arange(2, seeds + 1)
    means = np.cumsum(draws, axis=1)[:, 1:] / n
    sds = np.array([draws[:, :k].std(axis=1, ddof=1) for k in n]).T
    naive_half = stats.t.ppf(1 - alpha / 2, n - 1) * sds / np.sqrt(n)
    naive_misses = (np.abs(means - true_mean) > naive_half).any(axis=1).mean()
    assert sequence_misses <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / cells)
    assert naive_misses > 2 * alpha


def test_anytime_p_rejects_a_real_effect_with_enough_seeds():
    values = np.random.default_rng(3).normal(1.0, 1.0, size=40)
    p_values = [anytime_p(n, values[:n].mean(), values[:n].std(ddof=1), 0.0) for n in (5, 40)]
    assert p_values[1] < 0.01 < p_values[0]


def test_seeds_to_detect_grows_as_the_effect_shrinks():
    assert seeds_to_detect(1.0, alpha=0.05) < seeds_to_detect(0.5, alpha=0.05) < seeds_to_detect(0.25, alpha=0.05)
    n = seeds_to_detect(0.5, alpha=0.05)
    assert width_factor(n, 0.05) / math.sqrt(n) + stats.norm.ppf(0.8) / math.sqrt(n) <= 0.5


def planned_and_decided(effect_spread: float, first: int = 5, last: int = 20, units: int = 9,
                        tables: int = 200) -> tuple[float, float, float]:
    """Tables of `units` cells whose true effects spread as N(0, effect_spread²) (sd 1 per seed): from the first
    `first` seeds, the cells a plan expects decided by `last` seeds, with the observed means taken as true and
    shrunk; and how many the confidence sequence then decides (at any seed from `first` on, as --until-decided
    stops), each averaged over the tables."""
    rng = np.random.default_rng(7)
    level = 0.05 / units
    as_observed = shrunk = decided = 0.0
    for _ in range(tables):
        values = rng.normal(0, effect_spread, (units, 1)) + rng.normal(0, 1, (units, last))
        means, sds = values[:, :first].mean(axis=1), values[:, :first].std(axis=1, ddof=1)
        as_observed += sum(chance_decided(m, sd, last, level) for m, sd in zip(means, sds))
        expected, unknown = shrunk_effects(means, sds / math.sqrt(first))
        shrunk += sum(chance_decided(m, sd, last, level, uncertainty=u) for m, sd, u in zip(expected, sds, unknown))
        low, high = sequence_bounds(values, level)
        decided += float(((low[:, first - 1:] > 0) | (high[:, first - 1:] < 0)).any(axis=1).sum())
    return as_observed / tables, shrunk / tables, decided / tables


@pytest.mark.parametrize("effect_spread", [0.0, 0.5, 1.0])
def test_the_shrunk_plan_promises_what_more_seeds_deliver(effect_spread):
    """The dry run's calibration (issue 28): taking 5 seeds' means as the truth promises about one decided cell of
    9 where none is there to decide; shrunk toward no change with their uncertainty, the plan lands within half a
    cell of what the confidence sequence decides, and always nearer than the naive plan."""
    as_observed, shrunk, decided = planned_and_decided(effect_spread)
    assert abs(shrunk - decided) < abs(as_observed - decided)
    assert abs(shrunk - decided) <= 0.5, (as_observed, shrunk, decided)
    if effect_spread == 0.0:
        assert as_observed > 0.7 and decided < 0.1  # the winner's curse the shrinkage removes


def test_shrinkage_keeps_clear_effects_and_pulls_noise_to_zero():
    means = np.array([0.05, -0.04, 3.0, 0.02])
    expected, unknown = shrunk_effects(means, np.full(4, 0.1))
    assert expected[2] == pytest.approx(3.0, rel=0.01)
    assert np.all(np.abs(expected[[0, 1, 3]]) < np.abs(means[[0, 1, 3]]))
    assert np.all(unknown <= 0.01) and np.all(unknown > 0)
    flat, none = shrunk_effects(np.array([0.01, -0.01]), np.array([0.1, 0.1]))  # all noise: no effect expected
    assert np.all(flat == 0) and np.all(none == 0)
