"""Shared encodings: train-only vocabularies, train-standardised dense columns, table lookups with a fill."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mfh_cli.data.encoding import encode, gather, standardise


def test_encode_numbers_train_values_in_sorted_order_and_maps_the_rest_to_zero():
    values = pd.Series(["b", "a", None, "c", "a", "d"])
    in_train = np.array([True, True, True, False, True, False])
    codes, size = encode(values, in_train)
    # Train holds a and b (the missing cell is no value): a -> 1, b -> 2; c and d are unseen, None is missing.
    assert codes.tolist() == [2, 1, 0, 0, 1, 0]
    assert size == 3 and codes.dtype == np.int64


def test_encode_numbers_numeric_values_by_value_not_by_first_appearance():
    codes, size = encode(np.array([30, 10, 20, 10]), np.ones(4, dtype=bool))
    assert codes.tolist() == [3, 1, 2, 1] and size == 4


def test_standardise_uses_train_rows_and_zeroes_missing_values():
    values = np.array([[1.0, 5.0, np.nan],
                       [3.0, 5.0, np.nan],
                       [np.nan, 5.0, 2.0],
                       [7.0, 9.0, 4.0]])
    in_train = np.array([True, True, True, False])
    standard = standardise(values, in_train)
    assert standard.dtype == np.float32 and standard.shape == (4, 3)
    # Column 0: train mean 2, deviation 1 (NaN left out); the test row 7 becomes 5.
    assert standard[:, 0].tolist() == [-1.0, 1.0, 0.0, 5.0]
    # Column 1: constant on train, so only centred; column 2: a single train value, so centred on it.
    assert standard[:, 1].tolist() == [0.0, 0.0, 0.0, 4.0]
    assert standard[:, 2].tolist() == [0.0, 0.0, 0.0, 2.0]


def test_standardise_a_column_without_train_values_is_zero():
    values = np.array([[np.nan], [np.nan], [3.0]])
    with np.errstate(all="raise"):
        assert standardise(values, np.array([True, True, False])).tolist() == [[0.0], [0.0], [0.0]]


def test_standardise_no_columns():
    assert standardise(np.zeros((3, 0)), np.ones(3, dtype=bool)).shape == (3, 0)


@pytest.mark.parametrize("missing", [0, np.nan])
def test_gather_fills_absent_ids(missing):
    per_table_row = np.array([10, 20, 30])
    looked_up = gather(per_table_row, np.array([2, -1, 0, 2]), missing=missing)
    assert looked_up[[0, 2, 3]].tolist() == [30, 10, 30]
    assert looked_up[1] == missing or (np.isnan(missing) and np.isnan(looked_up[1]))


def test_gather_rows_of_a_two_dimensional_table():
    per_table_row = np.array([[1.0, 2.0], [3.0, 4.0]])
    looked_up = gather(per_table_row, np.array([-1, 1]), missing=np.nan)
    assert np.isnan(looked_up[0]).all() and looked_up[1].tolist() == [3.0, 4.0]
