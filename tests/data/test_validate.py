"""`mfh data validate`: every rule on a small bad file built in tmp_path, the real slice, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mfh_cli.data.validate import KUAIRAND_LOG_COLUMNS, Problem, validate

# Twelve log rows in the official KuaiRand layout: four per split date range of conf/data/kuairand.yaml, one user
# of each group (user 1 new by activity, 2 low, 3 high) in every split.
DATES = [20220425] * 4 + [20220505] * 4 + [20220507] * 4


def kuairand_log(rows: int = 12) -> pd.DataFrame:
    """A clean KuaiRand log: every column numeric, flags 0/1, durations and play times positive."""
    frame = pd.DataFrame(0, index=range(rows), columns=list(KUAIRAND_LOG_COLUMNS))
    frame["user_id"] = [1, 2, 3, 3] * (rows // 4)
    frame["video_id"] = np.arange(rows) + 100
    frame["date"] = DATES[:rows]
    frame["time_ms"] = 1650812741436 + np.arange(rows) * 1000
    frame["play_time_ms"] = 5000
    frame["duration_ms"] = 20000
    frame["is_like"] = np.arange(rows) % 2
    frame["tab"] = 1
    return frame


USERS = pd.DataFrame({"user_id": [1, 2, 3], "user_active_degree": ["day_new", "middle_active", "full_active"],
                      "register_days": [400, 400, 400]})


def write_kuairand(folder: Path, log: pd.DataFrame, users: pd.DataFrame | None = USERS) -> Path:
    """The log (and the user table beside it unless None) as KuaiRand CSVs; returns the log's path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "log_standard_test.csv"
    log.to_csv(path, index=False)
    if users is not None:
        users.to_csv(folder / "user_features_test.csv", index=False)
    return path


def errors(problems: list[Problem]) -> list[Problem]:
    return [problem for problem in problems if problem.level == "error"]


def only_problem(problems: list[Problem], level: str = "error") -> Problem:
    """The one problem of a file that breaks exactly one rule once."""
    assert len(problems) == 1, [str(problem) for problem in problems]
    assert problems[0].level == level
    return problems[0]


def test_a_clean_kuairand_log_has_no_problem(tmp_path):
    assert validate(write_kuairand(tmp_path, kuairand_log())) == []


def test_problem_is_one_line_with_rows_and_examples():
    problem = Problem("error", "log.csv", "duration_ms", "negative values (must be >= 0)", 12, [4, 17, 92])
    assert str(problem) == ("error: log.csv: column duration_ms: negative values (must be >= 0): 12 rows "
                            "(e.g. rows 4, 17, 92)")
    single = Problem("warning", "log.csv", "tab", "odd", 1, [3])
    assert str(single) == "warning: log.csv: column tab: odd: 1 row (e.g. row 3)"


def test_negative_durations_and_play_times(tmp_path):
    log = kuairand_log()
    log.loc[[3, 7], "duration_ms"] = -1
    log.loc[[5], "play_time_ms"] = -20
    problems = validate(write_kuairand(tmp_path, log))
    by_column = {problem.column: problem for problem in errors(problems)}
    assert set(by_column) == {"duration_ms", "play_time_ms"}
    # 1-based data rows: frame index 3 is the 4th data row
    assert (by_column["duration_ms"].rows, by_column["duration_ms"].examples) == (2, [4, 8])
    assert "negative" in str(by_column["duration_ms"]) and "2 rows" in str(by_column["duration_ms"])
    assert (by_column["play_time_ms"].rows, by_column["play_time_ms"].examples) == (1, [6])


def test_missing_required_column(tmp_path):
    problem = only_problem(validate(write_kuairand(tmp_path, kuairand_log().drop(columns=["is_rand"]))))
    assert problem.column == "is_rand" and "missing" in problem.rule


def test_non_numeric_values(tmp_path):
    log = kuairand_log().astype({"tab": object})
    log.loc[[1, 2, 9], "tab"] = "one"
    problem = only_problem(validate(write_kuairand(tmp_path, log)))
    assert (problem.column, problem.rows, problem.examples) == ("tab", 3, [2, 3, 10])
    assert "non-numeric" in problem.rule


def test_nan_in_ids_and_labels(tmp_path):
    log = kuairand_log().astype({"video_id": float, "is_follow": float})
    log.loc[[0], "video_id"] = np.nan
    log.loc[[4, 6], "is_follow"] = np.nan
    by_column = {problem.column: problem for problem in errors(validate(write_kuairand(tmp_path, log)))}
    assert set(by_column) == {"video_id", "is_follow"}
    assert by_column["video_id"].rows == 1 and by_column["is_follow"].examples == [5, 7]
    assert all("missing values" in problem.rule for problem in by_column.values())


def test_binary_label_outside_zero_one(tmp_path):
    log = kuairand_log()
    log.loc[[2, 11], "is_forward"] = 3
    problem = only_problem(validate(write_kuairand(tmp_path, log)))
    assert (problem.column, problem.rows, problem.examples) == ("is_forward", 2, [3, 12])
    assert "{0, 1}" in problem.rule


def test_duplicate_rows_are_a_warning_saying_what_the_loader_does(tmp_path):
    log = kuairand_log()
    log.loc[5, ["user_id", "video_id", "time_ms"]] = log.loc[4, ["user_id", "video_id", "time_ms"]].to_numpy()
    problem = only_problem(validate(write_kuairand(tmp_path, log)), level="warning")
    assert (problem.rows, problem.examples) == (1, [6]) and "duplicate impressions" in problem.rule
    assert "user_id" in problem.column and "time_ms" in problem.column
    assert "the loader drops them, keeping the first of each (data.duplicates=drop)" in problem.rule


def test_a_copy_of_a_log_beside_it_is_an_error_naming_both_files_and_the_rows(tmp_path):
    folder = tmp_path / "kuairand-pure"
    log = kuairand_log()
    write_kuairand(folder, log)
    log.iloc[4:].to_csv(folder / "log_standard_test_backup.csv", index=False)  # a copy of the last 8 rows
    problem = only_problem(validate(folder))
    assert problem.file == "log_standard_test_backup.csv" and "rows repeated from log_standard_test.csv" in problem.rule
    assert (problem.rows, problem.examples) == (8, [1, 2, 3]) and "20220505-20220507" in problem.rule
    assert "keep one copy" in problem.rule


def test_logs_sharing_days_are_an_error_unless_they_are_parts_of_one_log(tmp_path):
    """Days read from the rows: two logs without a row in common but with a day in common are still one period
    loaded twice, unless their names make them parts of one log (KuaiRand-27K's *_part1.csv, *_part2.csv)."""
    log = kuairand_log()
    halves = log[log["user_id"] != 3], log[log["user_id"] == 3]  # no row in common, every split day in both

    def folder_of(name: str, names: tuple[str, str]) -> Path:
        folder = tmp_path / name / "kuairand-pure"
        folder.mkdir(parents=True)
        USERS.to_csv(folder / "user_features_test.csv", index=False)
        for half, file in zip(halves, names):
            half.to_csv(folder / file, index=False)
        return folder

    problem = only_problem(validate(folder_of("two", ("log_standard_early.csv", "log_standard_late.csv"))))
    assert (problem.file, problem.column, problem.rows) == ("log_standard_late.csv", "date", 6)
    assert "dates overlap log_standard_early.csv's (20220425-20220507 in both files" in problem.rule
    assert validate(folder_of("parts", ("log_standard_p_part1.csv", "log_standard_p_part2.csv"))) == []


def test_a_row_repeated_across_the_parts_of_one_log_is_a_duplicate_impression(tmp_path):
    folder = tmp_path / "kuairand-pure"
    log = kuairand_log()
    write_kuairand(folder, log)
    (folder / "log_standard_test.csv").rename(folder / "log_standard_test_part1.csv")
    log.iloc[[0]].to_csv(folder / "log_standard_test_part2.csv", index=False)
    problem = only_problem(validate(folder), level="warning")
    assert problem.file == "log_standard_test_part2.csv" and problem.rows == 1
    assert "duplicate impressions across the parts of one log" in problem.rule and "drops them" in problem.rule


def test_no_rows_in_the_validation_dates_is_an_error(tmp_path):
    log = kuairand_log()
    log.loc[log["date"] == 20220505, "date"] = 20220504
    problem = only_problem(validate(write_kuairand(tmp_path, log)))
    assert problem.column == "date" and "'validation' has no rows" in problem.rule and "20220505" in problem.rule


def test_empty_user_group(tmp_path):
    users = USERS.assign(user_active_degree=["middle_active", "middle_active", "full_active"])
    problem = only_problem(validate(write_kuairand(tmp_path, kuairand_log(), users)))
    assert "'new' has no rows" in problem.rule


def test_register_days_make_a_user_new(tmp_path):
    # SPEC §5: a registration of at most 30 days is new, whatever the activity degree
    users = USERS.assign(user_active_degree=["middle_active", "middle_active", "full_active"],
                         register_days=[30, 400, 400])
    assert validate(write_kuairand(tmp_path, kuairand_log(), users)) == []


def test_without_user_table_group_checks_are_skipped_with_a_warning(tmp_path):
    problem = only_problem(validate(write_kuairand(tmp_path, kuairand_log(), users=None)), level="warning")
    assert "user_features" in problem.rule and "skipped" in problem.rule


def test_unreadable_file(tmp_path):
    path = tmp_path / "log.parquet"
    path.write_bytes(b"not parquet at all")
    problem = only_problem(validate(path, mapping=write_mapping(tmp_path)))
    assert problem.file == "log.parquet" and problem.column is None and "unreadable" in problem.rule
    assert "unreadable" in only_problem(validate(tmp_path / "absent.csv")).rule


def test_directory_without_logs(tmp_path):
    assert "log_standard_" in only_problem(validate(tmp_path)).rule


def test_directory_reads_every_log(tmp_path):
    folder = tmp_path / "kuairand-pure"
    log = kuairand_log()
    write_kuairand(folder, log[log["date"] < 20220507])
    log[log["date"] >= 20220507].to_csv(folder / "log_standard_later.csv", index=False)
    assert validate(tmp_path) == []  # the parent of kuairand-pure/ works too; the test split is in the 2nd file


# Your own log, with a mapping.
MAPPING = {
    "path": "log.csv", "user": "uid", "item": "video", "time": "ts",
    "group": {"column": "activity", "values": {"new": ["fresh"], "high": ["heavy"]}, "default": "low",
              "names": ["new", "low", "high"]},
    "labels": {"cmpl": {"column": "ratio", "range": [0, 1]}, "finish": "done",
               "save": {"column": "saved", "kind": "binary"}},
    "categorical": ["country"], "dense": ["seconds"],
    "split": {"by": "fraction", "fractions": [0.5, 0.25, 0.25]},
}


def table_log(rows: int = 12) -> pd.DataFrame:
    """A clean log for MAPPING: three users (fresh, casual, heavy), increasing time."""
    return pd.DataFrame({"uid": [7, 8, 9] * (rows // 3), "video": np.arange(rows) % 5, "ts": np.arange(rows) * 10,
                         "activity": ["fresh", "casual", "heavy"] * (rows // 3),
                         "ratio": np.linspace(0, 1, rows), "done": np.arange(rows) % 2, "saved": 0,
                         "country": ["fr", "de"] * (rows // 2), "seconds": np.arange(rows) * 1.5})


def write_mapping(folder: Path, **changes) -> Path:
    path = folder / "mapping.yaml"
    path.write_text(yaml.safe_dump({**MAPPING, **changes}))
    return path


def validate_table(tmp_path: Path, log: pd.DataFrame, **changes) -> list[Problem]:
    log.to_csv(tmp_path / "log.csv", index=False)
    return validate(tmp_path / "log.csv", mapping=write_mapping(tmp_path, **changes))


def test_a_clean_table_log_has_no_problem(tmp_path):
    assert validate_table(tmp_path, table_log()) == []


def test_table_missing_mapped_column(tmp_path):
    problem = only_problem(validate_table(tmp_path, table_log().drop(columns=["seconds"])))
    assert problem.column == "seconds" and "missing" in problem.rule


def test_table_non_numeric_dense_column(tmp_path):
    log = table_log().astype({"seconds": object})
    log.loc[[0, 3], "seconds"] = "long"
    problem = only_problem(validate_table(tmp_path, log))
    assert (problem.column, problem.rows, problem.examples) == ("seconds", 2, [1, 4])


def test_table_infinite_dense_value(tmp_path):
    log = table_log()
    log.loc[[2, 5, 9], "seconds"] = [np.inf, -np.inf, np.inf]
    problem = only_problem(validate_table(tmp_path, log))
    assert (problem.column, problem.rows, problem.examples) == ("seconds", 3, [3, 6, 10])
    assert problem.rule.startswith("non-finite values")


def test_truncated_gzip_log_names_the_file(tmp_path):
    table_log(300).to_csv(tmp_path / "log.csv.gz", index=False)
    whole = (tmp_path / "log.csv.gz").read_bytes()
    (tmp_path / "log.csv.gz").write_bytes(whole[: len(whole) // 2])
    problem = only_problem(validate(tmp_path / "log.csv.gz", mapping=write_mapping(tmp_path)))
    assert problem.file == "log.csv.gz" and problem.rule.startswith("unreadable (truncated or corrupt")


def test_table_nan_time(tmp_path):
    log = table_log().astype({"ts": float})
    log.loc[[2], "ts"] = np.nan
    problem = only_problem(validate_table(tmp_path, log))
    assert (problem.column, problem.rows, problem.examples) == ("ts", 1, [3]) and "missing values" in problem.rule


def test_table_regression_label_outside_its_range(tmp_path):
    log = table_log()
    log.loc[[1, 5, 6, 8], "ratio"] = 1.5
    problem = only_problem(validate_table(tmp_path, log))
    assert (problem.column, problem.rows) == ("ratio", 4) and "[0, 1]" in problem.rule


def test_table_new_binary_behaviour_outside_zero_one(tmp_path):
    log = table_log()
    log.loc[[4], "saved"] = -1
    problem = only_problem(validate_table(tmp_path, log))
    assert (problem.column, problem.rows, problem.examples) == ("saved", 1, [5])


def test_table_allow_missing_label(tmp_path):
    log = table_log().astype({"done": float})
    log.loc[[4], "done"] = np.nan
    assert only_problem(validate_table(tmp_path, log)).column == "done"
    labels = {**MAPPING["labels"], "finish": {"column": "done", "allow_missing": True}}
    assert validate_table(tmp_path, log, labels=labels) == []


def test_table_empty_group(tmp_path):
    log = table_log().assign(activity="casual")
    found = validate_table(tmp_path, log)
    assert {problem.rule for problem in found} == {"user group 'new' has no rows", "user group 'high' has no rows"}
    assert all(problem.column == "activity" for problem in found)


def test_table_empty_split_by_time(tmp_path):
    problem = only_problem(validate_table(tmp_path, table_log(), split={"by": "time", "boundaries": [60, 60]}))
    assert problem.column == "ts" and "'validation' has no rows" in problem.rule


def test_real_slice_has_no_errors(kuairand_dir):
    problems = validate(kuairand_dir)
    assert errors(problems) == [], [str(problem) for problem in problems]


def test_cli_reports_the_column_and_exits_1(run_mfh, tmp_path):
    log = kuairand_log()
    log.loc[[3], "duration_ms"] = -5
    result = run_mfh("data", "validate", str(write_kuairand(tmp_path / "bad", log)))
    assert result.returncode == 1
    assert "duration_ms" in result.stderr and "1 error(s)" in result.stdout


def test_cli_clean_file_exits_0(run_mfh, tmp_path):
    log = table_log()
    log.to_csv(tmp_path / "log.csv", index=False)
    result = run_mfh("data", "validate", str(tmp_path / "log.csv"), "--mapping", str(write_mapping(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "0 error(s), 0 warning(s)" in result.stdout


def test_empty_split_names_its_time_boundaries_as_written(tmp_path):
    log = table_log().assign(ts=lambda frame: 1651000000 + frame.index * 10)
    found = validate_table(tmp_path, log, split={"by": "time", "boundaries": [1651708800, 1651881600]})
    assert [problem.rule for problem in found] == [
        "split 'validation' has no rows (1651708800 <= time < 1651881600)",
        "split 'test' has no rows (time >= 1651881600)"]


# Checking a log must not load torch (slow to import): run it in a fresh interpreter and look at what it loaded.
TORCH_FREE_CHECK = """
import json, sys
from mfh_cli.data.validate import validate
problems = validate(*sys.argv[1:])
print(json.dumps({"errors": [str(p) for p in problems if p.level == "error"], "torch": "torch" in sys.modules}))
"""


def validate_in_fresh_interpreter(*args: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", TORCH_FREE_CHECK, *map(str, args)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_validating_the_real_slice_log_does_not_import_torch(kuairand_dir):
    log = next(kuairand_dir.glob("log_standard_*.csv"))
    outcome = validate_in_fresh_interpreter(log)
    assert outcome == {"errors": [], "torch": False}


def test_validating_a_bad_log_with_a_mapping_does_not_import_torch(tmp_path):
    log = table_log()
    log.loc[[4], "saved"] = 2
    log.to_csv(tmp_path / "log.csv", index=False)
    outcome = validate_in_fresh_interpreter(tmp_path / "log.csv", write_mapping(tmp_path))
    assert outcome["torch"] is False
    assert len(outcome["errors"]) == 1 and "column saved" in outcome["errors"][0]
