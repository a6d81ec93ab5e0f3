"""`describe_frame` on a hand-built dataset, sparsity notes, and `mfh data describe kuairand` on the real slice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mfh_cli.data.dataset import Dataset, Schema
from mfh_cli.data.describe import describe_frame, label_sparsity_notes


@pytest.fixture
def hand() -> Dataset:
    """Seven rows over three groups; cmpl masked on row 4. Expected figures below are worked out by hand."""
    cmpl = [0.2, 0.4, 1.0, 0.5, 0.0, 0.0, 0.9]
    like = [1, 0, 0, 1, 1, 0, 0]
    label_mask = torch.ones(7, 2, dtype=torch.bool)
    label_mask[4, 0] = False
    schema = Schema(categorical={"user_id": 6}, dense=[], behaviours={"cmpl": "regression", "like": "binary"},
                    groups=["new", "low", "high"])
    return Dataset(schema, categorical=torch.zeros(7, 1, dtype=torch.int64), dense=torch.zeros(7, 0),
                   labels=torch.tensor([cmpl, like], dtype=torch.float32).T.contiguous(), label_mask=label_mask,
                   group=torch.tensor([0, 0, 1, 2, 2, 2, 2]), split=torch.tensor([0, 2, 0, 0, 1, 2, 2]),
                   user=torch.tensor([1, 1, 2, 3, 3, 4, 5]))


def test_describe_frame_counts_rates_and_masks(hand: Dataset):
    frame = describe_frame(hand).set_index("group")
    assert list(frame.index) == ["new", "low", "high", "all"]
    assert list(frame.columns) == ["rows_train", "rows_validation", "rows_test", "rows", "users_with_rows", "cmpl_mean",
                                   "like_rate", "cmpl_masked"]  # like has no masked row: no like_masked column
    assert frame["rows_train"].tolist() == [1, 1, 1, 3]
    assert frame["rows_validation"].tolist() == [0, 0, 1, 1]
    assert frame["rows_test"].tolist() == [1, 0, 2, 3]
    assert frame["rows"].tolist() == [2, 1, 4, 7]
    assert frame["users_with_rows"].tolist() == [1, 1, 3, 5]
    assert frame["cmpl_mean"].tolist() == pytest.approx([0.3, 1.0, 1.4 / 3, 3.0 / 6])  # masked row left out
    assert frame["like_rate"].tolist() == pytest.approx([0.5, 0.0, 0.5, 3 / 7])
    assert frame["cmpl_masked"].tolist() == [0, 0, 1, 1]


def test_sparsity_notes_name_the_sparse_groups_of_binary_behaviours(hand: Dataset):
    (note,) = label_sparsity_notes(hand, threshold=2)  # cmpl is a regression: never noted
    assert note.startswith("like has 3 positives in all")
    assert "1 among new users (0 in test)" in note and "0 among low users (0 in test)" in note
    assert "high" not in note  # two positives: not below the threshold
    assert label_sparsity_notes(hand, threshold=0) == []


@pytest.mark.slow
def test_cli_describe_kuairand_json_shows_slice_counts(run_mfh, kuairand_dir: Path, tmp_path: Path):
    """The slice without its duplicate impressions (the default), then with them kept: SPEC §5's raw counts."""
    result = run_mfh("data", "describe", "kuairand", "--data-dir", str(kuairand_dir), "--format", "json",
                     check=True)
    rows = {record["group"]: record for record in json.loads(result.stdout)}
    assert [rows[group]["rows"] for group in ("new", "low", "high", "all")] == [8_555, 25_018, 188_871, 222_444]
    assert rows["new"]["users_with_rows"] == 765
    assert [rows["all"][f"rows_{split}"] for split in ("train", "validation", "test")] == [166_932, 26_651, 28_861]
    assert rows["all"]["cmpl_masked"] == 3_568
    assert ("note: 5,885 duplicate impressions (rows repeating an earlier row's user_id, video_id, time_ms, 2.6% of "
            "the log's rows) dropped, the first of each kept (data.duplicates=drop)") in result.stderr
    assert "note: share has 194 positives in all, 8 among new users" in result.stderr
    assert list((tmp_path / "results" / "cache").glob("kuairand-*.pt"))  # the run left its cache behind
    # The user table lists more users than have rows in the slice: both counts say which they are.
    assert "by 25,156 users; the user table user_features_pure.csv lists 27,285 users" in result.stderr
    table = run_mfh("data", "describe", "kuairand", "data.duplicates=keep", "--data-dir", str(kuairand_dir),
                    check=True)
    assert "kuairand: 228,329 rows by 25,156 users (users with rows)" in table.stdout
    assert "users_with_rows" in table.stdout and "27,285" not in table.stdout
    assert "note: 5,885 duplicate impressions" in table.stdout and "kept, so each weighs double" in table.stdout


def test_describe_frame_adds_a_row_per_scenario_between_the_groups_and_all(hand: Dataset):
    from dataclasses import replace

    scenarios = replace(hand, schema=replace(hand.schema, scenarios=["tab1", "tab_other"]),
                        scenario=torch.tensor([0, 1, 0, 0, 1, 1, 0]))
    frame = describe_frame(scenarios).set_index("group")
    assert list(frame.index) == ["new", "low", "high", "tab1", "tab_other", "all"]
    assert frame.loc[["tab1", "tab_other"], "rows"].tolist() == [4, 3]
    assert frame.loc[["tab1", "tab_other"], "rows_test"].tolist() == [1, 2]
    assert frame.loc[["tab1", "tab_other"], "users_with_rows"].tolist() == [4, 3]
    assert frame.loc[["tab1", "tab_other"], "cmpl_mean"].tolist() == pytest.approx([2.6 / 4, 0.4 / 2])
    assert frame.loc[["tab1", "tab_other"], "like_rate"].tolist() == pytest.approx([2 / 4, 1 / 3])
    assert frame.loc[["tab1", "tab_other"], "cmpl_masked"].tolist() == [0, 1]
