"""The paper's Figure 1, local overfitting (SPEC §4): along training, `train_impr` and `test_impr`, the relative
reduction of the compared variant's loss against the reference's (the study file's pair: mfh against flat for
conf/study/overfitting.yaml) on the study's focus task and group, their generalisation gap
test_impr − train_impr (the primary figure) and their ratio (only where train_impr > 0), each with its 95% interval
over seeds; and the mechanism sweep's figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mfh_cli.errors import DataError
from mfh_cli.report.aggregate import relative_change, t_interval
from mfh_cli.report.collect import ORACLE, StudyResults, read_history
from mfh_cli.files import write_atomically
from mfh_cli.tasks import lower_is_better

PAPER_RATIO = 2.5  # "the test error is reduced much more than the training error, about 2.5 times higher"
# Figure 1's quantities, the primary one (SPEC §4) first, and how each is labelled.
QUANTITIES = {"gap": "generalisation gap test_impr − train_impr (points)",
              "train_impr": "train_impr: reduction of training log loss (%)",
              "test_impr": "test_impr: reduction of test log loss (%)",
              "ratio": "ratio test_impr / train_impr (where train_impr > 0)"}
SERIES_COLUMNS = ["step", "epoch", *(f"{name}{suffix}" for name in QUANTITIES
                                     for suffix in ("", "_ci_low", "_ci_high")), "n_seeds"]
SUMMARY_COLUMNS = ["quantity", "mean", "ci_low", "ci_high", "n_seeds", "steps"]


def figure_pair(study: StudyResults) -> tuple[str, str]:
    """(variant, reference) that Figure 1 compares, from the study file: its reference and the first other variant
    it lists (conf/study/overfitting.yaml: mfh against flat)."""
    others = [str(variant) for variant in study.info.get("variants", [])
              if str(variant) not in (study.reference, ORACLE)]
    if not others:
        raise DataError(f"{study.directory / 'study.json'}: key 'variants' has no variant besides the reference "
                        f"{study.reference} for the overfitting figure to compare")
    return others[0], study.reference


def overfitting_improvements(study: StudyResults, results_dir: Path) -> pd.DataFrame:
    """Per seed and history step: train_impr and test_impr = (reference − variant) / reference × 100 of the focus
    loss (same seed; figure_pair), gap = test_impr − train_impr, and ratio = test_impr / train_impr where
    train_impr > 0 (else NaN)."""
    variant, reference = figure_pair(study)
    focus = study.focus or {}
    task, group = focus.get("task"), focus.get("group")
    if not task or not group:
        raise DataError(f"{study.directory / 'study.json'}: key 'focus' needs a task and a group for the figure")
    runs = (study.runs.loc[study.runs["variant"].isin([variant, reference]), ["variant", "seed", "run_id"]]
            .drop_duplicates(["variant", "seed"]))
    missing = {variant, reference} - set(runs["variant"])
    if missing:
        raise DataError(f"{study.directory / 'runs.csv'}: column 'variant' lacks {', '.join(sorted(missing))}; "
                        f"the overfitting figure compares {variant} with {reference}")
    histories = pd.concat([_focus_history(results_dir, run, task, group) for run in runs.itertuples(index=False)])

    losses = histories.set_index(["seed", "split", "step", "variant"])["loss"].unstack("variant").dropna()
    # Relative reduction of the loss = minus the relative change of the variant against the reference (SPEC §4).
    losses["improvement"] = -relative_change(losses[variant], losses[reference])
    per_seed = losses["improvement"].unstack("split").dropna()
    if per_seed.empty or not {"train", "test"} <= set(per_seed.columns):
        raise DataError(f"{results_dir / 'runs'}: no history step where {variant} and {reference} (same seed) both "
                        f"logged train and test loss for {task}/{group}")
    improvements = pd.DataFrame({"train_impr": per_seed["train"], "test_impr": per_seed["test"]}).reset_index()
    improvements["gap"] = improvements["test_impr"] - improvements["train_impr"]
    improvements["ratio"] = improvements["test_impr"] / improvements["train_impr"].where(
        improvements["train_impr"] > 0)
    improvements["epoch"] = improvements["step"].map(histories.groupby("step")["epoch"].max())
    return improvements


def overfitting_series(improvements: pd.DataFrame) -> pd.DataFrame:
    """Per step, each quantity's mean over seeds and its 95% t interval (SERIES_COLUMNS); a step's ratio only
    where train_impr > 0 in every seed."""
    steps = improvements.groupby(["step", "epoch"])
    series = steps.size().rename("n_seeds").reset_index()
    for name in QUANTITIES:
        statistics = steps[name].agg(["mean", "std", "count"]).reset_index(drop=True)
        complete = statistics["count"] == series["n_seeds"]
        low, high = t_interval(statistics["mean"], statistics["std"], statistics["count"])
        series[name], series[f"{name}_ci_low"], series[f"{name}_ci_high"] = (
            column.where(complete) for column in (statistics["mean"], low, high))
    return series[SERIES_COLUMNS]


def overfitting_summary(improvements: pd.DataFrame) -> pd.DataFrame:
    """Each quantity over training (SUMMARY_COLUMNS): its mean over the steps within each seed, then the mean and
    95% t interval over seeds. The ratio is that of a seed's mean improvements, and only where every seed's mean
    train_impr is above 0 (SPEC §4: its sign misleads otherwise)."""
    per_seed = improvements.groupby("seed")[["train_impr", "test_impr", "gap"]].mean()
    per_seed["ratio"] = per_seed["test_impr"] / per_seed["train_impr"].where(per_seed["train_impr"] > 0)
    seeds = len(per_seed)
    mean, std = per_seed.mean(), per_seed.std()
    count = per_seed.count()
    low, high = t_interval(mean, std, count)
    complete = count == seeds
    summary = pd.DataFrame({"quantity": list(QUANTITIES), "mean": mean.where(complete)[list(QUANTITIES)].to_numpy(),
                            "ci_low": low.where(complete)[list(QUANTITIES)].to_numpy(),
                            "ci_high": high.where(complete)[list(QUANTITIES)].to_numpy(), "n_seeds": seeds,
                            "steps": improvements["step"].nunique()})
    return summary[SUMMARY_COLUMNS]


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


def _estimate(summary: pd.DataFrame, quantity: str, unit: str) -> str:
    """'+17.90 points [+5.10, +30.70]': a summary quantity with its interval (none with one seed)."""
    row = summary.set_index("quantity").loc[quantity]
    if np.isnan(row["mean"]):
        return "not shown"
    interval = "" if np.isnan(row["ci_low"]) else f" [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"
    return f"{row['mean']:+.2f}{unit}{interval}"


def overfitting_finding(summary: pd.DataFrame, model: str, baseline: str) -> str:
    """What Figure 1 measured, decided by the gap's 95% interval over seeds (SPEC §4: the primary figure)."""
    gap = summary.set_index("quantity").loc["gap"]
    if np.isnan(gap["ci_low"]):
        return f"{model} against {baseline}, one seed: no interval, nothing decided"
    if gap["ci_low"] > 0:
        return f"{model} generalises better than {baseline} (gap above 0)"
    if gap["ci_high"] < 0:
        return f"{model} generalises worse than {baseline} (gap below 0)"
    return f"no difference in generalisation shown between {model} and {baseline} (gap interval spans 0)"


def overfitting_line(summary: pd.DataFrame, task: str, group: str, model: str, baseline: str) -> str:
    """Figure 1's summary line: the finding, the gap, train_impr, test_impr and the ratio, with intervals."""
    first = summary.iloc[0]
    ratio = summary.set_index("quantity").loc["ratio"]
    ratio_text = (f"test_impr / train_impr = {_estimate(summary, 'ratio', '')}" if not np.isnan(ratio["mean"]) else
                  "test_impr / train_impr not shown: a seed's mean train_impr is ≤ 0, so the ratio's sign misleads "
                  "(SPEC §4)")
    return (f"Figure 1 ({task}, {group} users; {int(first['n_seeds'])} seed(s), {int(first['steps'])} steps, "
            f"mean over steps then 95% interval over seeds): {overfitting_finding(summary, model, baseline)}; "
            f"generalisation gap "
            f"test_impr − train_impr = {_estimate(summary, 'gap', ' points')}; train_impr "
            f"{_estimate(summary, 'train_impr', '%')}, test_impr {_estimate(summary, 'test_impr', '%')}; "
            f"{ratio_text}; the paper saw a ratio ≈ {PAPER_RATIO}")


def overfitting_title(task: str, group: str, dataset: str, seeds: int, model: str, baseline: str) -> str:
    """Figure 1's first title line: what is compared, where, on how many seeds (the finding follows it)."""
    return f"Figure 1: {model} against {baseline}, {task} for {group} users ({dataset}, {seeds} seed(s))"


def overfitting_figure(series: pd.DataFrame, summary: pd.DataFrame, title: str, model: str, baseline: str) -> Figure:
    """Figure 1 as four panels sharing the step axis, each quantity on its own axis with its own zero: mean over
    seeds ± 95% interval per step; the paper's ratio marked on the ratio panel only; the legend below the panels."""
    figure = Figure(figsize=(11, 7.5), layout="constrained")
    axes = figure.subplots(2, 2, sharex=True).ravel()
    steps = series["step"].to_numpy(float)
    for axis, (name, label) in zip(axes, QUANTITIES.items()):
        means = series[name].to_numpy(float)
        error = np.abs(np.vstack([means - series[f"{name}_ci_low"], series[f"{name}_ci_high"] - means]))
        shown = ~np.isnan(means)
        if shown.any():
            axis.errorbar(steps[shown], means[shown], yerr=np.nan_to_num(error[:, shown]), marker="o", markersize=4,
                          capsize=3, color="tab:blue", label="mean over seeds ± 95% interval")
        axis.axhline(0, color="0.3", linewidth=0.7)
        axis.set_title(label, fontsize="medium")
    for axis in axes[2:]:
        axis.set_xlabel("training step")
    ratio_axis = axes[list(QUANTITIES).index("ratio")]
    ratio_axis.axhline(PAPER_RATIO, color="tab:red", linestyle=":", linewidth=1.2,
                       label=f"paper ≈ {PAPER_RATIO} (ratio only)")
    if series["ratio"].isna().all():
        ratio_axis.text(0.5, 0.5, "no step with train_impr > 0 in every seed:\nno ratio (SPEC §4)",
                        transform=ratio_axis.transAxes, ha="center", va="center", color="0.4")
    handles = {label: handle for axis in axes for handle, label in zip(*axis.get_legend_handles_labels())}
    figure.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=len(handles), fontsize="small")
    finding = overfitting_finding(summary, model, baseline)
    figure.suptitle(f"{title}\n{finding}:\ngap {_estimate(summary, 'gap', ' points')} "
                    f"(mean over {int(summary['steps'].iloc[0])} steps, 95% interval over "
                    f"{int(summary['n_seeds'].iloc[0])} seeds)", fontsize="medium")
    return figure


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
            sign = -1.0 if lower_is_better(row.metric) else 1.0  # lower MSE is better: up = better on every panel
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
