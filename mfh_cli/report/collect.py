"""Result files → tidy frames: a study's runs.csv and study.json, and a run's history.csv (ARCHITECTURE "Study
results"). Reads files only; never imports torch."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mfh_cli.errors import DataError
from mfh_cli.tasks import HISTORY_COLUMNS, REGISTRY, RUNS_COLUMNS, kind_of, shown_metrics

STUDY_KEYS = ("study", "title", "paper_table", "tasks", "reference", "variants", "seeds", "dataset")
ORACLE = "oracle"  # the simulator's oracle upper bound: always the last row, never tested
REPORTED_SPLIT = "test"  # SPEC §4: tables are computed on the test split
NOT_COMPUTABLE = "not computable"


@dataclass(frozen=True)
class StudyResults:
    """One study on one dataset: its study.json and its test-split cells (one row per variant, seed, group, task),
    each task in the metric the report shows for its kind (tasks.shown_metrics)."""

    info: dict
    # RUNS_COLUMNS (test split only) + `reason` (why `value` is NaN, else empty) + `positives` and `negatives`
    # (a binary cell's test rows of each class) and `rows` (the cell's test rows), from the run's metrics.json;
    # NaN when not recorded
    runs: pd.DataFrame
    directory: Path

    @property
    def name(self) -> str:
        return str(self.info["study"])

    @property
    def dataset(self) -> str:
        return str(self.info["dataset"])

    @property
    def reference(self) -> str:
        return str(self.info["reference"])

    @property
    def title(self) -> str:
        return str(self.info.get("title") or self.name)

    @property
    def paper_table(self) -> int | None:
        return self.info.get("paper_table")

    @property
    def sequential(self) -> dict | None:
        """How `mfh ablate --until-decided` chose this study's seeds (None: a fixed number of seeds)."""
        return self.info.get("sequential")

    @property
    def tuned(self) -> dict | None:
        """`mfh ablate --tuned`: best.yaml's overrides per variant and grid and the search's budget (else None)."""
        return self.info.get("tuned")

    @property
    def focus(self) -> dict | None:
        return self.info.get("focus")

    @property
    def variants(self) -> list[str]:
        """Row order: the reference, the other variants as study.json lists them (then any unlisted), oracle last."""
        listed = [str(variant) for variant in self.info["variants"]]
        present = list(dict.fromkeys(self.runs["variant"]))
        others = [variant for variant in dict.fromkeys(listed + present) if variant not in (self.reference, ORACLE)]
        return [self.reference, *others] + ([ORACLE] if ORACLE in present else [])


def find_studies(results_dir: Path, study: str | None = None, dataset: str | None = None,
                 metric: str | None = None) -> list[StudyResults]:
    """Every `studies/<study>/<dataset>/` holding a runs.csv under `results_dir` (`study` None or 'all' = all),
    binary or regression tasks in `metric` (None: each kind's primary metric)."""
    root = Path(results_dir) / "studies"
    directories = sorted(path.parent for path in root.glob("*/*/runs.csv"))
    if not directories:
        raise DataError(f"{root}: no study results (no */*/runs.csv); run a study first (mfh ablate)")
    available = sorted({directory.parent.name for directory in directories})
    if study not in (None, "all"):  # a study that sweeps settings is found by its own name too
        directories = [directory for directory in directories if directory.parent.name == study
                       or (directory.parent.name.startswith(f"{study}_") and _sweep_of(directory) == study)]
        if not directories:
            raise DataError(f"{root}: no results for study '{study}'; found: {', '.join(available)}")
    if dataset is not None:
        found = sorted({directory.name for directory in directories})
        directories = [directory for directory in directories if directory.name == dataset]
        if not directories:
            raise DataError(f"{root}: no results on dataset '{dataset}'; found: {', '.join(found)}")
    studies = [read_study(directory, results_dir=Path(results_dir), metric=metric) for directory in directories]
    # The paper's tables in its order, then the studies it has no table for, by name.
    return sorted(studies, key=lambda found: (found.paper_table is None, found.paper_table or 0, found.name))


def _sweep_of(directory: Path) -> str | None:
    """The sweeping study a study directory is one setting of (study.json `sweep.study`), if any."""
    try:
        return (json.loads((directory / "study.json").read_text()).get("sweep") or {}).get("study")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def datasets_of(results_dir: Path, study: str) -> list[str]:
    """The datasets a study has results for (whether or not this report selected them)."""
    return sorted(path.parent.name for path in (Path(results_dir) / "studies" / study).glob("*/runs.csv"))


def read_study(directory: Path, results_dir: Path | None = None, metric: str | None = None) -> StudyResults:
    """Read and check one study directory, keeping each task's rows of the metric shown for its kind (`metric`
    for its own kind, else the primary); missing cells get their reason from the run's metrics.json if any."""
    path = directory / "runs.csv"
    info = _read_study_json(directory / "study.json")
    runs = _read_runs_csv(path)
    runs = runs[runs["split"] == REPORTED_SPLIT].reset_index(drop=True)
    if runs.empty:
        raise DataError(f"{path}: column 'split' has no '{REPORTED_SPLIT}' rows; the tables report the test split")
    runs = select_metric(runs, metric, path)
    if info["reference"] not in set(runs["variant"]):
        raise DataError(f"{path}: column 'variant' lacks the reference '{info['reference']}' named in study.json")
    results_dir = results_dir if results_dir is not None else directory.parents[2]
    runs["reason"], runs["positives"], runs["negatives"], runs["rows"] = _cell_facts(runs, results_dir)
    return StudyResults(info=info, runs=runs, directory=directory)


def select_metric(runs: pd.DataFrame, metric: str | None, path: Path) -> pd.DataFrame:
    """The rows of the metric shown for each row's kind; a file with none of `metric`'s rows (written before the
    metric existed) is a DataError saying how to rewrite it."""
    shown = shown_metrics(metric)
    kinds = runs["metric"].map(kind_of)
    selected = runs[runs["metric"] == kinds.map(shown)].reset_index(drop=True)
    if metric is not None and not (selected["metric"] == metric).any():
        raise DataError(f"{path}: column 'metric' has no '{metric}' rows (the file predates that metric); rerun "
                        f"mfh ablate to rewrite it")
    return selected


def read_history(results_dir: Path, run_id: str) -> pd.DataFrame:
    """A run's history.csv (step, epoch, split, group, task, loss), checked."""
    path = Path(results_dir) / "runs" / run_id / "history.csv"
    if not path.is_file():
        raise DataError(f"{path}: missing; the overfitting figure needs the history of run '{run_id}'")
    history = _read_csv(path, HISTORY_COLUMNS, text_columns=("split", "group", "task"))
    for column in ("step", "epoch", "loss"):
        history[column] = _numeric(history, column, path)
        if history[column].isna().any():
            raise DataError(f"{path}: column '{column}' has empty values; every logged row needs one")
    for column in ("step", "epoch"):
        if (history[column] % 1 != 0).any():
            raise DataError(f"{path}: column '{column}' must be an integer on every row")
        history[column] = history[column].astype("int64")
    bad_split = sorted(set(history["split"]) - {"train", "test"})
    if bad_split:
        raise DataError(f"{path}: column 'split' must be train or test, found {', '.join(bad_split)}")
    return history


def _read_study_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: missing; the study runner writes it next to runs.csv")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    missing = [key for key in STUDY_KEYS if not isinstance(info, dict) or key not in info]
    if missing:
        raise DataError(f"{path}: missing key(s) {', '.join(missing)}")
    if info["reference"] not in info["variants"]:
        raise DataError(f"{path}: key 'reference' ({info['reference']}) must be one of 'variants'")
    return info


def _read_runs_csv(path: Path) -> pd.DataFrame:
    text_columns = ("study", "variant", "dataset", "split", "group", "task", "metric", "run_id")
    runs = _read_csv(path, RUNS_COLUMNS, text_columns=text_columns)
    runs["value"] = _numeric(runs, "value", path)
    seeds = _numeric(runs, "seed", path)
    if seeds.isna().any() or (seeds % 1 != 0).any():
        raise DataError(f"{path}: column 'seed' must be an integer on every row")
    runs["seed"] = seeds.astype("int64")
    bad_metrics = sorted(set(runs["metric"]) - set(REGISTRY))
    if bad_metrics:
        raise DataError(f"{path}: column 'metric' must be one of {', '.join(REGISTRY)}, found "
                        f"{', '.join(bad_metrics)}")
    duplicated = runs.duplicated(["variant", "seed", "split", "group", "task", "metric"])
    if duplicated.any():
        first = runs[duplicated].iloc[0]
        raise DataError(f"{path}: one row per (variant, seed, split, group, task, metric); repeated: "
                        f"{first['variant']}, seed {first['seed']}, {first['split']}, {first['group']}, "
                        f"{first['task']}, {first['metric']}")
    _check_complete(runs, path)
    return runs


def _check_complete(runs: pd.DataFrame, path: Path) -> None:
    """A sweep writes every variant with the same seeds and every (variant, seed) with the same cells; anything
    else is a partial or cut file, whose means would silently rest on fewer seeds."""
    seed_counts = runs.groupby(["task", "variant"], sort=False)["seed"].nunique()
    for task, counts in seed_counts.groupby(level="task", sort=False):
        if counts.nunique() > 1:
            listed = ", ".join(f"{variant} {count}" for (_, variant), count in counts.items())
            raise DataError(f"{path}: variants have unequal seed counts for task '{task}' ({listed}): a partial "
                            f"or truncated file; rerun mfh ablate to rewrite it")
    cells = runs.groupby(["variant", "seed"], sort=False).size()
    if cells.nunique() > 1:
        variant, seed = cells.idxmin()
        raise DataError(f"{path}: variant {variant} seed {seed} has {cells.min()} rows, others {cells.max()}: a "
                        f"partial or truncated file; rerun mfh ablate to rewrite it")


def _read_csv(path: Path, columns: tuple[str, ...], text_columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        text = path.read_text()
        _check_whole_rows(text, path)
        frame = pd.read_csv(io.StringIO(text), dtype={column: str for column in text_columns}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: unreadable CSV ({' '.join(str(error).split())})") from None
    missing = [column for column in columns if column not in frame.columns]
    extra = [column for column in frame.columns if column not in columns]
    if missing or extra:
        raise DataError(f"{path}: columns must be exactly {', '.join(columns)}; "
                        f"missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(map(str, extra)) or 'none'}")
    return frame[list(columns)]


def _check_whole_rows(text: str, path: Path) -> None:
    """A file cut mid-line (no newline at its end) or a row with another number of fields than the header is an
    error: pandas would read the cut row's missing fields as empty and a cut number (0.6 of 0.6123) as a value."""
    if not text.endswith("\n"):
        raise DataError(f"{path}: {'empty' if not text else 'ends mid-line (no newline after the last row)'}: a "
                        f"truncated file; rerun the command that wrote it")
    rows = csv.reader(io.StringIO(text))
    width = len(next(rows))
    for row in rows:
        if row and len(row) != width:
            raise DataError(f"{path}: line {rows.line_num} has {len(row)} fields, the header {width}: a damaged "
                            f"file; rerun the command that wrote it")


def _numeric(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """The column as floats; empty cells become NaN, anything else non-numeric is an error."""
    if pd.api.types.is_numeric_dtype(frame[column]):
        return frame[column].astype("float64")
    text = frame[column].astype(str).str.strip()
    values = pd.to_numeric(text.where(text != ""), errors="coerce")
    bad = values.isna() & (text != "")
    if bad.any():
        raise DataError(f"{path}: column '{column}' must be a number or empty, found '{text[bad].iloc[0]}'")
    return values.astype("float64")


def _cell_facts(runs: pd.DataFrame, results_dir: Path) -> tuple[list[str], list[float], list[float], list[float]]:
    """From each run's metrics.json (read once per run): why an empty `value` is empty (the reason its metric
    records, else 'not computable'), a binary cell's positive and negative test rows, and every cell's test rows
    (NaN where the file does not record them)."""
    cells_of: dict[str, dict] = {}
    reasons, positives, negatives, rows = [], [], [], []
    for row in runs.itertuples(index=False):
        if row.run_id not in cells_of:
            cells_of[row.run_id] = _test_cells(results_dir / "runs" / row.run_id / "metrics.json")
        group_cells = cells_of[row.run_id].get(row.group)
        cell = group_cells.get(row.task) if isinstance(group_cells, dict) else None
        cell = cell if isinstance(cell, dict) else {}
        reason = _reason(cell, row.metric) or NOT_COMPUTABLE if pd.isna(row.value) else ""
        counted = isinstance(cell.get("positives"), int) and isinstance(cell.get("rows"), int)
        reasons.append(reason)
        positives.append(float(cell["positives"]) if counted else float("nan"))
        negatives.append(float(cell["rows"] - cell["positives"]) if counted else float("nan"))
        rows.append(float(cell["rows"]) if isinstance(cell.get("rows"), int) else float("nan"))
    return reasons, positives, negatives, rows


def _reason(cell: dict, metric: str) -> str | None:
    """Why a cell's `metric` has no value: the reason metrics.json records for it; a cell written before the metric
    existed (only its primary metric) says so."""
    values = cell.get("values")
    if isinstance(values, dict) and isinstance(values.get(metric), dict):
        return values[metric].get("reason")
    if cell and cell.get("metric") != metric:
        return f"no {metric} in this run's metrics.json (older than the metric): mfh ablate --force retrains it"
    return cell.get("reason")


def _test_cells(metrics_path: Path) -> dict:
    """{group: {task: cell}} of a run's test split; empty when the file is absent or unreadable."""
    try:
        cells = json.loads(metrics_path.read_text())["metrics"][REPORTED_SPLIT]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return {}
    return cells if isinstance(cells, dict) else {}
