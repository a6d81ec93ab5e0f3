"""`mfh data validate`: check a log before training and report every problem as one line.

The rules are small vectorised functions over one column each (types, NaN, inf, ranges, binary values,
duplicates, empty groups and splits), shared by the KuaiRand check and by your own log's check. Your own log's
mapping (which column plays which part, conf/data/table.yaml) is parsed here too, so that checking needs no torch.
Both loaders (`kuairand.py`, `table.py`) run these same checks before encoding or caching (`stop_on_errors`), so
training never starts on a log that `mfh data validate` rejects. Nothing here imports torch
(KuaiRand's groups and date split come from `kuairand_format.py`), so checking a log starts fast.

Shape letters: N log rows, U user-table rows.
"""

from __future__ import annotations

import re
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mfh_cli.config import CONF_DIR
from mfh_cli.config_schema import DUPLICATE_POLICIES, split_ranges
from mfh_cli.data.kuairand_format import (ABSENT_USER_GROUP, LOG_PATTERN, USER_PATTERN, log_folder, log_row_groups,
                                          split_of, user_groups)
from mfh_cli.data.schema import SPLITS
from mfh_cli.errors import ConfigError, DataError
from mfh_cli.tasks import BEHAVIOURS, KINDS, USER_GROUPS

EXAMPLE_ROWS = 3  # row numbers quoted per problem
# Bump when a rule changes: the loaders put it in their cache key, so no dataset cached under older rules is reused.
# 3: log files repeating each other's rows or days are an error; duplicate impressions follow data.duplicates.
RULES_VERSION = 3

# Duplicate impressions (issue 27, [ours]): rows repeating an earlier row's user, item and time are one impression
# logged twice (on the KuaiRand slice 5,885 rows, 5,460 of them identical in every column). `data.duplicates`:
# `drop` (the default) keeps the first row of each in file order and drops the repeats; `keep` trains on and scores
# every row, so a repeat weighs double (every loader before this rule; at that value it stays out of the run id,
# config.LEGACY_VALUES, so those runs are found again). Both loaders and `mfh data validate` apply it alike.
DEFAULT_DUPLICATES = "drop"
# Parts of one log (KuaiRand-27K ships each period as *_part1.csv and *_part2.csv, both over every day of it) may
# share days; other log files of one folder may not (`overlapping_logs`).
PART_SUFFIX = re.compile(r"_part\d+$")

# The 19 official KuaiRand log columns, in official order (shared/data/kuairand-pure/SOURCE.md).
KUAIRAND_LOG_COLUMNS = (
    "user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like", "is_follow", "is_comment",
    "is_forward", "is_hate", "long_view", "play_time_ms", "duration_ms", "profile_stay_time", "comment_stay_time",
    "is_profile_enter", "is_rand", "tab",
)
KUAIRAND_USER_COLUMNS = ("user_id", "user_active_degree", "register_days")  # what groups need (SPEC §5)


@dataclass
class Problem:
    """One finding: its level (error | warning), where (file, column), the rule broken and the rows breaking it."""

    level: str
    file: str
    column: str | None
    rule: str
    rows: int = 0
    examples: list[int] = field(default_factory=list)  # a few 1-based data row numbers (header not counted)

    @property
    def message(self) -> str:
        """The line without its level: what a DataError carries (the CLI prefixes `error: `)."""
        where = f"{self.file}: column {self.column}" if self.column else self.file
        text = f"{where}: {self.rule}"
        if self.rows:
            shown = ", ".join(map(str, self.examples))
            text += (f": {self.rows:,} {'row' if self.rows == 1 else 'rows'} "
                     f"(e.g. {'row' if len(self.examples) == 1 else 'rows'} {shown})")
        return text

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


@dataclass(frozen=True)
class ColumnRules:
    """The per-column rules of one kind of log: which columns must exist, be numeric, complete, binary, in range."""

    required: Sequence[str]
    numeric: Sequence[str]
    complete: Sequence[str]  # no NaN / empty cell allowed
    binary: Sequence[str]  # values in {0, 1}
    ranges: dict[str, tuple[float, float | None]]  # column -> (lowest, highest) allowed; highest None: no bound
    unique: Sequence[str]  # identical values in all of these columns = a duplicate row (warning)


def rows_problem(bad: np.ndarray, file: str, column: str | None, rule: str,
                 level: str = "error") -> Problem | None:
    """A Problem counting the rows where `bad` [N] is True, quoting the first few; None when there are none."""
    count = int(bad.sum())
    if count == 0:
        return None
    examples = (np.flatnonzero(bad)[:EXAMPLE_ROWS] + 1).tolist()
    return Problem(level, file, column, rule, count, examples)


def read_log(path: Path) -> tuple[pd.DataFrame | None, Problem | None]:
    """A CSV or Parquet log as read by pandas (types inferred), or the Problem saying why it is unreadable."""
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    try:
        if suffix in (".csv", ".csv.gz"):
            return pd.read_csv(path, low_memory=False), None
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path), None
        reason = "expected a .csv or .parquet file"
    except (OSError, ValueError) as error:  # missing file, bad encoding, parser and Arrow errors
        reason = getattr(error, "strerror", None) or (str(error).splitlines() or [type(error).__name__])[0]
    except (EOFError, zlib.error) as error:  # a .csv.gz cut short or damaged
        reason = f"truncated or corrupt compressed file: {str(error).splitlines()[0]}"
    return None, Problem("error", path.name, None, f"unreadable ({reason})")


def missing_columns(frame: pd.DataFrame, required: Sequence[str], file: str) -> list[Problem]:
    """One error per required column the log lacks."""
    return [Problem("error", file, column, "missing (a required column)") for column in required
            if column not in frame.columns]


def as_numeric(raw: pd.Series, file: str, column: str) -> tuple[np.ndarray, Problem | None]:
    """The column as float64 [N] (NaN where not a number) and a Problem for cells that hold text, not numbers."""
    if pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_bool_dtype(raw):
        return raw.to_numpy(dtype=np.float64, na_value=np.nan), None
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(values) & raw.notna().to_numpy()
    return values, rows_problem(bad, file, column, "non-numeric values (must be a number)")


def not_finite(values: np.ndarray, file: str, column: str) -> Problem | None:
    """Rows holding inf or -inf (NaN is not flagged: `missing_values` does that where a value is required)."""
    return rows_problem(np.isinf(values), file, column, "non-finite values (inf; must be a finite number)")


def missing_values(raw: pd.Series, file: str, column: str) -> Problem | None:
    """Rows where a column that must be complete (ids, time, labels) is NaN or empty."""
    return rows_problem(raw.isna().to_numpy(), file, column, "missing values (NaN or empty)")


def outside_range(values: np.ndarray, lowest: float, highest: float | None, file: str,
                  column: str) -> Problem | None:
    """Rows whose value lies below `lowest` or above `highest` (None: no upper bound; NaN is not flagged)."""
    with np.errstate(invalid="ignore"):
        bad = (values < lowest) | (values > (np.inf if highest is None else highest))
    if highest is None:
        below = "negative values" if lowest == 0 else f"values below {_number(lowest)}"
        rule = f"{below} (must be >= {_number(lowest)})"
    else:
        rule = f"values outside [{_number(lowest)}, {_number(highest)}] (the declared range)"
    return rows_problem(bad, file, column, rule)


def not_binary(values: np.ndarray, file: str, column: str) -> Problem | None:
    """Rows of a binary label whose value is neither 0 nor 1 (NaN is not flagged: `missing_values` does that)."""
    bad = ~np.isnan(values) & (values != 0) & (values != 1)
    return rows_problem(bad, file, column, "values outside {0, 1} (a binary label)")


def duplicate_rows(frame: pd.DataFrame, keys: Sequence[str], file: str, duplicates: str) -> Problem | None:
    """A warning for rows repeating an earlier row's values in every key column (same user, item and time), saying
    what the loaders do with them under the policy `duplicates` (DUPLICATE_POLICIES)."""
    bad = frame.duplicated(subset=list(keys), keep="first").to_numpy()
    return rows_problem(bad, file, ",".join(keys), f"duplicate impressions (these columns repeat an earlier row): "
                        f"{DUPLICATE_ACTIONS[duplicates]} (data.duplicates={duplicates})", level="warning")


DUPLICATE_ACTIONS = {"drop": "the loader drops them, keeping the first of each",
                     "keep": "the loader keeps them, so each weighs double"}


def duplicate_policy(data_cfg: DictConfig | dict) -> str:
    """`data.duplicates` of a data config, checked (ConfigError naming the key otherwise)."""
    policy = data_cfg.get("duplicates", DEFAULT_DUPLICATES)
    if policy not in DUPLICATE_POLICIES:
        raise ConfigError(f"data.duplicates: must be one of {', '.join(DUPLICATE_POLICIES)} (got {policy!r})")
    return policy


def apply_duplicate_policy(frame: pd.DataFrame, keys: Sequence[str], duplicates: str) -> tuple[pd.DataFrame,
                                                                                                list[str]]:
    """The rows a loader keeps under the policy `duplicates` and, where the log has duplicate impressions, the
    note saying how many and what became of them (the dataset's notes: `mfh data describe` prints them)."""
    repeated = frame.duplicated(subset=list(keys), keep="first").to_numpy()
    count = int(repeated.sum())
    if count == 0:
        return frame, []
    done = "dropped, the first of each kept" if duplicates == "drop" else "kept, so each weighs double"
    note = (f"{count:,} duplicate impressions (rows repeating an earlier row's {', '.join(keys)}, "
            f"{count / len(frame):.1%} of the log's rows) {done} (data.duplicates={duplicates})")
    if duplicates == "keep":
        return frame, [note]
    return frame[~repeated].reset_index(drop=True), [note]


def overlapping_logs(logs: list[tuple[str, pd.DataFrame, np.ndarray]], duplicates: str) -> list[Problem]:
    """What several log files of one dataset hold twice, from (file name, its key columns, its dates [N]) per file
    in load order. Two logs: an error where a later file repeats rows of an earlier one (every key column equal) or
    where their rows' dates overlap (read from the rows, not the names). Parts of one log (names equal but for a
    `_partN` suffix) may share days, and a row repeated across them is a duplicate impression of that log: a
    warning under the policy `duplicates`, as within a file."""
    problems = []
    for (first_name, first_keys, first_dates), (name, keys, dates) in combinations(logs, 2):
        with np.errstate(invalid="ignore"):  # NaN dates are an error of their own (missing_values)
            start = max(np.nanmin(first_dates, initial=np.inf), np.nanmin(dates, initial=np.inf))
            end = min(np.nanmax(first_dates, initial=-np.inf), np.nanmax(dates, initial=-np.inf))
        if not start <= end:
            continue
        shared = f"{_number(start)}-{_number(end)}"
        repeated = pd.MultiIndex.from_frame(keys).isin(pd.MultiIndex.from_frame(first_keys))
        columns = ", ".join(keys.columns)
        if _log_stem(first_name) == _log_stem(name):
            problems.append(rows_problem(repeated, name, None, f"duplicate impressions across the parts of one log "
                                         f"(same {columns} as a row of {first_name}): {DUPLICATE_ACTIONS[duplicates]} "
                                         f"(data.duplicates={duplicates})", level="warning"))
        elif repeated.any():
            problems.append(rows_problem(repeated, name, None, f"rows repeated from {first_name} (same {columns}; "
                                         f"dates {shared} in both files: a log held twice, keep one copy)"))
        else:
            problems.append(rows_problem((dates >= start) & (dates <= end), name, "date",
                                         f"dates overlap {first_name}'s ({shared} in both files; each day must "
                                         f"come from one log file, and only parts of one log, *_part1.csv, "
                                         f"*_part2.csv, may share days)"))
    return [problem for problem in problems if problem is not None]


def _log_stem(name: str) -> str:
    """A log file's name without its suffix and `_partN`: the parts of one log share it."""
    return PART_SUFFIX.sub("", Path(name).name.split(".")[0])


def empty_categories(index: np.ndarray, names: Sequence[str], what: str, file: str, column: str,
                     details: Sequence[str] | None = None) -> list[Problem]:
    """One error per category (user group, split) that no row falls in; `index` [N] is -1 for no category."""
    counts = np.bincount(index[index >= 0], minlength=len(names))
    return [Problem("error", file, column, f"{what} '{name}' has no rows" + (f" ({details[k]})" if details else ""))
            for k, name in enumerate(names) if counts[k] == 0]


def column_problems(frame: pd.DataFrame, file: str, rules: ColumnRules, duplicates: str
                    ) -> tuple[list[Problem], dict[str, np.ndarray] | None]:
    """Every per-column rule on one log (duplicate impressions under the policy `duplicates`), and its numeric
    columns as float64 [N] arrays (None when a required column is missing: then only the missing columns are
    reported)."""
    problems = missing_columns(frame, rules.required, file)
    if problems:
        return problems, None
    numeric = {}
    found: list[Problem | None] = []
    for column in rules.numeric:
        numeric[column], problem = as_numeric(frame[column], file, column)
        found += [problem, not_finite(numeric[column], file, column)]
    found += [missing_values(frame[column], file, column) for column in rules.complete]
    found += [not_binary(numeric[column], file, column) for column in rules.binary]
    found += [outside_range(numeric[column], lowest, highest, file, column)
              for column, (lowest, highest) in rules.ranges.items()]
    found.append(duplicate_rows(frame, rules.unique, file, duplicates))
    return [problem for problem in found if problem is not None], numeric


# KuaiRand (SPEC §5): the label sources must be complete, the flags binary, play and duration non-negative.
KUAIRAND_RULES = ColumnRules(
    required=KUAIRAND_LOG_COLUMNS,
    numeric=KUAIRAND_LOG_COLUMNS,
    complete=("user_id", "video_id", "date", "time_ms", "play_time_ms", "duration_ms", "is_like", "is_forward",
              "is_comment", "is_follow"),
    binary=("is_like", "is_forward", "is_comment", "is_follow"),
    ranges={"play_time_ms": (0, None), "duration_ms": (0, None)},
    unique=("user_id", "video_id", "time_ms"),
)


def kuairand_problems(path: Path, data_cfg: DictConfig | None = None) -> list[Problem]:
    """Check one KuaiRand log CSV, or every log_standard_*.csv of a KuaiRand folder (or of its `kuairand-pure/`),
    with the groups from the user table beside the logs; split dates and dense columns from `data_cfg` (the
    loader's data config; default conf/data/kuairand.yaml). Several logs must not hold a row or a day twice
    (`overlapping_logs`). The loader runs this too, before encoding."""
    defaults = data_cfg if data_cfg is not None else OmegaConf.load(CONF_DIR / "data" / "kuairand.yaml")
    duplicates = duplicate_policy(defaults)
    path = Path(path)
    if not path.exists():
        return [Problem("error", str(path), None, "unreadable (no such file or directory)")]
    folder = path.parent
    if path.is_dir():
        folder = log_folder(path, defaults.subdir)
        if folder is None:
            return [Problem("error", str(path), None, f"no {LOG_PATTERN} here nor in {defaults.subdir}/")]
    logs = sorted(folder.glob(LOG_PATTERN)) if path.is_dir() else [path]
    user_tables = sorted(folder.glob(USER_PATTERN))
    users, problems = _kuairand_users(user_tables, list(defaults.dense))
    if not user_tables:
        problems.append(Problem("warning", str(folder), None, f"no {USER_PATTERN} beside the log: user group "
                                                              "checks skipped"))
    dates, groups, read = [], [], []
    for log in logs:
        frame, unreadable = read_log(log)
        found, numeric = ([unreadable], None) if frame is None else column_problems(frame, log.name,
                                                                                      KUAIRAND_RULES, duplicates)
        problems += found
        if numeric is None:
            continue
        dates.append(numeric["date"])
        read.append((log.name, frame[list(KUAIRAND_RULES.unique)], numeric["date"]))
        if users is not None:
            user_row = users.index.get_indexer(frame["user_id"])  # [N] -1 where absent from the user table
            groups.append(log_row_groups(users.to_numpy(), user_row))  # as the loader groups them
            absent = rows_problem(user_row < 0, log.name, "user_id", f"users missing from {user_tables[0].name} "
                                  f"(grouped {USER_GROUPS[ABSENT_USER_GROUP]})", level="warning")
            problems += [absent] if absent else []
    if not dates:
        return problems
    problems += overlapping_logs(read, duplicates)
    where = logs[0].name if len(logs) == 1 else f"{folder.name}/{LOG_PATTERN}"
    ranges = split_ranges(defaults)
    problems += empty_categories(split_of(np.concatenate(dates), ranges), SPLITS, "split", where, "date",
                                 details=[f"dates {first}-{last}" for first, last in ranges.values()])
    if groups:
        problems += empty_categories(np.concatenate(groups), USER_GROUPS, "user group", where, "user_active_degree")
    return problems


def _kuairand_users(tables: list[Path], dense: Sequence[str]) -> tuple[pd.Series | None, list[Problem]]:
    """The user group (index into USER_GROUPS) by user id [U] from the user tables; None when they have problems.
    The `dense` input columns a table has must hold finite numbers (the loader reports those it lacks)."""
    frames, problems = [], []
    for table in tables:
        frame, unreadable = read_log(table)
        found = [unreadable] if frame is None else missing_columns(frame, KUAIRAND_USER_COLUMNS, table.name)
        if not found:
            numeric = {}
            for column in _unique(["register_days", *(name for name in dense if name in frame.columns)]):
                numeric[column], not_numeric = as_numeric(frame[column], table.name, column)
                found += [not_numeric, not_finite(numeric[column], table.name, column)]
            found.append(rows_problem(frame["user_id"].duplicated().to_numpy(), table.name, "user_id",
                                      "duplicate ids (each user must appear once)"))
            found = [problem for problem in found if problem]
            frames.append(frame[["user_id", "user_active_degree"]].assign(register_days=numeric["register_days"]))
        problems += found
    if not frames or problems:
        return None, problems
    users = pd.concat(frames, ignore_index=True).drop_duplicates("user_id")  # a user in two tables: first wins
    return pd.Series(user_groups(users), index=pd.Index(users["user_id"])), problems


# Your own log: the mapping of its columns (conf/data/table.yaml) and its checks.
MAPPING_KEYS = ("path", "user", "item", "time", "group", "labels", "categorical", "dense", "split")
GROUP_KEYS = ("column", "values", "default", "names")
LABEL_KEYS = ("column", "kind", "range", "allow_missing")
SPLIT_KEYS = ("by", "fractions", "boundaries")


@dataclass(frozen=True)
class Label:
    """One behaviour's label column and its kind; `range` (regression only) bounds its values."""

    behaviour: str
    column: str
    kind: str
    range: tuple[float, float] | None = None
    allow_missing: bool = False  # True: empty cells mask the label instead of being an error


@dataclass(frozen=True)
class GroupRule:
    """How a row's user group is read from `column`: its value is a group name (`values` None) or listed under a
    group in `values`; anything else goes to `default`."""

    column: str
    names: tuple[str, ...]
    default: str
    values: dict[str, tuple[str, ...]] | None = None  # group -> the column's values (as text) meaning it


@dataclass(frozen=True)
class SplitRule:
    """Train / validation / test by `boundaries` on the time column or by `fractions` of the time-ordered rows."""

    by: str  # "time" | "fraction"
    boundaries: tuple[float, float] | None = None  # validation start, test start
    fractions: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class TableMapping:
    """Which column of the log plays which part (parsed and checked from the mapping keys)."""

    path: str | None
    user: str
    item: str
    time: str
    group: GroupRule
    labels: tuple[Label, ...]
    categorical: tuple[str, ...]
    dense: tuple[str, ...]
    split: SplitRule

    def column_rules(self) -> ColumnRules:
        """The per-column checks of this log: required, numeric, complete, binary, in range, duplicates."""
        label_columns = [label.column for label in self.labels]
        return ColumnRules(
            required=_unique([self.user, self.item, self.time, self.group.column, *label_columns,
                              *self.categorical, *self.dense]),
            numeric=_unique([self.time, *label_columns, *self.dense]),
            complete=_unique([self.user, self.item, self.time,
                              *(label.column for label in self.labels if not label.allow_missing)]),
            binary=_unique([label.column for label in self.labels if label.kind == "binary"]),
            ranges={label.column: label.range for label in self.labels if label.range is not None},
            unique=(self.user, self.item, self.time),
        )

    def categorical_fields(self) -> tuple[str, ...]:
        """The categorical inputs: user id, item id, then the further categorical columns."""
        return _unique([self.user, self.item, *self.categorical])


def read_mapping_file(path: Path) -> TableMapping:
    """A mapping YAML (the mapping keys of conf/data/table.yaml), parsed and checked."""
    try:
        values = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OSError, OmegaConfBaseException, ValueError) as error:
        raise ConfigError(f"{path}: cannot read the mapping ({str(error).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the mapping must be a YAML dictionary of {', '.join(MAPPING_KEYS)}")
    return parse_mapping(values, str(path))


def parse_mapping(values: dict, source: str, key_prefix: str = "", ignored: tuple[str, ...] = ()) -> TableMapping:
    """The mapping from plain values; a bad one is a ConfigError naming `source` and the key (`key_prefix` +
    key). Keys in `ignored` are allowed and skipped (the data config's own keys)."""
    return _MappingParser(source, key_prefix, ignored).mapping(values)


class _MappingParser:
    """Turns plain mapping values into a TableMapping; every bad value is a ConfigError naming source and key."""

    def __init__(self, source: str, key_prefix: str = "", ignored: tuple[str, ...] = ()) -> None:
        self.source, self.key_prefix, self.ignored = source, key_prefix, ignored

    def mapping(self, values: dict) -> TableMapping:
        self.known_keys(values, (*MAPPING_KEYS, *self.ignored), "")
        return TableMapping(
            path=None if values.get("path") is None else self.column(values["path"], "path"),
            user=self.column(values.get("user"), "user"),
            item=self.column(values.get("item"), "item"),
            time=self.column(values.get("time"), "time"),
            group=self.group(values.get("group")),
            labels=self.labels(values.get("labels")),
            categorical=self.columns(values.get("categorical"), "categorical"),
            dense=self.columns(values.get("dense"), "dense"),
            split=self.split(values.get("split")),
        )

    def fail(self, key: str, rule: str) -> ConfigError:
        return ConfigError(f"{self.source}: key {self.key_prefix}{key}: {rule}")

    def known_keys(self, values: dict, allowed: tuple[str, ...], prefix: str) -> None:
        """A typo in a key fails loudly instead of being ignored."""
        unknown = [key for key in values if key not in allowed]
        if unknown:
            raise self.fail(f"{prefix}{unknown[0]}", f"unknown key (expected one of {', '.join(allowed)})")

    def column(self, value: object, key: str) -> str:
        if not isinstance(value, (str, int)) or isinstance(value, bool) or value == "":
            raise self.fail(key, f"expected a column name, got {value!r}")
        return str(value)

    def columns(self, value: object, key: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list of names, got {value!r}")
        return tuple(self.column(item, f"{key}[{index}]") for index, item in enumerate(value))

    def ordered_numbers(self, value: object, count: int) -> bool:
        """`value` is a list of `count` numbers in non-decreasing order."""
        return isinstance(value, list) and len(value) == count and all(
            isinstance(number, (int, float)) and not isinstance(number, bool) for number in value) and \
            all(first <= second for first, second in zip(value, value[1:]))

    def group(self, group: object) -> GroupRule:
        if not isinstance(group, dict):
            raise self.fail("group", "expected {column, names, default, values}")
        self.known_keys(group, GROUP_KEYS, "group.")
        names = self.columns(group.get("names"), "group.names")
        if not names or len(set(names)) != len(names):
            raise self.fail("group.names", "expected a non-empty list of distinct group names")
        if group.get("default") not in names:
            raise self.fail("group.default", f"must be one of the group names {list(names)}, got "
                                             f"{group.get('default')!r}")
        values = group.get("values")
        if values is not None:
            if not isinstance(values, dict) or not set(values) <= set(names):
                raise self.fail("group.values", f"expected group -> list of the column's values, groups among "
                                                f"{list(names)}")
            values = {name: tuple(str(item) for item in (listed if isinstance(listed, list) else [listed]))
                      for name, listed in values.items()}
        return GroupRule(column=self.column(group.get("column"), "group.column"), names=names,
                         default=group["default"], values=values)

    def labels(self, labels: object) -> tuple[Label, ...]:
        if not isinstance(labels, dict) or not labels:
            raise self.fail("labels", "expected behaviour -> its label column (or {column, kind, range}), at "
                                      "least one")
        return tuple(self.label(str(behaviour), spec) for behaviour, spec in labels.items())

    def label(self, behaviour: str, spec: object) -> Label:
        key = f"labels.{behaviour}"
        spec = {"column": spec} if isinstance(spec, (str, int)) else ({} if spec is None else spec)
        if not isinstance(spec, dict):
            raise self.fail(key, f"expected a column name or {{{', '.join(LABEL_KEYS)}}}")
        self.known_keys(spec, LABEL_KEYS, f"{key}.")
        kind = spec.get("kind") or BEHAVIOURS.get(behaviour)
        if kind not in KINDS:
            raise self.fail(f"{key}.kind", f"a new behaviour needs kind: regression or binary (known: "
                                           f"{', '.join(BEHAVIOURS)}), got {kind!r}")
        if behaviour in BEHAVIOURS and kind != BEHAVIOURS[behaviour]:
            raise self.fail(f"{key}.kind", f"{behaviour} is a {BEHAVIOURS[behaviour]} behaviour, not {kind}")
        bounds = spec.get("range")
        if bounds is not None and (kind != "regression" or not self.ordered_numbers(bounds, 2)):
            raise self.fail(f"{key}.range", f"expected [lowest, highest] on a regression label, got {bounds!r}")
        return Label(behaviour=behaviour, column=self.column(spec.get("column", behaviour), f"{key}.column"),
                     kind=kind, range=None if bounds is None else (float(bounds[0]), float(bounds[1])),
                     allow_missing=bool(spec.get("allow_missing", False)))

    def split(self, split: object) -> SplitRule:
        if not isinstance(split, dict) or split.get("by") not in ("time", "fraction"):
            raise self.fail("split.by", "expected time (with boundaries) or fraction (with fractions)")
        self.known_keys(split, SPLIT_KEYS, "split.")
        if split["by"] == "time":
            bounds = split.get("boundaries")
            if not self.ordered_numbers(bounds, 2):
                raise self.fail("split.boundaries", f"expected [validation_start, test_start] times, got {bounds!r}")
            return SplitRule(by="time", boundaries=(float(bounds[0]), float(bounds[1])))
        fractions = split.get("fractions")
        if not (isinstance(fractions, list) and len(fractions) == 3 and all(
                isinstance(share, (int, float)) and share > 0 for share in fractions)
                and abs(sum(fractions) - 1) < 1e-6):
            raise self.fail("split.fractions", f"expected [train, validation, test] shares, positive, summing to "
                                               f"1, got {fractions!r}")
        return SplitRule(by="fraction", fractions=tuple(float(share) for share in fractions))


def assign_groups(column: pd.Series, rule: GroupRule) -> np.ndarray:
    """[N] int64 index into `rule.names` per row; values neither a group name nor listed go to the default.

    Values are compared as text, so `values: {new: [1]}` matches a column holding 1 (or 1.0, as a CSV column
    of integers with gaps reads)."""
    if rule.values is None:
        lookup = {name: index for index, name in enumerate(rule.names)}
    else:
        lookup = {value: rule.names.index(name) for name, listed in rule.values.items() for value in listed}
    default = rule.names.index(rule.default)
    codes, uniques = pd.factorize(column)  # [N] index into the distinct values; -1 where empty
    text = [str(int(value)) if isinstance(value, float) and value.is_integer() else str(value) for value in uniques]
    group_of_value = np.array([lookup.get(value, default) for value in text] + [default], dtype=np.int64)
    return group_of_value[codes]  # code -1 picks the trailing default


def assign_splits(time: np.ndarray, rule: SplitRule) -> np.ndarray:
    """[N] int64 index into SPLITS per row, from the time column [N] by the mapping's split rule."""
    if rule.by == "time":
        validation_start, test_start = rule.boundaries
        return (time >= validation_start).astype(np.int64) + (time >= test_start).astype(np.int64)
    # By fraction: the first rows in time order (ties keep file order) are train, then validation, then test.
    rank = np.empty(len(time), dtype=np.int64)
    rank[np.argsort(time, kind="stable")] = np.arange(len(time))
    cuts = np.round(np.cumsum(rule.fractions[:2]) * len(time)).astype(np.int64)
    return np.searchsorted(cuts, rank, side="right").astype(np.int64)


def table_problems(frame: pd.DataFrame, mapping: TableMapping, file: str,
                   duplicates: str = DEFAULT_DUPLICATES) -> list[Problem]:
    """Every problem of your own log under its mapping: the per-column rules (duplicate impressions under the
    policy `duplicates`), then empty groups and splits."""
    problems, numeric = column_problems(frame, file, mapping.column_rules(), duplicates)
    if numeric is None:
        return problems
    groups = assign_groups(frame[mapping.group.column], mapping.group)
    problems += empty_categories(groups, mapping.group.names, "user group", file, mapping.group.column)
    splits = assign_splits(numeric[mapping.time], mapping.split)
    problems += empty_categories(splits, SPLITS, "split", file, mapping.time, details=_split_details(mapping.split))
    return problems


def _split_details(rule: SplitRule) -> list[str]:
    """Each split's definition, quoted when it is empty."""
    if rule.by == "fraction":
        return [f"fraction {_number(share)} of the rows" for share in rule.fractions]
    validation_start, test_start = (_number(bound) for bound in rule.boundaries)
    return [f"time < {validation_start}", f"{validation_start} <= time < {test_start}", f"time >= {test_start}"]


def stop_on_errors(problems: list[Problem], quiet: bool) -> None:
    """What a loader does with a log's problems: the first error raises DataError with the line `mfh data
    validate` prints for it; otherwise the warnings go to stderr unless `quiet`."""
    errors = [problem for problem in problems if problem.level == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more: `mfh data validate` lists them)" if len(errors) > 1 else ""
        raise DataError(errors[0].message + more)
    if not quiet:
        for problem in problems:
            print(problem, file=sys.stderr)


def validate(path: Path, mapping: Path | None = None) -> list[Problem]:
    """Every problem of a log: KuaiRand (a log CSV or a folder) without `mapping`, your own log with it."""
    if mapping is None:
        return kuairand_problems(Path(path))
    table_mapping = read_mapping_file(Path(mapping))
    frame, unreadable = read_log(Path(path))
    if unreadable is not None:
        return [unreadable]
    return table_problems(frame, table_mapping, Path(path).name)


def _number(value: float) -> str:
    """A bound as the user wrote it: 1651708800, not 1.65171e+09."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _unique(columns: list[str]) -> tuple[str, ...]:
    """The columns in order, each once."""
    return tuple(dict.fromkeys(columns))
