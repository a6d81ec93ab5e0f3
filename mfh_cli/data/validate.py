"""`mfh data validate`: check a log before training and report every problem as one line.

The rules are small vectorised functions over one column each (types, NaN, ranges, binary values, duplicates,
empty groups and splits), shared by the KuaiRand check here and by your own log's check (`table.py`), which the
table loader also runs so that training never starts on a bad log.

Shape letters: N log rows, U user-table rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from mfh_cli.config import CONF_DIR
from mfh_cli.data.dataset import GROUPS, SPLITS
from mfh_cli.data.kuairand import LOG_PATTERN, USER_PATTERN, user_groups

EXAMPLE_ROWS = 3  # row numbers quoted per problem

# The 19 official KuaiRand log columns, in official order (shared/data/kuairand-pure/SOURCE.md).
KUAIRAND_LOG_COLUMNS = (
    "user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like", "is_follow", "is_comment",
    "is_forward", "is_hate", "long_view", "play_time_ms", "duration_ms", "profile_stay_time", "comment_stay_time",
    "is_profile_enter", "is_rand", "tab",
)
KUAIRAND_USER_COLUMNS = ("user_id", "user_active_degree", "register_days")  # what the groups need (SPEC §5)


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
    ranges: dict[str, tuple[float | None, float | None]]  # column -> (lowest, highest) allowed; None = open
    unique: Sequence[str]  # identical values in all of these columns = a duplicate row (warning)


def rows_problem(bad: np.ndarray, file: str, column: str | None, rule: str, level: str = "error") -> Problem | None:
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


def missing_values(raw: pd.Series, file: str, column: str) -> Problem | None:
    """Rows where a column that must be complete (ids, time, labels) is NaN or empty."""
    return rows_problem(raw.isna().to_numpy(), file, column, "missing values (NaN or empty)")


def outside_range(values: np.ndarray, lowest: float | None, highest: float | None, file: str,
                  column: str) -> Problem | None:
    """Rows whose value lies below `lowest` or above `highest` (None: no bound on that side; NaN is not flagged)."""
    with np.errstate(invalid="ignore"):
        bad = np.zeros(len(values), dtype=bool)
        if lowest is not None:
            bad |= values < lowest
        if highest is not None:
            bad |= values > highest
    if lowest == 0 and highest is None:
        rule = "negative values (must be >= 0)"
    elif highest is None:
        rule = f"values below {lowest:g} (must be >= {lowest:g})"
    elif lowest is None:
        rule = f"values above {highest:g} (must be <= {highest:g})"
    else:
        rule = f"values outside [{lowest:g}, {highest:g}] (the declared range)"
    return rows_problem(bad, file, column, rule)


def not_binary(values: np.ndarray, file: str, column: str) -> Problem | None:
    """Rows of a binary label whose value is neither 0 nor 1 (NaN is not flagged: `missing_values` does that)."""
    bad = ~np.isnan(values) & (values != 0) & (values != 1)
    return rows_problem(bad, file, column, "values outside {0, 1} (a binary label)")


def duplicate_rows(frame: pd.DataFrame, keys: Sequence[str], file: str) -> Problem | None:
    """A warning for rows repeating an earlier row's values in every key column (same user, item and time)."""
    bad = frame.duplicated(subset=list(keys), keep="first").to_numpy()
    return rows_problem(bad, file, ",".join(keys), f"duplicate rows (same {', '.join(keys)} as an earlier row)",
                        level="warning")


def empty_categories(index: np.ndarray, names: Sequence[str], what: str, file: str, column: str,
                     details: Sequence[str] | None = None) -> list[Problem]:
    """One error per category (user group, split) that no row falls in; `index` [N] is -1 for no category."""
    counts = np.bincount(index[index >= 0], minlength=len(names))
    return [Problem("error", file, column, f"{what} '{name}' has no rows" + (f" ({details[k]})" if details else ""))
            for k, name in enumerate(names) if counts[k] == 0]


def column_problems(frame: pd.DataFrame, file: str, rules: ColumnRules
                    ) -> tuple[list[Problem], dict[str, np.ndarray] | None]:
    """Every per-column rule on one log, and its numeric columns as float64 [N] arrays (None when a required
    column is missing: then only the missing columns are reported)."""
    problems = missing_columns(frame, rules.required, file)
    if problems:
        return problems, None
    numeric = {}
    found: list[Problem | None] = []
    for column in rules.numeric:
        numeric[column], problem = as_numeric(frame[column], file, column)
        found.append(problem)
    found += [missing_values(frame[column], file, column) for column in rules.complete]
    found += [not_binary(numeric[column], file, column) for column in rules.binary]
    found += [outside_range(numeric[column], lowest, highest, file, column)
              for column, (lowest, highest) in rules.ranges.items()]
    found.append(duplicate_rows(frame, rules.unique, file))
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


def kuairand_problems(path: Path) -> list[Problem]:
    """Check one KuaiRand log CSV, or every log_standard_*.csv of a KuaiRand folder (or of its `kuairand-pure/`),
    with the groups from the user table beside the logs and the default split dates of conf/data/kuairand.yaml."""
    defaults = OmegaConf.load(CONF_DIR / "data" / "kuairand.yaml")
    path = Path(path)
    if not path.exists():
        return [Problem("error", str(path), None, "unreadable (no such file or directory)")]
    folder = path.parent
    if path.is_dir():
        folder = next((place for place in (path, path / defaults.subdir) if any(place.glob(LOG_PATTERN))), None)
        if folder is None:
            return [Problem("error", str(path), None, f"no {LOG_PATTERN} here nor in {defaults.subdir}/")]
    logs = sorted(folder.glob(LOG_PATTERN)) if path.is_dir() else [path]
    user_tables = sorted(folder.glob(USER_PATTERN))
    users, problems = _kuairand_users(user_tables)
    if not user_tables:
        problems.append(Problem("warning", str(folder), None, f"no {USER_PATTERN} beside the log: user group "
                                                              "checks skipped"))
    dates, groups = [], []
    for log in logs:
        frame, unreadable = read_log(log)
        found, numeric = ([unreadable], None) if frame is None else column_problems(frame, log.name,
                                                                                      KUAIRAND_RULES)
        problems += found
        if numeric is None:
            continue
        dates.append(numeric["date"])
        if users is not None:
            user_row = users.index.get_indexer(frame["user_id"])  # [N] -1 where absent from the user table
            # Like the loader: a user missing from the table is in the low group.
            groups.append(np.where(user_row >= 0, users.to_numpy()[user_row], GROUPS.index("low")))
            absent = rows_problem(user_row < 0, log.name, "user_id", f"users missing from {user_tables[0].name} "
                                  "(grouped low)", level="warning")
            problems += [absent] if absent else []
    if not dates:
        return problems
    where = logs[0].name if len(logs) == 1 else f"{folder.name}/{LOG_PATTERN}"
    ranges = [(int(defaults.split[name][0]), int(defaults.split[name][1])) for name in SPLITS]
    problems += empty_categories(_date_split(np.concatenate(dates), ranges), SPLITS, "split", where, "date",
                                 details=[f"dates {first}-{last}" for first, last in ranges])
    if groups:
        problems += empty_categories(np.concatenate(groups), GROUPS, "user group", where, "user_active_degree")
    return problems


def _kuairand_users(tables: list[Path]) -> tuple[pd.Series | None, list[Problem]]:
    """The user group (index into GROUPS) by user id [U] from the user tables; None when they have problems."""
    frames, problems = [], []
    for table in tables:
        frame, unreadable = read_log(table)
        found = [unreadable] if frame is None else missing_columns(frame, KUAIRAND_USER_COLUMNS, table.name)
        if not found:
            register_days, not_numeric = as_numeric(frame["register_days"], table.name, "register_days")
            repeated = rows_problem(frame["user_id"].duplicated().to_numpy(), table.name, "user_id",
                                    "duplicate ids (each user must appear once)")
            found = [problem for problem in (not_numeric, repeated) if problem]
            frames.append(frame[["user_id", "user_active_degree"]].assign(register_days=register_days))
        problems += found
    if not frames or problems:
        return None, problems
    users = pd.concat(frames, ignore_index=True).drop_duplicates("user_id")  # a user in two tables: first wins
    return pd.Series(user_groups(users), index=pd.Index(users["user_id"])), problems


def _date_split(dates: np.ndarray, ranges: list[tuple[int, int]]) -> np.ndarray:
    """[N] index into SPLITS per row by inclusive YYYYMMDD ranges; -1 outside every range."""
    split = np.full(len(dates), -1, dtype=np.int64)
    for index, (first, last) in enumerate(ranges):
        split[(dates >= first) & (dates <= last)] = index
    return split


def validate(path: Path, mapping: Path | None = None) -> list[Problem]:
    """Every problem of a log: KuaiRand (a log CSV or a folder) without `mapping`, your own log with it."""
    if mapping is None:
        return kuairand_problems(Path(path))
    # table.py builds on this module's rules, so it is imported here rather than at the top.
    from mfh_cli.data.table import read_mapping_file, table_problems

    table_mapping = read_mapping_file(Path(mapping))
    frame, unreadable = read_log(Path(path))
    if unreadable is not None:
        return [unreadable]
    return table_problems(frame, table_mapping, Path(path).name)
