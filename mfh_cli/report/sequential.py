"""Anytime-valid inference for seeds added on demand (`mfh ablate --until-decided`, docs/statistics.md).

A fixed-seed t interval is valid only if the number of seeds was fixed before looking: re-testing after every new
seed and stopping once a cell is significant crosses 0.05 far more often than 5% of the time. A confidence
sequence (CS) covers the true mean at every number of seeds at once, P(∃n: μ ∉ CS_n) ≤ α, so a cell may be read
after each seed and the sweep stopped on any rule.

Construction: Lai's (1976) t-mixture for Gaussian observations of unknown variance — the per-seed paired
differences, as under the fixed-seed paired t-test. Against a null mean μ0, with y_i = d_i − μ0, the ratio of the
scale-invariant likelihoods mixed over the standardised effect θ ~ N(0, 1/c) is

    M_n(μ0) = sqrt(c / (n + c)) · (1 − (Σy)² / ((n + c) Σy²))^(−n/2),

a nonnegative martingale with M_1 = 1 under μ = μ0 (H. Wang & A. Ramdas 2024, "Anytime-valid t-tests and
confidence sequences for Gaussian means with unknown variance"; S. Howard et al. 2021, Ann. Statist.). By
Ville's inequality {μ0 : M_n(μ0) < 1/α} is a (1 − α) CS; solving the inequality gives the closed form of
`half_width`. It and the anytime p-value p_n = min(1, 1 / M_n(μ0)) stay valid at any stopping time, so Holm's
correction applies to them as to fixed-n p-values. The report uses the CS and p at the last n (a function of n,
mean and sd alone), so the interval shown and the verdict agree.

c = MIXTURE_PRECISION = 1: the CS is finite from 5 seeds at α = 0.05 and tightest between about 15 and 60 seeds,
where it is 1.6–1.7× as wide as the fixed-n t interval (the price of peeking).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

MIXTURE_PRECISION = 1.0
BOUNDARY = f"Lai's t-mixture confidence sequence (c = {MIXTURE_PRECISION:g})"


def log_martingale(n: np.ndarray, total: np.ndarray, squares: np.ndarray,
                   precision: float = MIXTURE_PRECISION) -> np.ndarray:
    """log M_n from n, Σy and Σy² (y = values − null), elementwise."""
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(squares > 0, np.asarray(total) ** 2 / ((n + precision) * squares), 0.0)
        return 0.5 * np.log(precision / (n + precision)) - n / 2 * np.log1p(-share)


def mixture_martingale(differences: np.ndarray, null: float, precision: float = MIXTURE_PRECISION) -> np.ndarray:
    """M_n(null) for n = 1..N over the first n values of `differences` (in seed order)."""
    values = np.asarray(differences, dtype=float) - null
    n = np.arange(1, len(values) + 1)
    return np.exp(log_martingale(n, np.cumsum(values), np.cumsum(values ** 2), precision))


def anytime_p(n: int, mean: float, sd: float, null: float, precision: float = MIXTURE_PRECISION) -> float:
    """min(1, 1 / M_n(null)) from the summary of n values: valid however n was chosen, since by Ville's inequality
    P(∃n: M_n ≥ 1/α) ≤ α (NaN without 2 values or a null)."""
    if n < 2 or math.isnan(null) or math.isnan(sd):
        return math.nan
    offset = mean - null
    squares = (n - 1) * sd ** 2 + n * offset ** 2
    return float(min(1.0, math.exp(-log_martingale(n, n * offset, squares, precision))))


def half_width(n: int, sd: float, alpha: float, precision: float = MIXTURE_PRECISION) -> float:
    """Half-width of the (1 − α) CS after n values of sample sd `sd`: M_n(μ0) < 1/α ⇔ |mean − μ0| < this (inf
    while the boundary still admits every mean; NaN without a spread)."""
    if not sd >= 0:
        return math.nan
    return float(half_widths(np.array([n]), np.array([(n - 1) * sd ** 2]), alpha, precision)[0])


def half_widths(n: np.ndarray, sum_of_squares: np.ndarray, alpha: float,
                precision: float = MIXTURE_PRECISION) -> np.ndarray:
    """The half-width elementwise from n and the values' squared deviations from their mean, summed."""
    n = np.asarray(n, dtype=float)
    floor = (alpha ** 2 * precision / (n + precision)) ** (1 / n)  # (1 − share) must stay above this
    room = n - (1 - floor) * (n + precision)
    with np.errstate(divide="ignore", invalid="ignore"):
        half = np.sqrt((1 - floor) * (n + precision) * sum_of_squares / (n * room))
    return np.where((n >= 2) & (room > 0), half, np.inf)


def sequence_bounds(values: np.ndarray, alpha: float,
                    precision: float = MIXTURE_PRECISION) -> tuple[np.ndarray, np.ndarray]:
    """The CS's bounds after each n = 1..N for rows of values [cells, N]."""
    n = np.arange(1, values.shape[1] + 1, dtype=float)
    means = np.cumsum(values, axis=1) / n
    squares = np.maximum(np.cumsum(values ** 2, axis=1) - n * means ** 2, 0.0)
    half = half_widths(n, squares, alpha, precision)
    return means - half, means + half


def width_factor(n: int, alpha: float, precision: float = MIXTURE_PRECISION) -> float:
    """The CS half-width in units of sd/√n at n values with sample sd `sd` (for planning: inf while unbounded)."""
    return half_width(n, 1.0, alpha, precision) * math.sqrt(n)


def detectable_effect(n: int, alpha: float, power: float = 0.8) -> float:
    """The true mean / sd whose CS at n values excludes 0 with probability about `power` (normal approximation,
    the sd taken as known: for planning, not for deciding)."""
    return (width_factor(n, alpha) + float(stats.norm.ppf(power))) / math.sqrt(n)


def seeds_to_detect(effect: float, alpha: float, power: float = 0.8, most: int = 100_000) -> float:
    """The fewest seeds at which `detectable_effect` ≤ effect (a mean / sd); inf beyond `most`."""
    if not effect > 0:
        return math.inf
    if detectable_effect(most, alpha, power) > effect:
        return math.inf
    low, high = 2, most  # detectable_effect falls with n over this range
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if detectable_effect(middle, alpha, power) <= effect else (middle, high)
    return float(high)


def chance_decided(mean: float, sd: float, n: int, alpha: float, null: float = math.nan,
                   uncertainty: float = 0.0) -> float:
    """The chance that the CS at n seeds excludes 0 (or, given `null`, excludes 0 or `null`) if the true spread is
    `sd` and the true mean is `mean` give or take `uncertainty` (a variance: what the seeds so far leave unknown of
    it, `shrunk_effects`), in a normal approximation, for planning."""
    if not sd > 0:
        return math.nan
    standard_error = sd / math.sqrt(n)
    half = width_factor(n, alpha) * standard_error
    if math.isinf(half):
        return 0.0
    low, high = -half, half  # the sample means that leave a cell open: within half of 0 (and of the null)
    if not math.isnan(null):
        low, high = max(low, null - half), min(high, null + half)
    if low >= high:
        return 1.0
    spread = math.sqrt(standard_error ** 2 + uncertainty)
    return float(1 - (stats.norm.cdf(high, mean, spread) - stats.norm.cdf(low, mean, spread)))


def shrunk_effects(means: np.ndarray, standard_errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The true means a plan should expect, with their remaining variance: a few seeds' means overstate the effects
    they settle at (the largest of several noisy means most: the winner's curse), so the plan shrinks them toward
    no change. Empirical Bayes over the plan's units (on one scale: relative changes), method of moments: the true
    means spread as N(0, τ²) with τ² = max(0, mean(m² − se²)); a unit's posterior mean is (1 − B)·m and its
    variance (1 − B)·se², B = se² / (se² + τ²) (docs/statistics.md "Planning")."""
    means, standard_errors = np.asarray(means, dtype=float), np.asarray(standard_errors, dtype=float)
    known = np.isfinite(means) & np.isfinite(standard_errors)
    prior = max(0.0, float(np.mean(means[known] ** 2 - standard_errors[known] ** 2))) if known.any() else 0.0
    variance = standard_errors ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kept = np.where(variance + prior > 0, prior / (variance + prior), 0.0)  # 1 − B
    return kept * means, kept * variance
