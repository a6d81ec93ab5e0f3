"""Input encodings shared by the loaders: train-only vocabularies, train-standardised dense columns, and the
lookup of a joined table's values per log row.

Torch-free (NumPy and pandas): the loaders turn the arrays into tensors. Shape letters: N rows, D dense columns,
U rows of a joined table (users or items).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def encode(values: pd.Series | np.ndarray, in_train: np.ndarray) -> tuple[np.ndarray, int]:
    """Codes [len(values)] int64: 1..K for the K distinct values seen where `in_train` (in sorted order), 0 for
    values never seen there or missing; and the vocabulary size K + 1."""
    codes, uniques = pd.factorize(values, sort=True)  # -1 for missing
    seen = np.zeros(len(uniques) + 1, dtype=bool)  # the last slot stands for "missing" (code -1) and stays False
    seen[codes[in_train]] = True
    seen[-1] = False
    remap = np.where(seen, np.cumsum(seen), 0)
    return remap[codes].astype(np.int64), int(seen.sum()) + 1


def standardise(values: np.ndarray, in_train: np.ndarray) -> np.ndarray:
    """[N, D] float32: each column of `values` [N, D] minus its mean, over its deviation, both taken on the train
    rows with NaN left out; 0 where a value is missing. A constant column is only centred; one with no train
    value is 0 throughout."""
    train = pd.DataFrame(values[in_train])  # pandas: an all-NaN column gives a NaN mean without a warning
    mean, deviation = train.mean().to_numpy(), train.std(ddof=0).to_numpy()
    standard = (values - mean) / np.where(deviation > 0, deviation, 1.0)
    return np.where(np.isnan(standard), 0.0, standard).astype(np.float32)


def gather(per_table_row: np.ndarray, table_row: np.ndarray, missing: float | int) -> np.ndarray:
    """`per_table_row[table_row]` ([U, ...] values, [N] positions), with `missing` where `table_row` is -1 (an id
    absent from the table)."""
    padded = np.concatenate([per_table_row, np.full((1, *per_table_row.shape[1:]), missing,
                                                    dtype=np.result_type(per_table_row, type(missing)))])
    return padded[table_row]
