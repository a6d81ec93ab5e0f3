"""`mfh report`: every study's tidy table (mean ± 95% interval, change, paired test, the paper beside ours), its
verdicts and closing line, written to results/tables and printed, and the overfitting figure. Reads result files
only; never imports torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from rich.console import Console

from mfh_cli.errors import ConfigError
from mfh_cli.report.aggregate import MIN_CELL_ROWS, MIN_CLASS_ROWS, summarise
from mfh_cli.report.collect import ORACLE, StudyResults, datasets_of, find_studies
from mfh_cli.report.figures import (figure_pair, mechanism_figure, mechanism_series, overfitting_figure,
                                    overfitting_improvements, overfitting_line, overfitting_series,
                                    overfitting_summary, overfitting_title, write_figure)
from mfh_cli.files import write_text_atomically
from mfh_cli.report.paper import agreement_line, attach_paper
from mfh_cli.report.noise import noise_budget, noise_line
from mfh_cli.report.pooled import ALL_CELLS, pooled_csv_rows, pooled_line, pooled_verdicts
from mfh_cli.report.render import (ORACLE_BELOW_MARK, pooled_rich_table, study_latex, study_markdown,
                                   study_rich_tables, verdict_rich_table)
from mfh_cli.report.verdicts import ALPHA, DEFAULT_EFFECT_PCT, counted_cells, verdict_line
from mfh_cli.tasks import KINDS, PRIMARY, REGISTRY, kind_of, lower_is_better, metric_label

FORMATS = ("table", "csv", "markdown", "latex")


@dataclass
class ReportSummary:
    """What a report produced: one pooled verdict line per table (the table's question as a whole, over all its
    cells), one verdict line per table, one paper-agreement line per table compared with the paper, one line per
    control the study expects, and the files written."""

    pooled: list[str] = field(default_factory=list)
    # (title, pooled verdicts over all cells) of each table compared with the paper: what the main job decided
    decisions: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    agreement: list[str] = field(default_factory=list)
    controls: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def run_report(results_dir: Path, study: str | None = None, dataset: str | None = None, fmt: str = "table",
               paper: bool = True, console: Console | None = None, output: Path | None = None,
               metric: str | None = None) -> ReportSummary:
    """Report every study (or `study`) on every dataset found (or `dataset`), tasks of `metric`'s kind in `metric`
    (None: AUC for binary, MSE for regression; tasks.shown_metrics): write
    results/tables/<study>[_<dataset>].{csv,md,tex} (the dataset suffix only when the study has several) and,
    for a study with a focus, results/figures/<study>[_<dataset>].{png,pdf,csv}; print the tables in `fmt` (csv:
    one tidy CSV over every study, with study, dataset and table columns), or with `output` write each study's
    table in `fmt` to output/<stem>.<csv|md|tex> instead."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown report format '{fmt}': choose one of {', '.join(FORMATS)}")
    if output is not None and fmt == "table":
        raise ConfigError("--output writes files: give it with --format csv, markdown or latex")
    if metric is not None and metric not in REGISTRY:
        raise ConfigError(f"unknown metric '{metric}': choose one of {', '.join(REGISTRY)} (mfh_cli/tasks.py)")
    results_dir = Path(results_dir)
    console = console or Console(width=max(Console().width, 140))
    side_console = console if fmt == "table" else Console(stderr=True)  # keeps csv/markdown/latex stdout clean
    studies = find_studies(results_dir, study, dataset, metric)
    # Another metric's tables are written beside the default ones (<study>_gauc.csv), never over them.
    metric_suffix = f"_{metric}" if metric is not None and metric not in PRIMARY.values() else ""
    summary = ReportSummary()
    sweeps: dict[tuple[str, str], list[tuple[StudyResults, pd.DataFrame]]] = {}
    csv_frames = []
    for found in studies:
        several_datasets = len(datasets_of(results_dir, found.name)) > 1
        stem = (f"{found.name}_{found.dataset}" if several_datasets else found.name) + metric_suffix
        tidy = summarise(found)
        title = _title(found)
        agreement = None
        beside_paper = paper and found.paper_table is not None  # sota and overfitting have no paper numbers
        if beside_paper:
            tidy = attach_paper(tidy, found.paper_table)
            agreement = agreement_line(tidy, title)
            summary.agreement.append(agreement)
        budget = noise_budget(found, results_dir)
        tidy = tidy.merge(budget, on=["variant", "group", "task", "metric"], how="left")
        noise = noise_line(budget, title, int((tidy["verdict"] != "").sum()))
        pooled = pooled_verdicts(found, tidy)
        pooled_lines = [pooled_line(pooled, title, scope) for scope in dict.fromkeys(pooled["scope"])]
        summary.pooled += pooled_lines[:1]
        if not pooled.empty and beside_paper:
            summary.decisions.append((title, pooled[pooled["scope"] == ALL_CELLS]))
        verdicts = verdict_line(tidy, title)
        summary.verdicts.append(verdicts)
        controls = control_lines(found, tidy)
        summary.controls += controls
        figure = _overfitting_figure(found, results_dir, stem) if found.focus else None
        notes = (pooled_lines + table_notes(found, tidy, beside_paper) + ([figure.line] if figure else [])
                 + [verdicts, *controls] + ([noise] if noise else []) + ([agreement] if agreement else []))
        table_frame = csv_frame(found, tidy, figure.summary if figure else None, pooled)
        texts = {"csv": table_frame.to_csv(index=False),
                 "md": study_markdown(tidy, title, beside_paper, notes, pooled),
                 "tex": study_latex(tidy, title, beside_paper, notes, pooled)}
        summary.files += [write_text_atomically(results_dir / "tables" / f"{stem}.{suffix}", text)
                          for suffix, text in texts.items()]
        suffix = {"csv": "csv", "markdown": "md", "latex": "tex"}.get(fmt)
        if fmt == "table":
            for table in study_rich_tables(tidy, title, beside_paper, console.width):
                console.print(table)
            if not pooled.empty:
                console.print(pooled_rich_table(pooled, f"{title} as a whole: does each variant beat "
                                                        f"{found.reference} over the table's cells?"))
            console.print(verdict_rich_table(tidy, f"{title}: what each cell establishes"))
        elif output is not None:
            path = write_text_atomically(Path(output) / f"{stem}.{suffix}", texts[suffix])
            side_console.print(f"table: {path}", markup=False, highlight=False)
        elif fmt == "csv":  # printed once, after every study: one header
            csv_frames.append(table_frame)
        else:  # markdown and LaTeX carry their notes inside the rendered text
            console.out(texts[suffix], highlight=False)
        for note in notes if fmt in ("table", "csv") else []:
            side_console.print(f"note: {note}", markup=False, highlight=False)
        if figure:
            summary.files += figure.files
            side_console.print(f"figure: {figure.files[0]}", markup=False, highlight=False)
        if found.info.get("sweep"):
            sweeps.setdefault((found.info["sweep"]["study"], found.dataset), []).append((found, tidy))
    if csv_frames:
        console.out(pd.concat(csv_frames, ignore_index=True).to_csv(index=False), end="", highlight=False)
    for (name, dataset_name), settings in sweeps.items():
        if study in (None, "all", name):  # a report of one setting alone does not redraw the sweep's figure
            summary.files += _sweep_figure(name, dataset_name, settings, results_dir, metric_suffix)
    return summary


def csv_frame(study: StudyResults, tidy: pd.DataFrame, figure_summary: pd.DataFrame | None = None,
              pooled: pd.DataFrame | None = None) -> pd.DataFrame:
    """The tidy table as its CSV holds it: `study`, `dataset` and `table` (the study's title) first, so that the
    tables of several studies concatenate into one frame; the table's pooled verdicts first (group `pooled`, task
    the scope, with `cells` and `share_improved`); a study with a figure adds the figure's summary, one row per
    quantity (`metric` gap, train_impr, test_impr, ratio; mean and 95% interval over seeds)."""
    columns = [*tidy.columns, "cells", "share_improved"]
    frames = [pooled_csv_rows(pooled, columns)] if pooled is not None and not pooled.empty else []
    frames.append(tidy)
    if figure_summary is not None:
        focus = study.focus or {}
        variant, reference = figure_pair(study)
        frames.append(pd.DataFrame({"group": focus.get("group"), "variant": variant, "task": focus.get("task"),
                                    "metric": figure_summary["quantity"], "mean": figure_summary["mean"],
                                    "ci_low": figure_summary["ci_low"], "ci_high": figure_summary["ci_high"],
                                    "n_seeds": figure_summary["n_seeds"],
                                    "reason": [f"Figure 1 over {steps} steps vs {reference}" for steps
                                               in figure_summary["steps"]]}))
    frame = pd.concat(frames, ignore_index=True).reindex(columns=columns)
    return frame.assign(study=study.name, dataset=study.dataset, table=study.title)[["study", "dataset", "table",
                                                                                      *columns]]


def sweep_figure(results_dir: Path, name: str, dataset: str) -> list[Path]:
    """The figure of the sweeping study `name` on `dataset` from every setting found (PNG + series CSV)."""
    settings = [(found, summarise(found)) for found in find_studies(results_dir, name, dataset)]
    return _sweep_figure(name, dataset, settings, Path(results_dir))


def _sweep_figure(name: str, dataset: str, settings: list[tuple[StudyResults, pd.DataFrame]],
                  results_dir: Path, metric_suffix: str = "") -> list[Path]:
    first = settings[0][0]
    figure = first.info["sweep"].get("figure") or {}
    series = mechanism_series(settings)
    stem = (f"{name}_{dataset}" if dataset != "synthetic" else name) + metric_suffix
    title = (f"{name} ({dataset}, {int(series['n_seeds'].max())} seeds): {figure.get('variant', 'mfh')} against "
             f"{first.reference} per setting; lines: {figure.get('lines', 'default')}")
    drawn = mechanism_figure(series, title, figure.get("x", "setting"), figure.get("variant", "mfh"), first.reference)
    return [write_figure(drawn, results_dir / "figures" / f"{stem}.{suffix}") for suffix in ("png", "pdf")] + [
        _write_csv(series, results_dir / "figures" / f"{stem}.csv")]


def _title(study: StudyResults) -> str:
    tuned = f"; tuned, {study.tuned['trials']} trials per variant" if study.tuned else ""
    return f"{study.title} ({study.dataset}{tuned})"


def tuned_note(tuned: dict) -> str:
    """How `mfh ablate --tuned` set each variant's training: the keys searched, the budget, the overrides found."""
    records = [(variant, grid, record) for variant, grids in tuned["variants"].items()
               for grid, record in grids.items()]
    several_grids = len({grid for _, grid, _ in records}) > 1
    total = sum(int(record["trials"]) for _, _, record in records)
    pruned = sum(int(record["pruned"]) for _, _, record in records)
    failed = sum(int(record["failed"]) for _, _, record in records)
    found = "; ".join(f"{variant}{f' ({grid})' if several_grids else ''} {' '.join(record['overrides'])}"
                      for variant, grid, record in records)
    sampler, pruner = tuned["sampler"], tuned["pruner"]
    return (f"tuned: every variant trained with its own best {', '.join(tuned['space'])} from mfh tune, searched on "
            f"the validation split (test rows never used): {tuned['trials']} trials per variant, "
            f"{sampler['name']} seed {sampler['seed']}, {pruner['name']} ({pruned} of {total} trials pruned, "
            f"{failed} failed; {tuned['file']}): {found}")


def table_notes(study: StudyResults, tidy: pd.DataFrame, beside_paper: bool) -> list[str]:
    """The footnotes of a study table: how to read it, what could not be computed, what the paper columns are."""
    seeds = study.runs["seed"].nunique()
    shown = sorted(dict.fromkeys(tidy["metric"]), key=lambda name: KINDS.index(kind_of(name)))  # binary first
    scales = " or ".join(f"{REGISTRY[name].scale} {metric_label(name)}" for name in shown)
    lower = " and ".join(metric_label(name) for name in shown if lower_is_better(name))
    higher = " and ".join(metric_label(name) for name in shown if not lower_is_better(name))
    directions = " and ".join(part for part in (lower and f"lower {lower}", higher and f"higher {higher}") if part)
    notes = [f"value = mean over seeds [95% interval: t interval of the mean {scales} over seeds, "
             f"mapped back, so it stays inside what the metric can take]; change = (variant − "
             f"{study.reference}) / {study.reference} × 100 (SPEC §4), {directions} are better; "
             f"* = paired t-test over seeds, Holm-corrected over the table's cells, p < {ALPHA:g}",
             f"verdicts (SPEC §4, docs/statistics.md): interval = paired 95% t interval of the change in this "
             f"cell alone; p (Holm) = paired t-test of no change, Holm-corrected over the table; confirmed / "
             f"opposite = no change rejected, on / against the paper's side; smaller = the paper's change "
             f"rejected but not no change; inconclusive = neither; "
             f"better / worse / no difference shown where the paper has no value; detectable = the change these "
             f"seeds detect with 80% power at α/cells; seeds needed = for the paper's change (else "
             f"{DEFAULT_EFFECT_PCT:g}%)"]
    if study.info.get("recipes"):
        notes.append(recipe_note(study.info["recipes"]))
    if study.info.get("note"):
        notes.append(str(study.info["note"]))
    if study.tuned:
        notes.append(tuned_note(study.tuned))
    if study.sequential:
        notes.append(sequential_note(study.sequential, seeds))
    if seeds < 2:
        notes.append("one seed only: no interval and no paired test (run more seeds for error bars)")
    if ORACLE in set(tidy["variant"]):
        notes.append("oracle = the simulator's true expectations, an upper bound; its change is not tested")
    if tidy["small_sample"].str.startswith("too few rows").any():
        notes.append(f"too few rows (k in test): a cell (MSE) over fewer than {MIN_CELL_ROWS} test rows shows no "
                     "number; its verdict rests on that noise (docs/statistics.md)")
    if tidy["small_sample"].str.startswith(("too few positives", "too few negatives")).any():
        notes.append(f"too few positives (k in test): an AUC cell whose test rows hold fewer than {MIN_CLASS_ROWS} "
                     f"positives (or negatives) shows no number, since one row moves its AUC by up to 1/k; its "
                     f"verdict rests on that noise (docs/statistics.md)")
    notes += [f"{ORACLE_BELOW_MARK} {row.group}/{row.task}: the oracle (the true expectations) scores worse than "
              f"{row.oracle_below}: small-sample noise of the test rows, not a model beating the truth"
              for row in tidy[tidy["oracle_below"] != ""].itertuples(index=False)]
    # Cells with no value at all say why in the cell itself; partly missing ones are explained here.
    missing = tidy[(tidy["reason"] != "") & (tidy["n_seeds"] > 0)]
    notes += [f"{row.group}/{row.variant}/{row.task}: {row.reason}" for row in missing.itertuples(index=False)]
    if beside_paper:
        notes.append(f"paper = the value and change printed in the paper's appendix Table {study.paper_table} "
                     f"(arXiv 2110.13365, Tencent data): compare directions, not values")
    return notes


def recipe_note(recipes: dict[str, str]) -> str:
    """Which training recipe made the table (conf/recipe/, docs/statistics.md "Training recipes"): one name for every
    variant, or one per variant where they differ."""
    names = set(recipes.values())
    if len(names) == 1:
        return f"training recipe: {names.pop()} (every variant; conf/recipe/)"
    return "training recipe per variant: " + "; ".join(f"{variant} {name}" for variant, name in recipes.items())


def sequential_note(state: dict, seeds: int) -> str:
    """How `mfh ablate --until-decided` chose the seeds: the boundary, the seeds, the budget spent, why it stopped."""
    stopped = state.get("stopped") or "interrupted or still running"
    return (f"sequential: seeds added in rounds until decided ({state.get('boundary', 'confidence sequence')}, "
            f"docs/statistics.md): the intervals and p-values of this table are anytime-valid (wider than fixed-seed "
            f"ones, valid however many seeds were looked at; unbounded below about 5 seeds); {seeds} seeds per "
            f"variant, {float(state.get('spent_seconds', 0)) / 60:.1f} of "
            f"{float(state.get('budget_seconds', 0)) / 60:.1f} min budget spent, cells '{state.get('cells', 'all')}', "
            f"stopped: {stopped}")


def control_lines(study: StudyResults, tidy: pd.DataFrame) -> list[str]:
    """One line per variant the study file expects a verdict of (`expected` in conf/study): what it got."""
    lines = []
    for variant, expected in (study.info.get("expected") or {}).items():
        cells, left_out = counted_cells(tidy[(tidy["variant"] == variant) & (tidy["verdict"] != "")])
        counts = cells["verdict"].value_counts()
        got = ", ".join(f"{int(count)} {name}" for name, count in counts.items())
        hits = int(counts.get(expected, 0))
        significant = int(cells["significant"].sum())
        kind = "positive" if expected in ("better", "worse") else "negative"
        lines.append(f"{kind} control, {variant} vs {study.reference} ({study.dataset}): expected '{expected}', "
                     f"got '{expected}' in {hits} of {len(cells)} cells ({got}; {significant} significant after "
                     f"Holm, α = {ALPHA:g} over the table){left_out}")
    return lines


def _write_csv(tidy: pd.DataFrame, path: Path) -> Path:
    return write_text_atomically(path, tidy.to_csv(index=False))


@dataclass
class OverfittingFigure:
    """What Figure 1 produced: its summary over seeds (figures.SUMMARY_COLUMNS), its summary line, its files."""

    summary: pd.DataFrame
    line: str
    files: list[Path]


def _overfitting_figure(study: StudyResults, results_dir: Path, stem: str) -> OverfittingFigure:
    """Write Figure 1 (PNG and PDF) and its per-step series CSV; return its summary and summary line."""
    improvements = overfitting_improvements(study, results_dir)
    series, summary = overfitting_series(improvements), overfitting_summary(improvements)
    focus = study.focus
    figures = results_dir / "figures"
    variant, reference = figure_pair(study)
    title = overfitting_title(focus["task"], focus["group"], study.dataset, int(summary["n_seeds"].iloc[0]), variant,
                              reference)
    drawn = overfitting_figure(series, summary, title, variant, reference)
    files = [write_figure(drawn, figures / f"{stem}.{suffix}") for suffix in ("png", "pdf")]
    return OverfittingFigure(summary, overfitting_line(summary, focus["task"], focus["group"], variant, reference),
                             files + [_write_csv(series, figures / f"{stem}.csv")])
