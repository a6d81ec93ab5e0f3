"""The overfitting figure (paper Figure 1): the series and summary against values computed by hand, the saved
figure's panels and intervals, the summary line in every output; the mechanism sweep's figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mfh_cli.errors import DataError
from mfh_cli.report.build import run_report

STEPS = np.array([100, 200, 300, 400])
EPOCHS = np.array([0, 0, 1, 1])
# Focus-task losses (share, new users) per (variant, seed, split); other tasks/groups get different numbers.
LOSSES = {
    ("flat", 0, "train"): np.array([0.100, 0.090, 0.080, 0.070]),
    ("flat", 0, "test"): np.array([0.120, 0.118, 0.117, 0.119]),
    ("mfh", 0, "train"): np.array([0.099, 0.088, 0.078, 0.068]),
    ("mfh", 0, "test"): np.array([0.117, 0.112, 0.110, 0.111]),
    ("flat", 1, "train"): np.array([0.110, 0.095, 0.085, 0.072]),
    ("flat", 1, "test"): np.array([0.125, 0.121, 0.120, 0.121]),
    ("mfh", 1, "train"): np.array([0.108, 0.094, 0.083, 0.070]),
    ("mfh", 1, "test"): np.array([0.121, 0.117, 0.113, 0.114]),
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STUDY_NOTE = "share is rare: read the interval, not the point"


def expected_improvement(split: str) -> np.ndarray:
    """(flat − mfh) / flat × 100 per step, averaged over the two seeds."""
    per_seed = [(LOSSES[("flat", seed, split)] - LOSSES[("mfh", seed, split)]) / LOSSES[("flat", seed, split)] * 100
                for seed in (0, 1)]
    return (per_seed[0] + per_seed[1]) / 2


def _history(variant: str, seed: int) -> pd.DataFrame:
    frames = []
    for split in ("train", "test"):
        focus = LOSSES[(variant, seed, split)]
        for group, task, loss in (("new", "share", focus), ("new", "like", focus * 3), ("high", "share", focus / 5)):
            frames.append(pd.DataFrame({"step": STEPS, "epoch": EPOCHS, "split": split, "group": group,
                                        "task": task, "loss": loss}))
    return pd.concat(frames)


@pytest.fixture
def overfitting_study(write_study, write_history):
    rows = [(variant, seed, group, task, 0.7 + 0.01 * seed) for variant in ("mfh", "flat") for seed in (0, 1)
            for group in ("new", "high") for task in ("share", "like")]
    cells = pd.DataFrame(rows, columns=["variant", "seed", "group", "task", "value"]).assign(metric="auc")
    directory = write_study("overfitting", cells, reference="flat", variants=["flat", "mfh"],
                            focus={"task": "share", "group": "new"}, note=STUDY_NOTE)
    for variant in ("mfh", "flat"):
        for seed in (0, 1):
            write_history(f"{variant}-{seed}", _history(variant, seed))
    return directory


def _per_seed(split: str) -> np.ndarray:
    """[seed, step] (flat − mfh) / flat × 100."""
    return np.array([(LOSSES[("flat", seed, split)] - LOSSES[("mfh", seed, split)]) / LOSSES[("flat", seed, split)]
                     * 100 for seed in (0, 1)])


def _interval(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 95% t interval over two seeds (axis 0): t with 1 degree of freedom is Cauchy, quantile tan(0.475 π)."""
    half = np.tan(0.475 * np.pi) * values.std(axis=0, ddof=1) / np.sqrt(2)
    return values.mean(axis=0) - half, values.mean(axis=0) + half


def test_series_and_summary_over_seeds(overfitting_study, results_dir, captured_console):
    summary = run_report(results_dir, console=captured_console)

    series = pd.read_csv(results_dir / "figures" / "overfitting.csv")
    train, test = _per_seed("train"), _per_seed("test")
    assert series["step"].tolist() == STEPS.tolist() and series["epoch"].tolist() == EPOCHS.tolist()
    assert series["train_impr"].to_numpy() == pytest.approx(expected_improvement("train"))
    assert series["test_impr"].to_numpy() == pytest.approx(expected_improvement("test"))
    for name, values in (("train_impr", train), ("gap", test - train), ("ratio", test / train)):
        low, high = _interval(values)
        assert series[name].to_numpy() == pytest.approx(values.mean(axis=0))
        assert series[f"{name}_ci_low"].to_numpy() == pytest.approx(low)
        assert series[f"{name}_ci_high"].to_numpy() == pytest.approx(high)
    assert (series["n_seeds"] == 2).all()

    paths = {path.name for path in summary.files}
    assert {"overfitting.png", "overfitting.pdf", "overfitting.csv"} <= paths
    assert (results_dir / "figures" / "overfitting.png").read_bytes()[:8] == PNG_MAGIC
    assert (results_dir / "figures" / "overfitting.pdf").read_bytes()[:4] == b"%PDF"
    # The summary: each seed's mean over the steps, then the mean and interval over seeds.
    gap = (test - train).mean(axis=1)
    low, high = _interval(gap[:, None])
    printed = " ".join(captured_console.file.getvalue().split())
    assert (f"generalisation gap test_impr − train_impr = {gap.mean():+.2f} points [{low[0]:+.2f}, {high[0]:+.2f}]"
            in printed)
    ratio = test.mean(axis=1) / train.mean(axis=1)
    assert f"test_impr / train_impr = {ratio.mean():+.2f} [" in printed and "the paper saw a ratio ≈ 2.5" in printed
    assert f"note: {STUDY_NOTE}" in printed
    assert summary.agreement == []  # no paper numbers for this study: no agreement line


def test_the_summary_line_is_in_every_output(overfitting_study, results_dir, captured_console):
    run_report(results_dir, fmt="markdown", console=captured_console)
    tables = results_dir / "tables"
    markdown, latex = (tables / "overfitting.md").read_text(), (tables / "overfitting.tex").read_text()
    line = next(line[2:] for line in markdown.splitlines() if line.startswith("- Figure 1 (share, new users"))
    assert "generalisation gap test_impr − train_impr = " in line
    assert r"generalisation gap test\_impr - train\_impr = " in latex
    rows = pd.read_csv(tables / "overfitting.csv").set_index("metric")
    gap = rows.loc["gap"]
    assert (gap["study"], gap["group"], gap["variant"], gap["task"], gap["n_seeds"]) == (
        "overfitting", "new", "mfh", "share", 2)
    assert f"= {gap['mean']:+.2f} points [{gap['ci_low']:+.2f}, {gap['ci_high']:+.2f}]" in line
    assert set(rows.index) >= {"auc", "gap", "train_impr", "test_impr", "ratio"}


def test_figure_has_one_panel_per_quantity_with_intervals(overfitting_study, results_dir):
    from mfh_cli.report.collect import read_study
    from mfh_cli.report.figures import (overfitting_figure, overfitting_improvements, overfitting_series,
                                        overfitting_summary)

    improvements = overfitting_improvements(read_study(overfitting_study), results_dir)
    summary = overfitting_summary(improvements)
    figure = overfitting_figure(overfitting_series(improvements), summary, "Figure 1 (synthetic)", "mfh", "flat")
    axes = figure.get_axes()
    assert [axis.get_title() for axis in axes] == [
        "generalisation gap test_impr − train_impr (points)", "train_impr: reduction of training log loss (%)",
        "test_impr: reduction of test log loss (%)", "ratio test_impr / train_impr (where train_impr > 0)"]
    for axis in axes:  # own axis, own zero, one errorbar series with its vertical interval bars
        (container,) = axis.containers
        assert container.has_yerr and len(container.lines[2][0].get_segments()) == len(STEPS)
        assert any(list(line.get_ydata()) == [0, 0] for line in axis.get_lines())
        assert axis.get_legend() is None  # the one legend sits below the panels, over no point
    paper_lines = [axis.get_title() for axis in axes for line in axis.get_lines()
                   if list(line.get_ydata()) == [2.5, 2.5]]
    assert paper_lines == ["ratio test_impr / train_impr (where train_impr > 0)"]
    assert len(figure.legends) == 1
    assert figure.get_suptitle().startswith("Figure 1 (synthetic)\n")
    assert "gap" in figure.get_suptitle().splitlines()[1]


@pytest.mark.parametrize("low, high, finding", [
    (0.5, 3.0, "mfh generalises better than flat"), (-3.0, -0.5, "mfh generalises worse than flat"),
    (-1.0, 3.0, "no difference in generalisation shown"), (np.nan, np.nan, "one seed: no interval")])
def test_the_title_states_what_the_gap_interval_shows(low, high, finding):
    from mfh_cli.report.figures import overfitting_finding

    summary = pd.DataFrame({"quantity": ["gap", "train_impr", "test_impr", "ratio"], "mean": 1.0,
                            "ci_low": low, "ci_high": high, "n_seeds": 3, "steps": 4})
    assert finding in overfitting_finding(summary, "mfh", "flat")
    assert "mitigation" not in overfitting_finding(summary, "mfh", "flat")


def test_the_figure_compares_the_pair_the_study_file_names(tmp_path):
    from mfh_cli.errors import DataError
    from mfh_cli.report.collect import StudyResults
    from mfh_cli.report.figures import figure_pair

    def study(reference: str, variants: list[str]) -> StudyResults:
        return StudyResults({"study": "overfitting", "dataset": "synthetic", "reference": reference,
                             "variants": variants}, pd.DataFrame(), tmp_path)

    assert figure_pair(study("flat", ["flat", "mfh"])) == ("mfh", "flat")
    assert figure_pair(study("shared_bottom", ["shared_bottom", "hmtl", "mfh"])) == ("hmtl", "shared_bottom")
    with pytest.raises(DataError, match="no variant besides the reference flat"):
        figure_pair(study("flat", ["flat"]))


def test_missing_focus_rows_is_a_data_error(overfitting_study, results_dir, write_history, captured_console):
    history = _history("flat", 1)
    write_history("flat-1", history[history["group"] != "new"])
    with pytest.raises(DataError, match=r"flat-1/history.csv: columns 'task'/'group' have no rows for share/new"):
        run_report(results_dir, console=captured_console)
    assert not (results_dir / "figures" / "overfitting.png").exists()


# --- The mechanism sweep: one study per setting, drawn together. ---

def _setting_cells(deviation: float) -> pd.DataFrame:
    """flat, mfh and the oracle on two groups × (cmpl MSE, finish AUC), 3 seeds; mfh gains 1% per unit of deviation."""
    rows = []
    for seed in range(3):
        for group in ("new", "high"):
            flat_mse, flat_auc = 0.05 + 0.001 * seed, 0.70 + 0.002 * seed
            gain = 0.01 * deviation + 0.001 * (seed - 1)
            rows += [("flat", seed, group, "cmpl", "mse", flat_mse), ("flat", seed, group, "finish", "auc", flat_auc),
                     ("mfh", seed, group, "cmpl", "mse", flat_mse * (1 - gain)),
                     ("mfh", seed, group, "finish", "auc", flat_auc * (1 + gain)),
                     ("oracle", seed, group, "cmpl", "mse", 0.03), ("oracle", seed, group, "finish", "auc", 0.8)]
    return pd.DataFrame(rows, columns=["variant", "seed", "group", "task", "metric", "value"])


@pytest.fixture
def sweep(write_study, results_dir):
    import json

    for deviation in (0, 1, 2):
        setting = f"deviation_{deviation}"
        directory = write_study(f"mechanism_{setting}", _setting_cells(deviation), reference="flat",
                                variants=["flat", "mfh"])
        info = json.loads((directory / "study.json").read_text())
        info["sweep"] = {"study": "mechanism", "setting": setting,
                         "overrides": [f"data.group_deviation={deviation}", "data.rows=120000"],
                         "figure": {"x": "data.group_deviation", "lines": "data.rows", "variant": "mfh"}}
        (directory / "study.json").write_text(json.dumps(info))
    return results_dir


def test_mechanism_series_is_signed_so_that_up_is_better(sweep):
    from mfh_cli.report.build import sweep_figure

    paths = sweep_figure(sweep, "mechanism", "synthetic")
    assert [path.name for path in paths] == ["mechanism.png", "mechanism.pdf", "mechanism.csv"]
    assert paths[0].read_bytes()[:8] == PNG_MAGIC and paths[1].read_bytes()[:4] == b"%PDF"
    series = pd.read_csv(paths[2])
    mfh = series[series["variant"] == "mfh"].set_index(["x", "group", "task"])
    assert sorted(series["x"].unique()) == [0, 1, 2] and set(series["line"].astype(str)) == {"120000"}
    # mfh's MSE falls and its AUC rises by ~1% per unit of deviation: both are +1% "better" changes.
    for task in ("cmpl", "finish"):
        assert mfh.loc[(2, "high", task), "change"] == pytest.approx(2.0, abs=0.01)
        assert mfh.loc[(2, "high", task), "change_ci_low"] < 2.0 < mfh.loc[(2, "high", task), "change_ci_high"]
    oracle = series[series["variant"] == "oracle"].set_index(["x", "group", "task"])
    assert oracle.loc[(0, "new", "cmpl"), "change"] > 0  # the oracle's lower MSE is headroom, up


def test_mechanism_figure_has_a_panel_per_group_and_quantity(sweep):
    from mfh_cli.report.collect import find_studies
    from mfh_cli.report.aggregate import summarise
    from mfh_cli.report.figures import mechanism_figure, mechanism_series

    settings = [(found, summarise(found)) for found in find_studies(sweep, "mechanism")]
    figure = mechanism_figure(mechanism_series(settings), "t", "data.group_deviation", "mfh", "flat")
    axes = figure.get_axes()
    assert len(axes) == 4  # two groups × (mfh vs flat, oracle vs flat)
    assert [axis.get_title() for axis in axes] == ["new users: mfh vs flat", "high users: mfh vs flat",
                                                   "new users: oracle vs flat", "high users: oracle vs flat"]
    top_left = axes[0]
    assert len(top_left.containers) == 2  # one errorbar series per task, each with its interval bars
    assert all(len(container.lines[2]) == 1 for container in top_left.containers)  # the vertical error bars
