"""Reading study results: the test split only, and one-line errors naming the file, the column and the rule."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mfh_cli.errors import DataError
from mfh_cli.report.collect import find_studies, read_study


def _cells() -> pd.DataFrame:
    rows = [(variant, seed, "new", "finish", "auc", 0.7 + seed * 0.01) for variant in ("mfh", "flat")
            for seed in (0, 1)]
    return pd.DataFrame(rows, columns=["variant", "seed", "group", "task", "metric", "value"])


def test_reads_the_test_split_only(write_study):
    cells = pd.concat([_cells().assign(split="test"), _cells().assign(split="validation", value=0.1)])
    study = read_study(write_study("toy", cells, reference="mfh", variants=["mfh", "flat"]))
    assert set(study.runs["split"]) == {"test"} and len(study.runs) == 4
    assert study.runs["value"].min() >= 0.7
    assert study.variants == ["mfh", "flat"]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda runs: runs.drop(columns="metric"), r"runs.csv: columns must be exactly .* missing: metric"),
    (lambda runs: runs.assign(extra=1), r"runs.csv: columns must be exactly .* unexpected: extra"),
    (lambda runs: runs.assign(metric="rmse"), r"runs.csv: column 'metric' must be one of auc, mse, .*found rmse"),
    (lambda runs: runs.assign(value="high"), r"runs.csv: column 'value' must be a number or empty, found 'high'"),
    (lambda runs: runs.assign(seed=0), r"runs.csv: one row per \(variant, seed, split, group, task, metric\)"),
    (lambda runs: runs.assign(split="validation"), r"runs.csv: column 'split' has no 'test' rows"),
    (lambda runs: runs[runs["variant"] != "mfh"], r"runs.csv: column 'variant' lacks the reference 'mfh'"),
])
def test_bad_runs_csv_is_a_one_line_data_error(write_study, edit, message):
    directory = write_study("toy", _cells(), reference="mfh", variants=["mfh", "flat"])
    runs = pd.read_csv(directory / "runs.csv")
    edit(runs).to_csv(directory / "runs.csv", index=False)
    with pytest.raises(DataError, match=message) as raised:
        read_study(directory)
    assert "\n" not in str(raised.value)


def test_bad_study_json_is_a_data_error(write_study, results_dir):
    directory = write_study("toy", _cells(), reference="mfh", variants=["mfh", "flat"])
    info = json.loads((directory / "study.json").read_text())
    (directory / "study.json").write_text(json.dumps({key: info[key] for key in info if key != "reference"}))
    with pytest.raises(DataError, match=r"study.json: missing key\(s\) reference"):
        find_studies(results_dir)
    (directory / "study.json").write_text("{not json")
    with pytest.raises(DataError, match=r"study.json: not valid JSON"):
        find_studies(results_dir)


def _two_task_cells() -> pd.DataFrame:
    rows = [(variant, seed, group, task, "auc", 0.61234567 + seed * 0.01) for variant in ("mfh", "flat")
            for seed in (0, 1, 2) for group in ("new", "high") for task in ("finish", "skip")]
    return pd.DataFrame(rows, columns=["variant", "seed", "group", "task", "metric", "value"])


@pytest.mark.parametrize(("cut", "message"), [
    (lambda text: text[:-12], r"runs.csv: ends mid-line \(no newline after the last row\): a truncated file"),
    (lambda text: text[:text.rstrip("\n").rfind(",")] + "\n", r"runs.csv: line 25 has 9 fields, the header 10"),
    (lambda text: "", r"runs.csv: empty: a truncated file"),
])
def test_torn_runs_csv_is_a_data_error(write_study, cut, message):
    directory = write_study("toy", _two_task_cells(), reference="mfh", variants=["mfh", "flat"])
    path = directory / "runs.csv"
    path.write_text(cut(path.read_text()))
    with pytest.raises(DataError, match=message):
        read_study(directory)


@pytest.mark.parametrize(("drop", "message"), [
    (lambda runs: (runs["variant"] == "flat") & (runs["seed"] == 2),
     r"runs.csv: variants have unequal seed counts for task 'finish' \(mfh 3, flat 2\): a partial or truncated"),
    (lambda runs: (runs["variant"] == "flat") & (runs["seed"] == 2) & (runs["group"] == "high"),
     r"runs.csv: variant flat seed 2 has 2 rows, others 4: a partial or truncated file"),
])
def test_partial_runs_csv_is_a_data_error(write_study, drop, message):
    directory = write_study("toy", _two_task_cells(), reference="mfh", variants=["mfh", "flat"])
    runs = pd.read_csv(directory / "runs.csv")
    runs[~drop(runs)].to_csv(directory / "runs.csv", index=False)
    with pytest.raises(DataError, match=message):
        read_study(directory)


def test_report_on_a_cut_runs_csv_exits_1_naming_the_file(write_study, run_mfh):
    directory = write_study("toy", _two_task_cells(), reference="mfh", variants=["mfh", "flat"])
    path = directory / "runs.csv"
    path.write_bytes(path.read_bytes()[:-15])  # mid-way through the last row's value
    result = run_mfh("report", "--study", "toy")
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: {path}: ends mid-line (no newline after the last row): a truncated "
                                     f"file; rerun the command that wrote it")


def _metric_cells() -> pd.DataFrame:
    """finish in AUC and gAUC (gAUC empty for mfh seed 1: a run written before gAUC existed) and cmpl in MSE."""
    rows = []
    for variant in ("mfh", "flat"):
        for seed in (0, 1):
            rows += [(variant, seed, "new", "finish", "auc", 0.7 + seed * 0.01),
                     (variant, seed, "new", "finish", "gauc", None if (variant, seed) == ("mfh", 1) else 0.6),
                     (variant, seed, "new", "cmpl", "mse", 0.4 + seed * 0.01)]
    return pd.DataFrame(rows, columns=["variant", "seed", "group", "task", "metric", "value"])


def test_a_chosen_metric_replaces_the_primary_of_its_kind_only(write_study):
    directory = write_study("toy", _metric_cells(), reference="mfh", variants=["mfh", "flat"])
    default = read_study(directory)
    assert set(zip(default.runs["task"], default.runs["metric"])) == {("finish", "auc"), ("cmpl", "mse")}
    chosen = read_study(directory, metric="gauc")
    assert set(zip(chosen.runs["task"], chosen.runs["metric"])) == {("finish", "gauc"), ("cmpl", "mse")}
    assert len(chosen.runs) == len(default.runs) == 8


def test_a_run_older_than_the_metric_reads_as_a_missing_cell_with_its_reason(write_study, results_dir):
    directory = write_study("toy", _metric_cells(), reference="mfh", variants=["mfh", "flat"])
    old_cell = {"metric": "auc", "value": 0.71, "rows": 100, "positives": 30, "reason": None}  # no "values"
    run = results_dir / "runs" / "mfh-1"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"metrics": {"test": {"new": {"finish": old_cell}}}}))
    runs = read_study(directory, metric="gauc").runs
    missing = runs[runs["value"].isna()]
    assert len(missing) == 1 and missing["reason"].iloc[0].startswith("no gauc in this run's metrics.json")
    assert missing["positives"].iloc[0] == 30


def test_a_runs_csv_without_the_chosen_metric_says_to_rewrite_it(write_study):
    directory = write_study("toy", _cells(), reference="mfh", variants=["mfh", "flat"])  # auc rows only
    with pytest.raises(DataError, match=r"runs.csv: column 'metric' has no 'logloss' rows .* rerun mfh ablate"):
        read_study(directory, metric="logloss")
