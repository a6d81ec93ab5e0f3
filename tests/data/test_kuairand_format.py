"""KuaiRand's torch-free rules (SPEC §5): log folder lookup, user groups, date ranges and the split per row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from mfh_cli.config_schema import split_ranges
from mfh_cli.data.kuairand_format import log_folder, log_row_groups, split_of, user_groups
from mfh_cli.data.schema import SPLITS
from mfh_cli.errors import ConfigError
from mfh_cli.tasks import USER_GROUPS

SPLIT = {"train": [20220425, 20220504], "validation": [20220505, 20220506], "test": [20220507, 20220508]}


def test_log_folder_is_the_directory_or_its_subdir(tmp_path):
    assert log_folder(tmp_path, "kuairand-pure") is None
    (tmp_path / "kuairand-pure").mkdir()
    (tmp_path / "kuairand-pure" / "log_standard_x.csv").write_text("user_id\n")
    assert log_folder(tmp_path, "kuairand-pure") == tmp_path / "kuairand-pure"
    (tmp_path / "log_standard_y.csv").write_text("user_id\n")
    assert log_folder(tmp_path, "kuairand-pure") == tmp_path


def test_user_groups_by_degree_and_registration_days():
    users = pd.DataFrame({
        "user_active_degree": ["30day_retention", "middle_active", "middle_active", "high_active", "full_active",
                               "UNKNOWN"],
        "register_days": [400, 30, 31, 400, 12, np.nan]})
    # 30 days or fewer is new whatever the degree; a missing registration is not new.
    expected = ["new", "new", "low", "high", "new", "low"]
    assert [USER_GROUPS[index] for index in user_groups(users)] == expected


def test_log_rows_of_users_absent_from_the_table_are_low():
    user_group = np.array([USER_GROUPS.index("high"), USER_GROUPS.index("new")])
    groups = log_row_groups(user_group, np.array([1, -1, 0, 1]))
    assert [USER_GROUPS[index] for index in groups] == ["new", "low", "high", "new"]
    assert groups.dtype == np.int64


def test_split_of_dates_inclusive_ranges_and_outside():
    ranges = split_ranges(OmegaConf.create({"split": SPLIT}))
    dates = np.array([20220424, 20220425, 20220504, 20220505, 20220506, 20220507, 20220508, 20220509])
    assert split_of(dates, ranges).tolist() == [-1, 0, 0, 1, 1, 2, 2, -1]
    assert list(ranges) == list(SPLITS)


@pytest.mark.parametrize("split, message", [
    ({**SPLIT, "test": [20220506, 20220508]}, "validation and test date ranges overlap"),
    ({**SPLIT, "train": [20220504, 20220425]}, "data.split.train: expected"),
    ({"train": SPLIT["train"], "test": SPLIT["test"]}, "data.split.validation: expected"),
])
def test_bad_split_ranges_are_config_errors(split, message):
    with pytest.raises(ConfigError, match=message):
        split_ranges(OmegaConf.create({"split": split}))


def test_tab_scenarios_keep_the_large_train_tabs_largest_first_and_pool_the_rest():
    from mfh_cli.data.kuairand_format import OTHER_TABS, tab_scenarios

    train_tabs = [1] * 80 + [4] * 6 + [0] * 10 + [2] * 4  # shares 80%, 6%, 10%, 4%
    tab = np.array(train_tabs + [4, 2, 9])  # a test row of a tab never seen in train is pooled too
    in_train = np.arange(len(tab)) < len(train_tabs)
    names, index = tab_scenarios(tab, in_train)
    assert names == ["tab1", "tab0", "tab4", OTHER_TABS]
    assert index[[0, 80, 86, 96, 100, 101, 102]].tolist() == [0, 2, 1, 3, 2, 3, 3]
    assert tab_scenarios(np.array([1, 1, 0]), np.ones(3, dtype=bool))[0] == ["tab1", "tab0"]  # nothing pooled
