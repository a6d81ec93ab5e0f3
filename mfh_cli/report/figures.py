"""The paper's Figure 1, mitigation of local overfitting (SPEC §4): along training, `train_impr` and `test_impr`,
the relative reduction of mfh's loss against flat's on the study's focus task and group, and their ratio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mfh_cli.errors import DataError
from mfh_cli.report.aggregate import relative_change
from mfh_cli.report.collect import ORACLE, StudyResults, read_history
from mfh_cli.report.files import write_atomically

MODEL, BASELINE = "mfh", "flat"  # Figure 1 compares MFH 12-task with flat 12-task
PAPER_RATIO = 2.5  # "the test error is reduced much more than the training error, about 2.5 times higher"
SERIES_COLUMNS = ["step", "epoch", "train_impr", "test_impr", "ratio", "n_seeds"]


def overfitting_series(study: StudyResults, results_dir: Path) -> pd.DataFrame:
    """Per history step: train_impr and test_impr = (flat − mfh) / flat × 100 of the loss, paired by seed and
    averaged over seeds, their ratio test_impr / train_impr, and the number of seeds (SERIES_COLUMNS)."""
    focus = study.focus or {}
    task, group = focus.get("task"), focus.get("group")
    if not task or not group:
        raise DataError(f"{study.directory / 'study.json'}: key 'focus' needs a task and a group for the figure")
    runs = (study.runs.loc[study.runs["variant"].isin([MODEL, BASELINE]), ["variant", "seed", "run_id"]]
            .drop_duplicates(["variant", "seed"]))
    missing = {MODEL, BASELINE} - set(runs["variant"])
    if missing:
        raise DataError(f"{study.directory / 'runs.csv'}: column 'variant' lacks {', '.join(sorted(missing))}; "
                        f"the overfitting figure compares {MODEL} with {BASELINE}")
    histories = pd.concat([_focus_history(results_dir, run, task, group) for run in runs.itertuples(index=False)])

    losses = histories.set_index(["seed", "split", "step", "variant"])["loss"].unstack("variant").dropna()
    # Relative reduction of the loss = minus the relative change of mfh against flat (SPEC §4).
    losses["improvement"] = -relative_change(losses[MODEL], losses[BASELINE])
    per_step = losses.groupby(["split", "step"])["improvement"].agg(["mean", "count"]).unstack("split").dropna()
    if per_step.empty or not {"train", "test"} <= set(per_step.columns.get_level_values("split")):
        raise DataError(f"{results_dir / 'runs'}: no history step where {MODEL} and {BASELINE} (same seed) both "
                        f"logged train and test loss for {task}/{group}")
    series = pd.DataFrame({"train_impr": per_step[("mean", "train")], "test_impr": per_step[("mean", "test")],
                           "n_seeds": per_step["count"].min(axis=1).astype("int64")}).reset_index()
    series["ratio"] = series["test_impr"] / series["train_impr"].where(series["train_impr"] != 0)
    series["epoch"] = series["step"].map(histories.groupby("step")["epoch"].max())
    return series[SERIES_COLUMNS]


def _focus_history(results_dir: Path, run, task: str, group: str) -> pd.DataFrame:
    """One run's history rows for the focus task and group, tagged with the run's variant and seed."""
    history = read_history(results_dir, run.run_id)
    path = Path(results_dir) / "runs" / run.run_id / "history.csv"
    history = history[(history["task"] == task) & (history["group"] == group)]
    if history.empty:
        raise DataError(f"{path}: columns 'task'/'group' have no rows for {task}/{group} (study.json focus)")
    if history.duplicated(["split", "step"]).any():
        raise DataError(f"{path}: one row per (step, split, group, task); {task}/{group} repeats a step")
    return history.assign(variant=run.variant, seed=run.seed)


def ratio_line(series: pd.DataFrame, task: str, group: str) -> str:
    """One line comparing the mean ratio test_impr / train_impr with the paper's ≈ 2.5."""
    ratios = series["ratio"].replace([np.inf, -np.inf], np.nan).dropna()
    ratio_of_means = series["test_impr"].mean() / series["train_impr"].mean()
    return (f"overfitting ({task}, {group} users): test_impr / train_impr = {ratios.mean():.2f} on average over "
            f"{len(ratios)} steps (ratio of the mean improvements {ratio_of_means:.2f}, mean train_impr "
            f"{series['train_impr'].mean():+.2f}%, test_impr {series['test_impr'].mean():+.2f}%, "
            f"{int(series['n_seeds'].min())} seed(s)); the paper saw ≈ {PAPER_RATIO}")


def write_overfitting_figure(series: pd.DataFrame, path: Path, title: str) -> Path:
    """A PNG like the paper's Figure 1: train_impr and test_impr as lines, their ratio as bars."""
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    ratio_axis = figure.add_subplot()
    steps = series["step"].to_numpy(float)
    width = 0.6 * (np.diff(steps).min() if len(steps) > 1 else max(steps[0], 1.0))
    ratio_axis.bar(steps, series["ratio"].fillna(0), width=width, color="0.8", label="test_impr / train_impr")
    ratio_axis.axhline(PAPER_RATIO, color="0.5", linestyle=":", linewidth=1, label=f"paper ≈ {PAPER_RATIO}")
    ratio_axis.set_xlabel("training step")
    ratio_axis.set_ylabel("ratio test_impr / train_impr")
    improvement_axis = ratio_axis.twinx()
    improvement_axis.plot(steps, series["train_impr"], marker="o", color="tab:blue", label="train_impr")
    improvement_axis.plot(steps, series["test_impr"], marker="s", color="tab:orange", label="test_impr")
    improvement_axis.axhline(0, color="0.3", linewidth=0.5)
    improvement_axis.set_ylabel("improvement of mfh over flat (%)")
    handles = [*ratio_axis.get_legend_handles_labels()[0], *improvement_axis.get_legend_handles_labels()[0]]
    improvement_axis.legend(handles=handles, loc="upper left", fontsize="small")
    ratio_axis.set_title(title)
    return write_figure(figure, path)


# --- The mechanism sweep (issue "verdicts", conf/study/mechanism.yaml): when does sharing along two facets help? ---

MECHANISM_COLUMNS = ["setting", "x", "line", "group", "task", "metric", "variant", "change", "change_ci_low",
                     "change_ci_high", "verdict", "n_seeds"]


def override_value(overrides: list[str], key: str) -> str | None:
    """The value a `key=value` override list sets for `key` (the last one wins), or None."""
    values = [item.split("=", 1)[1] for item in overrides if item.split("=", 1)[0].lstrip("+") == key]
    return values[-1] if values else None


def mechanism_series(settings: list[tuple[StudyResults, pd.DataFrame]]) -> pd.DataFrame:
    """One row per setting × group × task for the compared variant and the oracle: the change against the
    reference (MECHANISM_COLUMNS), signed so that positive is better for the metric."""
    rows = []
    for study, tidy in settings:
        sweep = study.info["sweep"]
        figure = sweep.get("figure") or {}
        x = override_value(sweep["overrides"], figure.get("x", ""))
        line = override_value(sweep["overrides"], figure.get("lines", "")) or "default"
        compared = tidy[tidy["variant"].isin([figure.get("variant", "mfh"), ORACLE])]
        for row in compared.itertuples(index=False):
            sign = -1.0 if row.metric == "mse" else 1.0  # lower MSE is better: up = better on every panel
            low, high = sign * row.change_ci_low, sign * row.change_ci_high
            rows.append({"setting": sweep["setting"], "x": float(x) if x is not None else np.nan, "line": line,
                         "group": row.group, "task": row.task, "metric": row.metric, "variant": row.variant,
                         "change": sign * row.relative_change, "change_ci_low": min(low, high),
                         "change_ci_high": max(low, high), "verdict": row.verdict, "n_seeds": row.n_seeds})
    return pd.DataFrame(rows, columns=MECHANISM_COLUMNS)


def mechanism_figure(series: pd.DataFrame, title: str, x_label: str, variant: str, reference: str) -> Figure:
    """Top row: the variant's change against the reference per group (mean and 95% paired interval over seeds),
    a line per task and per line setting; bottom row: the oracle's change against the reference (the headroom)."""
    groups = list(dict.fromkeys(series["group"]))
    figure = Figure(figsize=(4.2 * len(groups), 7.5), layout="constrained")
    axes = figure.subplots(2, len(groups), squeeze=False, sharex=True)
    styles = ["-", "--", ":", "-."]
    colours = dict(zip(dict.fromkeys(series["task"]), ["tab:blue", "tab:orange", "tab:green", "tab:red",
                                                        "tab:purple"]))
    lines = list(dict.fromkeys(series["line"]))
    for column, group in enumerate(groups):
        for row, shown in enumerate((variant, ORACLE)):
            axis = axes[row][column]
            cells = series[(series["group"] == group) & (series["variant"] == shown)]
            for (task, line), points in cells.groupby(["task", "line"], sort=False):
                points = points.sort_values("x")
                error = [points["change"] - points["change_ci_low"], points["change_ci_high"] - points["change"]]
                axis.errorbar(points["x"], points["change"], yerr=None if shown == ORACLE else error,
                              color=colours[task], linestyle=styles[lines.index(line) % len(styles)], marker="o",
                              capsize=3, label=f"{task} ({line})")
            axis.axhline(0, color="0.3", linewidth=0.7)
            axis.set_title(f"{group} users: {'%s vs %s' % (shown, reference)}", fontsize="medium")
            axis.set_ylabel("change, % (up = better)")
            axis.set_xlabel(x_label)
    axes[0][-1].legend(fontsize="x-small", loc="best", title="task (setting)", title_fontsize="x-small")
    figure.suptitle(title)
    return figure


def write_figure(figure: Figure, path: Path) -> Path:
    """Save a figure atomically, in the format its suffix names (png, pdf, svg)."""
    return write_atomically(Path(path), lambda temporary: figure.savefig(temporary, format=Path(path).suffix[1:],
                                                                          dpi=120))
