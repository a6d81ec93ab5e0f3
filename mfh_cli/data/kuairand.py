"""KuaiRand loader (SPEC §5): the standard logs joined to the user and video tables, encoded as a `Dataset`.

Works on the shared two-week slice and on the official KuaiRand-Pure / 1K / 27K archives alike: every
`log_standard_*.csv`, `user_features_*.csv` and `video_features_basic_*.csv` in the folder is read (never
`video_features_statistic_*`: it averages over the label period). Every vocabulary comes from the train split;
index 0 is out-of-vocabulary or missing, so users first seen in validation or test are real cold-start users.
The file patterns, the group rule and the date split are torch-free, in `kuairand_format.py`.

Shape letters: N log rows, C categorical fields, D dense features, L behaviours, U table rows (users or videos).
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from mfh_cli.config_schema import split_ranges
from mfh_cli.data.cache import cached_dataset
from mfh_cli.data.dataset import Dataset
from mfh_cli.data.describe import label_sparsity_notes
from mfh_cli.data.encoding import encode, gather, standardise
from mfh_cli.data.kuairand_format import (LOG_PATTERN, USER_PATTERN, VIDEO_PATTERN, log_folder, log_row_groups,
                                          split_of, tab_scenarios, user_groups)
from mfh_cli.data.schema import SPLITS, Schema
from mfh_cli.data.validate import (KUAIRAND_RULES, RULES_VERSION, apply_duplicate_policy, duplicate_policy,
                                   kuairand_problems, stop_on_errors)
from mfh_cli.errors import DataError
from mfh_cli.tasks import (BEHAVIOURS, CMPL, COMMENT, FINISH, FOLLOW, LIKE, SHARE, SKIP, USER_GROUPS,
                            WATCH_BEHAVIOURS)

# Bump when the encoding changes, so caches written by an older loader are not reused.
ENCODING_VERSION = 2  # 2: rows carry their scenario (tab)

# The log columns read, with their dtypes (no other label column is read: none may become an input).
LOG_COLUMNS = {
    "user_id": "int64", "video_id": "int64", "date": "int64", "hourmin": "int64", "time_ms": "int64", "tab": "int64",
    "play_time_ms": "int64", "duration_ms": "int64",
    "is_like": "int8", "is_forward": "int8", "is_comment": "int8", "is_follow": "int8",
}
# Interactive behaviours and their log column (SPEC §5).
INTERACTIVE_COLUMNS = {LIKE: "is_like", SHARE: "is_forward", COMMENT: "is_comment", FOLLOW: "is_follow"}
SKIP_MS = 3000


def load_kuairand(data_cfg: DictConfig, directory: Path, cache_dir: Path | None, quiet: bool) -> Dataset:
    """KuaiRand from `directory` (the dataset folder or its parent holding `data_cfg.subdir`), cached."""
    folder = dataset_folder(Path(directory), data_cfg.subdir)
    logs, users, videos = (_files(folder, pattern) for pattern in (LOG_PATTERN, USER_PATTERN, VIDEO_PATTERN))
    key = {"encoding": ENCODING_VERSION, "rules": RULES_VERSION,
           "data": OmegaConf.to_container(data_cfg, resolve=True)}
    return cached_dataset("kuairand", key, [*logs, *users, *videos], cache_dir,
                          lambda: check_and_build(data_cfg, folder, logs, users, videos, quiet))


def check_and_build(data_cfg: DictConfig, folder: Path, logs: list[Path], users: list[Path], videos: list[Path],
                    quiet: bool) -> Dataset:
    """The checks of `mfh data validate` on the folder, then `build_kuairand`: only a log that passes them is
    encoded (and so cached)."""
    stop_on_errors(kuairand_problems(folder, data_cfg), quiet)
    return build_kuairand(data_cfg, logs, users, videos, quiet)


def dataset_folder(directory: Path, subdir: str) -> Path:
    """`directory` itself when it holds the logs, else `directory/subdir`; a DataError when neither does."""
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory (give --data-dir or MFH_DATA_DIR; get the data with "
                        f"`mfh data download kuairand-pure`)")
    folder = log_folder(directory, subdir)
    if folder is None:
        raise DataError(f"{directory}: no {LOG_PATTERN} here nor in {directory / subdir}")
    return folder


def _files(folder: Path, pattern: str) -> list[Path]:
    found = sorted(folder.glob(pattern))
    if not found:
        raise DataError(f"{folder}: no {pattern} (KuaiRand needs the log, user and video tables)")
    return found


def build_kuairand(data_cfg: DictConfig, logs: list[Path], user_tables: list[Path], video_tables: list[Path],
                   quiet: bool) -> Dataset:
    """Read, derive labels, groups and split, encode the inputs (SPEC §5); no cache."""
    started = time.perf_counter()
    ranges = split_ranges(data_cfg)
    user_fields, video_fields = list(data_cfg.user_fields), list(data_cfg.video_fields)
    dense_columns = list(data_cfg.dense)
    log = pd.concat([_read_csv(path, LOG_COLUMNS) for path in logs], ignore_index=True)
    log, duplicate_notes = apply_duplicate_policy(log, KUAIRAND_RULES.unique, duplicate_policy(data_cfg))
    split = split_of(log["date"].to_numpy(), ranges)
    log, split = log[split >= 0].reset_index(drop=True), split[split >= 0]
    in_train = split == SPLITS.index("train")
    if not in_train.any():
        raise DataError(f"{logs[0].parent}: no log row falls in the train dates {ranges['train']} "
                        f"(data.split.train)")

    user_columns = {"user_id": "int64", "user_active_degree": "str", "register_days": "float64",
                    **{name: "str" for name in user_fields}, **{name: "float64" for name in dense_columns}}
    users = _read_table(user_tables, "user_id", user_columns)
    videos = _read_table(video_tables, "video_id", {"video_id": "int64", "tag": "str",
                                                    **{name: "str" for name in video_fields}})
    user_row = users.index.get_indexer(log["user_id"])  # [N] position in the user table, -1 when absent
    video_row = videos.index.get_indexer(log["video_id"])

    labels, label_mask = derive_labels(log)
    group = log_row_groups(user_groups(users), user_row)
    scenarios, scenario = tab_scenarios(log["tab"].to_numpy(), in_train)
    # Each field: its values and where they live (the log, or a user / video table column).
    fields = [("user_id", "log", log["user_id"].to_numpy()),
              *((name, "user", users[name]) for name in user_fields),
              ("video_id", "log", log["video_id"].to_numpy()),
              *((name, "video", videos[name]) for name in video_fields),
              ("first_tag", "video", videos["tag"].str.split(",", n=1).str[0]),
              *((name, "log", values) for name, values in
                time_fields(log, list(data_cfg.duration_buckets_s), logs).items())]
    categorical, vocabulary = encode_fields(fields, {"log": None, "user": user_row, "video": video_row}, in_train)
    dense = dense_features(users[dense_columns].to_numpy(), user_row, in_train)  # [N, D]

    missing_users = int((user_row < 0).sum())
    notes = duplicate_notes + ([f"{missing_users:,} log rows have a user missing from {user_tables[0].name}: group "
                                f"low, user features unknown"] if missing_users else [])
    schema = Schema(categorical=vocabulary, dense=dense_columns, behaviours=dict(BEHAVIOURS), groups=list(USER_GROUPS),
                    name="kuairand", notes=notes, scenarios=scenarios)
    dataset = Dataset.from_numpy(schema, categorical=categorical, dense=dense, labels=labels, label_mask=label_mask,
                                 group=group, split=split, user=log["user_id"].to_numpy(copy=True),
                                 scenario=scenario)
    dataset.schema = replace(schema, notes=notes + label_sparsity_notes(dataset, int(data_cfg.sparse_positives)))
    dataset.check()
    if not quiet:
        users_with_rows = len(np.unique(log["user_id"].to_numpy()))
        print(f"kuairand: {len(dataset):,} rows from {len(logs)} log file(s) by {users_with_rows:,} users; the user "
              f"table {user_tables[0].name} lists {len(users):,} users, the video table {len(videos):,} videos; "
              f"encoded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return dataset


def derive_labels(log: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Labels [N, L] float32 (0 where masked) and their mask [N, L] bool, in `BEHAVIOURS` order (SPEC §5); the
    watch-time behaviours are masked where duration_ms is 0."""
    play = log["play_time_ms"].to_numpy(dtype=np.float64)
    duration = log["duration_ms"].to_numpy(dtype=np.float64)
    has_duration = duration > 0
    watch = {
        CMPL: np.minimum(play / np.where(has_duration, duration, 1.0), 1.0),
        FINISH: play >= duration,
        SKIP: play < np.minimum(SKIP_MS, duration),
    }
    interactive = {name: log[column].to_numpy() for name, column in INTERACTIVE_COLUMNS.items()}
    values = watch | interactive
    labels = np.stack([values[name] for name in BEHAVIOURS], axis=1).astype(np.float32)
    label_mask = np.ones(labels.shape, dtype=bool)
    label_mask[:, [list(BEHAVIOURS).index(name) for name in WATCH_BEHAVIOURS]] = has_duration[:, None]
    labels[~label_mask] = 0.0
    return labels, label_mask


def time_fields(log: pd.DataFrame, duration_edges_s: list[float], logs: list[Path]) -> dict[str, np.ndarray]:
    """Per-row categoricals of the log: duration bucket (NaN when unknown), tab, hour and weekday."""
    duration_s = log["duration_ms"].to_numpy() / 1000.0
    bucket = np.where(duration_s > 0, np.searchsorted(np.asarray(duration_edges_s), duration_s), np.nan)
    unique_dates, date_of_row = np.unique(log["date"].to_numpy(), return_inverse=True)
    try:
        weekday = pd.to_datetime(unique_dates.astype(str), format="%Y%m%d").day_of_week.to_numpy()
    except ValueError:
        raise DataError(f"{', '.join(map(str, logs))}: column date: expected YYYYMMDD dates, got "
                        f"{unique_dates[:3].tolist()}…") from None
    return {"duration_bucket": bucket, "tab": log["tab"].to_numpy(), "hour": log["hourmin"].to_numpy() // 100,
            "weekday": weekday[date_of_row]}


def encode_fields(fields: list[tuple[str, str, pd.Series | np.ndarray]], table_rows: dict[str, np.ndarray | None],
                  in_train: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Categorical codes [N, C] and vocabulary sizes of (name, source, values) fields, vocabularies from train.

    A log field holds one value per row and is encoded on the train rows. A table field holds one value per
    table row: it is encoded on the table rows some train row refers to, then looked up per log row through
    `table_rows[source]` ([N] positions, -1 for ids absent from the table, which get 0).
    """
    table_seen_in_train: dict[str, np.ndarray] = {}  # per table: [U] bool, computed once
    columns, vocabulary = [], {}
    for name, source, values in fields:
        rows = table_rows[source]
        if rows is None:
            codes, vocabulary[name] = encode(values, in_train)
        else:
            if source not in table_seen_in_train:
                table_seen_in_train[source] = _seen(rows[in_train], len(values))
            codes, vocabulary[name] = encode(values, table_seen_in_train[source])
            codes = gather(codes, rows, missing=0)
        columns.append(codes)
    return np.stack(columns, axis=1), vocabulary


def dense_features(counts: np.ndarray, user_row: np.ndarray, in_train: np.ndarray) -> np.ndarray:
    """[N, D] float32: log1p of user-table counts [U, D] per log row, standardised on the train rows; 0 where
    the user or the value is missing."""
    return standardise(gather(np.log1p(np.clip(counts, 0, None)), user_row, missing=np.nan), in_train)


def _seen(table_rows: np.ndarray, size: int) -> np.ndarray:
    """[U] bool: the table rows some train log row refers to."""
    seen = np.zeros(size, dtype=bool)
    seen[table_rows[table_rows >= 0]] = True
    return seen


def _read_table(paths: list[Path], id_column: str, columns: dict[str, str]) -> pd.DataFrame:
    """User or video tables concatenated and indexed by their unique id."""
    table = pd.concat([_read_csv(path, columns) for path in paths], ignore_index=True).set_index(id_column)
    if not table.index.is_unique:
        duplicate = table.index[table.index.duplicated()][0]
        raise DataError(f"{', '.join(map(str, paths))}: column {id_column}: ids must be unique "
                        f"({duplicate} appears more than once)")
    return table


def _read_csv(path: Path, columns: dict[str, str]) -> pd.DataFrame:
    """The named columns of one CSV with explicit dtypes; a missing column or bad value names file and column."""
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read as CSV ({str(error).splitlines()[0]})") from None
    missing = [name for name in columns if name not in header]
    if missing:
        raise DataError(f"{path}: missing column {', '.join(missing)}")
    try:
        return pd.read_csv(path, usecols=list(columns), dtype=columns)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: {_bad_column(path, columns) or str(error).splitlines()[0]}") from None


def _bad_column(path: Path, columns: dict[str, str]) -> str | None:
    """Which integer column failed to parse and why (only called after a failed read, so speed is moot)."""
    raw = pd.read_csv(path, usecols=list(columns), dtype=str, keep_default_na=False)
    for name, dtype in columns.items():
        if dtype.startswith("int") or dtype.startswith("float"):
            parsed = pd.to_numeric(raw[name], errors="coerce")
            bad = parsed.isna() & ((raw[name] != "") | dtype.startswith("int"))
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                return f"column {name}: expected {'integers' if dtype.startswith('int') else 'numbers'}, " \
                       f"data row {row + 1} holds {raw[name].iloc[row]!r}"
    return None
