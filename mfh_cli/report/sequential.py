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
confidence sequences for Gaussian means with unknown variance", §4; S. Howard et al. 2021, Ann. Statist.). By
Ville's inequality {μ0 : M_n(μ0) < 1/α} is a (1 − α) CS; solving the inequality gives the closed form of
`half_width`. Its running intersection over n and the anytime p-value p_n = min(1, 1 / max_{m≤n} M_m(μ0)) stay
valid at any stopping time, so Holm's correction applies to them as to fixed-n p-values.

c = MIXTURE_PRECISION = 1: the CS is finite from 5 seeds at α = 0.05 and tightest between about 15 and 60 seeds,
where it is 1.6–1.7× as wide as the fixed-n t interval (the price of peeking).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

MIXTURE_PRECISION = 1.0
BOUNDARY = f"Lai's t-mixture confidence sequence (c = {MIXTURE_PRECISION:g})"


def mixture_martingale(differences: np.ndarray, null: float, precision: float = MIXTURE_PRECISION) -> np.ndarray:
    """M_n(null) for n = 1..N over the first n values of `differences` (in seed order)."""
    values = np.asarray(differences, dtype=float) - null
    n = np.arange(1, len(values) + 1, dtype=float)
    total, squares = np.cumsum(values), np.cumsum(values ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(squares > 0, total ** 2 / ((n + precision) * squares), 0.0)
        log_martingale = 0.5 * np.log(precision / (n + precision)) - n / 2 * np.log1p(-share)
    return np.exp(log_martingale)


def anytime_p(differences: np.ndarray, null: float, precision: float = MIXTURE_PRECISION) -> float:
    """min(1, 1 / max_n M_n(null)): a p-value valid however the number of seeds was chosen (NaN without values)."""
    values = np.asarray(differences, dtype=float)
    if len(values) == 0 or math.isnan(null):
        return math.nan
    return float(min(1.0, 1.0 / mixture_martingale(values, null, precision).max()))


def half_width(n: int, sum_of_squares: float, alpha: float, precision: float = MIXTURE_PRECISION) -> float:
    """Half-width of the CS after n values whose squared deviations from their mean sum to `sum_of_squares`:
    M_n(μ0) < 1/α ⇔ |mean − μ0| < this (inf while the boundary still admits every mean)."""
    return float(half_widths(np.array([n]), np.array([sum_of_squares]), alpha, precision)[0])


def half_widths(n: np.ndarray, sum_of_squares: np.ndarray, alpha: float,
                precision: float = MIXTURE_PRECISION) -> np.ndarray:
    """`half_width` elementwise (n and sum_of_squares broadcast)."""
    n = np.asarray(n, dtype=float)
    floor = (alpha ** 2 * precision / (n + precision)) ** (1 / n)  # (1 − share) must stay above this
    room = n - (1 - floor) * (n + precision)
    with np.errstate(divide="ignore", invalid="ignore"):
        half = np.sqrt((1 - floor) * (n + precision) * sum_of_squares / (n * room))
    return np.where((n >= 2) & (room > 0), half, np.inf)


def confidence_sequence(differences: np.ndarray, alpha: float,
                        precision: float = MIXTURE_PRECISION) -> tuple[float, float]:
    """The running intersection over n = 2..N of the (1 − α) CS of the mean: (low, high), ±inf while unbounded.
    An empty intersection (probability ≤ α) falls back to the last n's interval."""
    lows, highs = sequence_bounds(np.asarray(differences, dtype=float)[None, :], alpha, precision)
    low, high = float(lows[0].max(initial=-np.inf)), float(highs[0].min(initial=np.inf))
    if low <= high:
        return low, high
    return float(lows[0, -1]), float(highs[0, -1])


def sequence_bounds(values: np.ndarray, alpha: float,
                    precision: float = MIXTURE_PRECISION) -> tuple[np.ndarray, np.ndarray]:
    """The CS's bounds after each n = 1..N for rows of values [cells, N] (not intersected over n)."""
    n = np.arange(1, values.shape[1] + 1, dtype=float)
    means = np.cumsum(values, axis=1) / n
    squares = np.maximum(np.cumsum(values ** 2, axis=1) - n * means ** 2, 0.0)
    half = half_widths(n, squares, alpha, precision)
    return means - half, means + half


def width_factor(n: int, alpha: float, precision: float = MIXTURE_PRECISION) -> float:
    """The CS half-width in units of sd/√n at n values with sample sd `sd` (for planning: inf while unbounded)."""
    return half_width(n, float(n - 1), alpha, precision) * math.sqrt(n)


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


def chance_decided(mean: float, sd: float, n: int, alpha: float, null: float = math.nan) -> float:
    """The chance that the CS at n seeds excludes 0 (or, given `null`, excludes 0 or `null`) if the true mean
    and spread are `mean` and `sd` (normal approximation, for planning)."""
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
    return float(1 - (stats.norm.cdf(high, mean, standard_error) - stats.norm.cdf(low, mean, standard_error)))
