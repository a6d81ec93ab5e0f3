"""The KuaiRand files' layout and the derivations that need no torch (SPEC §5): where the logs are, each user's
group, each row's scenario (its tab) and each row's split by date.

Shared by the loader (`kuairand.py`) and `mfh data validate` (`validate.py`), which must not import torch.
Shape letters: N log rows, U user-table rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mfh_cli.data.encoding import gather
from mfh_cli.data.schema import SPLITS
from mfh_cli.tasks import HIGH_ACTIVITY, LOW_ACTIVITY, NEW_USERS, USER_GROUPS

LOG_PATTERN = "log_standard_*.csv"
USER_PATTERN = "user_features_*.csv"
VIDEO_PATTERN = "video_features_basic_*.csv"

# User groups (SPEC §5): new by activity degree or a registration of at most 30 days; high; the rest low.
NEW_DEGREES = ("day_new", "2_14_day_new", "30day_retention")
HIGH_DEGREES = ("full_active", "high_active")
NEW_REGISTER_DAYS = 30
# A log user missing from the user table: nothing says new or high.
ABSENT_USER_GROUP = USER_GROUPS.index(LOW_ACTIVITY)


# Scenarios (issue 14, [ours]): the surface of the app a row was shown on, the log's `tab`. Every tab with at least
# this share of the train rows is a scenario of its own (`tab1`, largest first); the rest are pooled into one
# (`tab_other`). On the slice: tab1, tab0, tab4 and tab6 (5.3% of the train rows, 4.9% of all) are scenarios; tab2
# (3%) and ten tabs under 1% each are pooled (data/README.md "Scenarios" has the row counts).
SCENARIO_MIN_SHARE = 0.05
OTHER_TABS = "tab_other"


def tab_scenarios(tab: np.ndarray, in_train: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Scenario names and [N] int64 index into them per log row, from each row's `tab` [N] and whether it is a
    train row [N]: the tabs with at least SCENARIO_MIN_SHARE of the train rows, largest first, then OTHER_TABS for
    every other tab (listed only when some row has one)."""
    values, counts = np.unique(tab[in_train], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    shares = counts[order] / max(int(in_train.sum()), 1)
    kept = [int(value) for value, share in zip(values[order], shares) if share >= SCENARIO_MIN_SHARE]
    index = np.full(len(tab), len(kept), dtype=np.int64)
    for position, value in enumerate(kept):
        index[tab == value] = position
    names = [f"tab{value}" for value in kept]
    return (names + [OTHER_TABS] if (index == len(kept)).any() else names), index


def log_folder(directory: Path, subdir: str) -> Path | None:
    """`directory` itself when it holds KuaiRand logs, else `directory/subdir` when that does, else None."""
    return next((folder for folder in (directory, directory / subdir) if any(folder.glob(LOG_PATTERN))), None)


def user_groups(users: pd.DataFrame) -> np.ndarray:
    """[U] index into USER_GROUPS per user-table row (columns user_active_degree, register_days): new, then high,
    else low (SPEC §5)."""
    degree = users["user_active_degree"]
    new = (degree.isin(NEW_DEGREES) | (users["register_days"] <= NEW_REGISTER_DAYS)).to_numpy()
    high = degree.isin(HIGH_DEGREES).to_numpy()
    return np.select([new, high], [USER_GROUPS.index(NEW_USERS), USER_GROUPS.index(HIGH_ACTIVITY)], ABSENT_USER_GROUP)


def log_row_groups(user_group: np.ndarray, user_row: np.ndarray) -> np.ndarray:
    """[N] index into USER_GROUPS per log row, from each user-table row's group [U] and each log row's position in the
    user table [N] (-1 for a user absent from it: ABSENT_USER_GROUP)."""
    return gather(user_group, user_row, missing=ABSENT_USER_GROUP)


def split_of(dates: np.ndarray, ranges: dict[str, tuple[int, int]]) -> np.ndarray:
    """[N] int64 index into SPLITS per row of `dates` [N] (YYYYMMDD) by `split_ranges`; -1 outside every range."""
    split = np.full(len(dates), -1, dtype=np.int64)
    for index, name in enumerate(SPLITS):
        first, last = ranges[name]
        split[(dates >= first) & (dates <= last)] = index
    return split
