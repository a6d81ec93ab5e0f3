"""Verdicts per cell on hand-made per-seed values, Holm and the power figures against statsmodels, the closing
line, and Table 4's printed change converted to our formula."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from mfh_cli.report.aggregate import summarise
from mfh_cli.report.collect import read_study
from mfh_cli.report.paper import attach_paper, paper_tables
from mfh_cli.report.sequential import anytime_p
from mfh_cli.report.sequential import half_width as sequence_half_width
from mfh_cli.report.verdicts import ALPHA, SEQUENTIAL, decide, detectable_effect, holm, seeds_needed, verdict_line

REFERENCE = [0.700, 0.705, 0.698, 0.702, 0.701]
# Per-seed differences (variant − reference) of one AUC cell each, and the paper change they are judged against.
DIFFERENCES = {
    "confirmed": ([0.0070, 0.0072, 0.0069, 0.0071, 0.0073], 0.5),  # +1.0% ± 0.03%: 0 ruled out, on P's side
    "opposite": ([-0.0070, -0.0072, -0.0069, -0.0071, -0.0073], 0.5),
    "smaller": ([0.0004, -0.0003, 0.0002, -0.0004, 0.0001], 2.0),  # ~0 ± 0.05%: 0 inside, +2% far outside
    "inconclusive": ([0.010, -0.012, 0.008, -0.009, 0.004], 0.5),  # ~0 ± 1.5%: 0 and 0.5% inside
}


def _cells(variant: str, task: str, values: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"variant": variant, "seed": range(len(values)), "group": "new", "task": task,
                         "metric": "auc", "value": values})


@pytest.fixture
def judged(write_study) -> pd.DataFrame:
    """One variant, one task per case, against the reference; paper changes attached by hand."""
    frames = []
    for task, (differences, _) in DIFFERENCES.items():
        frames.append(_cells("mfh", task, REFERENCE))
        frames.append(_cells("flat", task, list(np.add(REFERENCE, differences))))
    directory = write_study("cases", pd.concat(frames), reference="mfh", variants=["mfh", "flat"])
    tidy = summarise(read_study(directory))
    paper = tidy["task"].map({task: change for task, (_, change) in DIFFERENCES.items()})
    tidy["paper_change_as_ours"] = paper.where(tidy["variant"] == "flat")
    return decide(tidy).set_index(["variant", "task"])


@pytest.mark.parametrize("case", list(DIFFERENCES))
def test_each_verdict_from_hand_made_seeds(judged, case):
    row = judged.loc[("flat", case)]
    differences = np.asarray(DIFFERENCES[case][0])
    reference = np.mean(REFERENCE)
    half = stats.t.ppf(0.975, 4) * differences.std(ddof=1) / math.sqrt(5)
    assert row["change_ci_low"] == pytest.approx((differences.mean() - half) / reference * 100)
    assert row["change_ci_high"] == pytest.approx((differences.mean() + half) / reference * 100)
    assert row["p_value"] == pytest.approx(stats.ttest_1samp(differences, 0).pvalue)
    assert row["verdict"] == case


def test_sequential_seeds_are_judged_by_the_confidence_sequence(write_study):
    """A table whose seeds were added until decided: the anytime interval and p replace the t interval and
    t-test, the same verdict rules apply, and a cell the t-test would call is left open by the wider interval."""
    rng = np.random.default_rng(4)
    reference = 0.70 + rng.normal(0, 0.002, size=8)
    differences = rng.normal(0.0025, 0.002, size=8)
    cells = pd.concat([_cells("mfh", "finish", list(reference)),
                       _cells("flat", "finish", list(reference + differences))])
    fixed = summarise(read_study(write_study("fixed", cells, reference="mfh", variants=["mfh", "flat"])))
    sequential = summarise(read_study(write_study("sequential", cells, reference="mfh", variants=["mfh", "flat"],
                                                  sequential={"boundary": "test"})))
    fixed_row, row = fixed.iloc[-1], sequential.iloc[-1]
    assert row["inference"] == SEQUENTIAL and fixed_row["inference"] != SEQUENTIAL
    mean, sd = differences.mean(), differences.std(ddof=1)
    half = sequence_half_width(8, sd, ALPHA)
    assert row["change_ci_high"] - row["change_ci_low"] == pytest.approx(2 * half / reference.mean() * 100)
    assert row["p_value"] == pytest.approx(anytime_p(8, mean, sd, 0.0))
    assert fixed_row["verdict"] == "better" and row["verdict"] == "no difference shown"
    assert row["change_ci_low"] < 0 < fixed_row["change_ci_low"]


def test_holm_matches_statsmodels_and_decides_the_verdicts(judged):
    tested = judged[judged["verdict"] != ""]
    expected = multipletests(tested["p_value"].to_numpy(), alpha=ALPHA, method="holm")[1]
    assert tested["p_adjusted"].to_numpy() == pytest.approx(expected)
    assert (tested["significant"] == (tested["p_adjusted"] < ALPHA)).all()


def test_holm_can_withhold_what_one_test_alone_would_claim():
    # Three cells at p = 0.02, 0.03, 0.04: each below 0.05 alone, none after Holm (0.06, 0.06, 0.06).
    p_values = pd.Series([0.03, 0.02, np.nan, 0.04])
    adjusted = holm(p_values)
    assert adjusted.iloc[:2].tolist() == pytest.approx([0.06, 0.06]) and np.isnan(adjusted.iloc[2])
    assert adjusted.iloc[3] == pytest.approx(0.06)
    assert adjusted.tolist()[:2] + [adjusted.iloc[3]] == pytest.approx(
        multipletests([0.03, 0.02, 0.04], method="holm")[1].tolist())


def test_one_seed_and_no_spread_are_untested(write_study):
    cells = pd.concat([_cells("mfh", "finish", [0.70, 0.71, 0.72]), _cells("flat", "finish", [0.71, None, None]),
                       _cells("mfh", "skip", [0.70, 0.71, 0.72]), _cells("flat", "skip", [0.71, 0.72, 0.73])])
    # finish: one pair (the variant's other seeds could not be computed); skip: every difference exactly +0.01,
    # no spread, no t interval.
    cells.loc[(cells["task"] == "skip") & (cells["variant"] == "flat"), "value"] = [0.75, 0.76, 0.77]
    cells.loc[(cells["task"] == "skip") & (cells["variant"] == "mfh"), "value"] = [0.74, 0.75, 0.76]
    tidy = summarise(read_study(write_study("degenerate", cells, reference="mfh", variants=["mfh", "flat"])))
    flat = tidy[tidy["variant"] == "flat"].set_index("task")
    for task in ("finish", "skip"):
        assert flat.loc[task, "verdict"] == "untested"
        assert np.isnan(flat.loc[task, "change_ci_low"]) and np.isnan(flat.loc[task, "p_adjusted"])
        assert np.isnan(flat.loc[task, "seeds_needed"])
    assert flat.loc["skip", "relative_change"] == pytest.approx(0.01 / 0.75 * 100)


def test_without_a_paper_value_cells_are_better_worse_or_no_difference(write_study):
    frames = [_cells("mfh", "finish", REFERENCE),
              _cells("flat", "finish", list(np.add(REFERENCE, DIFFERENCES["confirmed"][0]))),
              _cells("mfh", "skip", REFERENCE),
              _cells("flat", "skip", list(np.add(REFERENCE, DIFFERENCES["opposite"][0]))),
              _cells("mfh", "like", REFERENCE),
              _cells("flat", "like", list(np.add(REFERENCE, DIFFERENCES["inconclusive"][0])))]
    tidy = summarise(read_study(write_study("plain", pd.concat(frames), reference="mfh", variants=["mfh", "flat"])))
    verdicts = tidy[tidy["variant"] == "flat"].set_index("task")["verdict"].to_dict()
    assert verdicts == {"finish": "better", "skip": "worse", "like": "no difference shown"}
    line = verdict_line(tidy, "plain")
    assert line.startswith("plain, 5 seeds: 1 better · 1 worse · 1 no difference shown — median detectable change")


# statsmodels' power() is the independent computation; its solve_power() silently stops short at small α
# (n = 5, α = 0.05/18: 3.25, whose power is 0.68), so the solved values are checked through power(); at one
# degree of freedom its power() is NaN, so n = 2 is checked by simulation alone.
@pytest.mark.parametrize("n, alpha", [(3, 0.05), (5, 0.05 / 18), (10, 0.01), (40, 0.05)])
def test_detectable_effect_has_80_percent_power_by_statsmodels(n, alpha):
    effect = detectable_effect(n, alpha)
    assert TTestPower().power(effect, n, alpha, alternative="two-sided") == pytest.approx(0.8, abs=1e-6)


@pytest.mark.parametrize("n, alpha", [(2, 0.05), (5, 0.05 / 18)])
def test_detectable_effect_has_80_percent_power_by_simulation(n, alpha):
    effect = detectable_effect(n, alpha)
    draws = np.random.default_rng(0).normal(effect, 1.0, size=(200_000, n))
    t = draws.mean(axis=1) / (draws.std(axis=1, ddof=1) / math.sqrt(n))
    assert (np.abs(t) > stats.t.ppf(1 - alpha / 2, n - 1)).mean() == pytest.approx(0.8, abs=0.005)


@pytest.mark.parametrize("effect, alpha", [(2.0, 0.05), (0.5, 0.05), (0.3, 0.05 / 9), (0.05, 0.05)])
def test_seeds_needed_is_the_first_count_with_80_percent_power_by_statsmodels(effect, alpha):
    needed = int(seeds_needed(effect, alpha))
    assert TTestPower().power(effect, needed, alpha) >= 0.8
    assert needed == 2 or TTestPower().power(effect, needed - 1, alpha) < 0.8


def test_detectable_and_needed_columns_are_relative_changes(judged):
    row = judged.loc[("flat", "inconclusive")]
    cells = int(judged["p_adjusted"].notna().sum())
    sd, reference = np.std(DIFFERENCES["inconclusive"][0], ddof=1), np.mean(REFERENCE)
    effect = row["detectable_change"] / 100 * reference / sd  # back in units of the differences' spread
    assert TTestPower().power(effect, 5, ALPHA / cells) == pytest.approx(0.8, abs=1e-6)
    target = 0.5 / 100 * reference / sd  # the paper's 0.5% in the same units
    needed = int(row["seeds_needed"])
    assert TTestPower().power(target, needed, ALPHA / cells) >= 0.8 > TTestPower().power(target, needed - 1,
                                                                                       ALPHA / cells)


def test_closing_line_counts_the_verdicts(judged):
    line = verdict_line(judged.reset_index(), "Table X (synthetic)")
    counts = "1 confirmed · 1 opposite · 1 smaller · 1 inconclusive"
    assert line.startswith(f"Table X (synthetic), 5 seeds: {counts} — ")
    assert "vs the paper's median 0.50%" in line
    assert "seeds would give 80% power for the paper's change in half of the 1 inconclusive cells" in line
    assert line.endswith("(Holm over 4 of 4 cells, α = 0.05)")


def test_table_4_printed_change_is_converted_to_our_formula(write_study):
    paper = paper_tables()
    table4 = paper[paper["table"] == 4]
    rows = table4.assign(seed=0).rename(columns={"model": "variant"})[["variant", "seed", "group", "task", "metric",
                                                                      "value"]]
    tidy = summarise(read_study(write_study("biasnet", rows, reference="biasnet", variants=["biasnet", "mfh"],
                                            paper_table=4)))
    tidy = attach_paper(tidy, 4).set_index(["variant", "group", "task"])
    mfh = tidy.loc["mfh"]
    # The paper printed (mfh − biasnet) / mfh; ours divides by biasnet: the same numbers give our change back.
    assert (mfh["paper_change_as_ours"] - mfh["relative_change"]).abs().max() < 0.02
    assert not np.allclose(mfh["paper_change"], mfh["paper_change_as_ours"])
