"""What each cell of a table establishes (SPEC §4 "verdict"): paired intervals, Holm-corrected tests, the change a
run could have detected, the seeds it would take, and the table's closing line.

Every comparison is paired by seed: d_s = variant_s − reference_s. With n pairs, mean m and spread s:
- interval of the relative change: (m ± t_{n−1} · s/√n) / r × 100, r = the reference's mean over the paired
  seeds, treated as fixed (its own seed spread is not propagated: SPEC §4 says why);
- p_value: the paired two-sided t-test of m = 0; p_paper the same test of m = P·r/100, P the paper's change in
  our formula;
- both are Holm-corrected over the table's tested cells (`p_adjusted`, `p_paper_adjusted`), α = 0.05;
- verdict against the paper: confirmed (m ≠ 0 on P's side), opposite (m ≠ 0 on the other side), smaller (m = 0
  not rejected but m = P rejected: the printed effect is ruled out), inconclusive (neither); without a paper
  value: better / worse / no difference shown; untested when there is no interval (one pair, or no spread); not
  computed when no seed has the metric on both sides (the cell's `reason` says why: no rows of the group in the
  test split, one class only, ...). Every count over cells says how many it counted of how many.
- detectable_change: the relative change a paired t-test with these n pairs and this spread detects with 80%
  power at the level α/k (k tested cells: Holm's strictest step, so a cell of that size is decided whatever the
  other cells show); seeds_needed: the pairs that would reach that power for |P| (or DEFAULT_EFFECT_PCT).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import optimize, stats

from mfh_cli.report.sequential import anytime_p
from mfh_cli.report.sequential import detectable_effect as sequential_detectable
from mfh_cli.report.sequential import half_width as sequential_half_width
from mfh_cli.report.sequential import seeds_to_detect as sequential_seeds
from mfh_cli.tasks import REGISTRY, lower_is_better

ALPHA = 0.05
POWER = 0.8
DEFAULT_EFFECT_PCT = 0.5  # the change a cell without a paper value is powered for (the paper's typical size)
MAX_SEEDS = 100_000  # seeds_needed above this is reported as infinite
NO_SPREAD = 1e-9  # differences whose sd is below this share of their mean are float rounding of one value
VERDICTS_WITH_PAPER = ("confirmed", "opposite", "smaller", "inconclusive", "untested")
VERDICTS_WITHOUT_PAPER = ("better", "worse", "no difference shown", "untested")
FIXED, SEQUENTIAL = "fixed seeds", "sequential"  # how a table's seeds were chosen (its `inference` column)
DECIDED = ("confirmed", "opposite", "smaller", "better", "worse")
NOT_COMPUTED = "not computed"  # a compared cell without a single seed that has its metric on both sides


def paired_statistics(differences: np.ndarray) -> dict:
    """n, mean and sd of one cell's per-seed differences (NaNs dropped)."""
    values = np.asarray(differences, dtype=float)
    values = values[~np.isnan(values)]
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    sd = float(values.std(ddof=1)) if n >= 2 else math.nan
    if sd <= NO_SPREAD * abs(mean):
        sd = 0.0
    return {"n_pairs": n, "difference_mean": mean, "difference_sd": sd}


def t_test_p(mean: float, sd: float, n: int, null: float) -> float:
    """Two-sided one-sample t-test of `mean` = `null`; NaN without an interval (fewer than 2 values, no spread)."""
    if n < 2 or not sd > 0 or math.isnan(null):
        return math.nan
    t = (mean - null) / (sd / math.sqrt(n))
    return float(2 * stats.t.sf(abs(t), n - 1))


def half_width(sd: float, n: float, confidence: float = 1 - ALPHA) -> float:
    """Half-width of the t interval of a mean of n values with spread sd (NaN below 2 values or without spread)."""
    if not n >= 2 or not sd > 0:
        return math.nan
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))


def holm(p_values: pd.Series) -> pd.Series:
    """Holm's step-down adjusted p-values over the non-NaN entries (NaN stays NaN)."""
    tested = p_values.dropna().sort_values(kind="stable")
    k = len(tested)
    adjusted = np.minimum(1.0, np.maximum.accumulate((k - np.arange(k)) * tested.to_numpy()))
    return pd.Series(adjusted, index=tested.index).reindex(p_values.index)


def power(effect: float, n: int, alpha: float) -> float:
    """Power of the two-sided one-sample t-test at level alpha with n values, `effect` = true mean / sd."""
    degrees = n - 1
    critical = stats.t.ppf(1 - alpha / 2, degrees)
    shift = effect * math.sqrt(n)
    # scipy's noncentral t can return NaN far in a tail, where the probability is 0 to float precision.
    upper, lower = stats.nct.sf(critical, degrees, shift), stats.nct.cdf(-critical, degrees, shift)
    return float(np.nan_to_num(upper) + np.nan_to_num(lower))


def detectable_effect(n: int, alpha: float, target: float = POWER) -> float:
    """The smallest mean / sd that the test detects with power `target` (NaN below 2 values)."""
    if n < 2:
        return math.nan
    upper = 1.0
    while power(upper, n, alpha) < target:
        upper *= 2
    return float(optimize.brentq(lambda effect: power(effect, n, alpha) - target, 0.0, upper, xtol=1e-10))


def seeds_needed(effect: float, alpha: float, target: float = POWER) -> float:
    """The fewest pairs (≥ 2) whose test detects mean / sd = `effect` with power `target`; inf beyond MAX_SEEDS."""
    if not effect > 0:
        return math.inf if effect == 0 else math.nan
    if power(effect, MAX_SEEDS, alpha) < target:
        return math.inf
    low, high = 1, 2  # power(low) < target <= power(high), power rising with n
    while power(effect, high, alpha) < target:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if power(effect, middle, alpha) >= target else (middle, high)
    return float(high)


def decide(tidy: pd.DataFrame) -> pd.DataFrame:
    """Fill the change interval, p_value, p_paper, their Holm adjustments, significant, detectable_change,
    seeds_needed and verdict of every tested cell of one table (rows with a difference_mean) from n_pairs,
    difference_mean, difference_sd and paired_reference_mean; `paper_change_as_ours` (NaN where the paper has no
    value) sets P. Rows whose `inference` is SEQUENTIAL use the confidence sequence (report/sequential.py). A
    compared row (n_pairs set: neither the reference nor the oracle) without a paired difference is NOT_COMPUTED."""
    tidy = tidy.copy()
    tested = tidy["difference_mean"].notna()
    compared = tidy["n_pairs"].notna()
    sequential_rows = tidy["inference"] == SEQUENTIAL
    scale = 100 / tidy["paired_reference_mean"]  # absolute difference → relative change in %
    paper_null = tidy["paper_change_as_ours"] / scale
    rows = list(zip(tidy["n_pairs"], tidy["difference_mean"], tidy["difference_sd"], sequential_rows, tested))

    def per_cell(function, *columns) -> pd.Series:
        return pd.Series([function(int(n), mean, sd, sequential, *extra) if has else math.nan
                          for (n, mean, sd, sequential, has), *extra in zip(rows, *columns)], index=tidy.index)

    half = per_cell(lambda n, mean, sd, sequential: (sequential_half_width(n, sd, ALPHA) if sequential else
                                                       half_width(sd, n)))
    tidy["change_ci_low"] = (tidy["difference_mean"] - half) * scale
    tidy["change_ci_high"] = (tidy["difference_mean"] + half) * scale
    tidy["p_value"] = per_cell(_p_value, [0.0] * len(tidy))
    tidy["p_paper"] = per_cell(_p_value, paper_null)
    tidy["p_adjusted"] = holm(tidy["p_value"])
    tidy["p_paper_adjusted"] = holm(tidy["p_paper"])
    tidy["significant"] = tidy["p_adjusted"] < ALPHA
    level = ALPHA / max(int(tidy["p_value"].notna().sum()), 1)
    effect = per_cell(lambda n, mean, sd, sequential: (sequential_detectable(n, level) if sequential else
                                                         detectable_effect(n, level)))
    tidy["detectable_change"] = effect * tidy["difference_sd"] * scale
    target = tidy["paper_change_as_ours"].abs().fillna(DEFAULT_EFFECT_PCT) / scale
    tidy["seeds_needed"] = per_cell(lambda n, mean, sd, sequential, size: (
        math.nan if not sd > 0 else (sequential_seeds(size / sd, level) if sequential else
                                     seeds_needed(size / sd, level))), target)
    tidy["verdict"] = [_verdict(row) if has else NOT_COMPUTED if in_table else ""
                       for row, has, in_table in zip(tidy.itertuples(index=False), tested, compared)]
    return tidy


def _p_value(n: int, mean: float, sd: float, sequential: bool, null: float) -> float:
    return anytime_p(n, mean, sd, null) if sequential else t_test_p(mean, sd, n, null)


def _verdict(row) -> str:
    if math.isnan(row.p_adjusted):
        return "untested"
    # A registered metric says its direction; an unregistered one (a pooled, sign-aligned change) is higher-better.
    better = (row.difference_mean < 0) == (row.metric in REGISTRY and lower_is_better(row.metric))
    if math.isnan(row.paper_change_as_ours):
        if row.p_adjusted < ALPHA and row.difference_mean != 0:
            return "better" if better else "worse"
        return "no difference shown"
    if row.p_adjusted < ALPHA:
        paper_positive = not np.signbit(row.paper_change_as_ours)  # a printed -0.00 keeps the paper's sign
        return "confirmed" if (row.difference_mean > 0) == paper_positive else "opposite"
    if row.p_paper_adjusted < ALPHA:
        return "smaller"
    return "inconclusive"


def counted_cells(cells: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The compared cells a count runs over (those computed) and the clause naming what it left out: '' when
    every cell was computed, else '; 3 of 9 cells not computed (no rows of this group in the test split)'."""
    computed = cells[cells["verdict"] != NOT_COMPUTED]
    left_out = cells[cells["verdict"] == NOT_COMPUTED]
    if left_out.empty:
        return computed, ""
    reasons = "; ".join(dict.fromkeys(reason for reason in left_out["reason"] if reason))
    return computed, (f"; {len(left_out)} of {len(cells)} cells not computed" + (f" ({reasons})" if reasons else ""))


def verdict_line(tidy: pd.DataFrame, label: str) -> str:
    """The table's closing line: verdict counts, detectable vs printed changes, what more seeds would decide; the
    cells that could not be computed are counted apart, with why."""
    compared = tidy[tidy["verdict"] != ""]
    tested, left_out = counted_cells(compared)
    if tested.empty:
        return f"{label}: no cell compared with the reference{left_out}"
    seeds = int(tidy["n_seeds"].max())
    with_paper = tested["paper_change_as_ours"].notna().any()
    order = VERDICTS_WITH_PAPER if with_paper else VERDICTS_WITHOUT_PAPER
    counts = tested["verdict"].value_counts()
    parts = " · ".join(f"{int(counts[name])} {name}" for name in order if name in counts)
    detectable = tested["detectable_change"].dropna()
    summary = (f"median detectable change {_percent(detectable.median())}" if len(detectable)
               else "no detectable change (fewer than 2 seeds or no spread)")
    if with_paper:
        summary += f" vs the paper's median {_percent(tested['paper_change_as_ours'].abs().median())}"
    open_cells = tested[tested["verdict"] == ("inconclusive" if with_paper else "no difference shown")]
    needed = open_cells["seeds_needed"].dropna()
    if len(needed):
        target = "the paper's change" if with_paper else f"a {DEFAULT_EFFECT_PCT:g}% change"
        summary += (f"; {_seeds(needed.median())} seeds would give 80% power for {target} in half of the "
                    f"{len(open_cells)} {'inconclusive' if with_paper else 'undecided'} cells")
    inference = "; sequential: anytime-valid intervals" if (tested["inference"] == SEQUENTIAL).any() else ""
    return (f"{label}, {seeds} seed{'s' if seeds != 1 else ''}: {parts} — {summary} "
            f"(Holm over {len(tested)} of {len(compared)} cells, α = {ALPHA:g}{inference}){left_out}")


def _percent(value: float) -> str:
    return "—" if value != value else f"{value:.2f}%" if value < 10 else f"{value:,.0f}%"


def _seeds(value: float) -> str:
    return f"more than {MAX_SEEDS:,}" if math.isinf(value) else f"about {value:,.0f}"
