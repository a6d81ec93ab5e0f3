"""The overfitting figure (paper Figure 1): the series against values computed by hand, a real PNG, the ratio line."""

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


def test_series_png_and_ratio_line(overfitting_study, results_dir, captured_console):
    summary = run_report(results_dir, console=captured_console)

    series = pd.read_csv(results_dir / "figures" / "overfitting.csv")
    train, test = expected_improvement("train"), expected_improvement("test")
    assert series["step"].tolist() == STEPS.tolist() and series["epoch"].tolist() == EPOCHS.tolist()
    assert series["train_impr"].to_numpy() == pytest.approx(train)
    assert series["test_impr"].to_numpy() == pytest.approx(test)
    assert series["ratio"].to_numpy() == pytest.approx(test / train)
    assert (series["n_seeds"] == 2).all()

    png = results_dir / "figures" / "overfitting.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    assert {png, results_dir / "figures" / "overfitting.csv"} <= set(summary.files)
    printed = " ".join(captured_console.file.getvalue().split())
    assert f"test_impr / train_impr = {np.mean(test / train):.2f} on average over 4 steps" in printed
    assert "the paper saw ≈ 2.5" in printed
    assert f"note: {STUDY_NOTE}" in printed
    # No paper numbers for this study: no agreement line.
    assert summary.agreement == []


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
