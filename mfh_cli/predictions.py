"""A run's test predictions, kept for the noise budget (report/noise.py, docs/statistics.md "Noise budget").

Each run directory holds `predictions.npz`: its raw test outputs [N, T] (logits for binary behaviours, the
regression output otherwise) as float16, compressed, and the digest of the test rows they belong to. The rows
themselves (labels, label mask, cell and user per row, the behaviour and cell names) are stored once per set of
test rows, in `<results>/test_rows/<digest>.npz`: every run on the same data and task grid shares them. A run made
before this file existed has none, and the report leaves it out of the noise budget without retraining it.

float16 keeps a run's file small (1.5 MB for the simulator's 252,000 test rows × 3 behaviours, 0.2 MB on KuaiRand);
its 11-bit mantissa moves a logit by at most 0.05% of its value, below anything the variance estimates resolve.
Torch-free (numpy only), so that the engine writes and the report reads the same format.
Shape letters: N test rows, T behaviours of the task grid.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfh_cli.files import write_atomically

PREDICTIONS_FILE = "predictions.npz"
TEST_ROWS = "test_rows"  # <results>/test_rows/<digest>.npz
FLOAT16_LIMIT = 60_000.0  # outputs are clipped to this before float16 (its largest finite value is 65,504)


@dataclass(frozen=True)
class TestRows:
    """The test rows a run's predictions belong to: labels [N, T] float32, mask [N, T] bool (label exists), cell [N]
    (index into `cells`), user [N] int64; `behaviours` [T] and `cells` name the columns and cells."""

    labels: np.ndarray
    mask: np.ndarray
    cell: np.ndarray
    user: np.ndarray
    behaviours: tuple[str, ...]
    cells: tuple[str, ...]

    def digest(self) -> str:
        """A short hash of every array and name: equal digests, equal rows."""
        hashed = hashlib.sha256()
        for array in (self.labels.astype(np.float32), self.mask.astype(bool), self.cell.astype(np.int64),
                      self.user.astype(np.int64)):
            hashed.update(np.ascontiguousarray(array).tobytes())
            hashed.update(str(array.shape).encode())
        hashed.update("|".join(self.behaviours).encode() + b"/" + "|".join(self.cells).encode())
        return hashed.hexdigest()[:16]


@dataclass(frozen=True)
class RunPredictions:
    """One run's test outputs [N, T] (float32 once read) and the digest of its TestRows."""

    outputs: np.ndarray
    test_rows: str


def write_predictions(run_dir: Path, outputs: np.ndarray, rows: TestRows, results_dir: Path) -> None:
    """`run_dir/predictions.npz` and, unless already there, `results_dir/test_rows/<digest>.npz` (atomically: a
    reader never sees half of it; concurrent runs write identical bytes)."""
    digest = rows.digest()
    shared = Path(results_dir) / TEST_ROWS / f"{digest}.npz"
    if not shared.is_file():
        write_atomically(shared, lambda temporary: _save(temporary, labels=rows.labels.astype(np.float32),
                                                         mask=rows.mask.astype(bool), cell=rows.cell.astype(np.int32),
                                                         user=rows.user.astype(np.int64),
                                                         behaviours=np.array(rows.behaviours),
                                                         cells=np.array(rows.cells)))
    clipped = np.clip(np.nan_to_num(outputs.astype(np.float32)), -FLOAT16_LIMIT, FLOAT16_LIMIT)
    _save(Path(run_dir) / PREDICTIONS_FILE, outputs=clipped.astype(np.float16), test_rows=np.array(digest))


def read_predictions(run_dir: Path) -> RunPredictions | None:
    """A run's predictions, or None where the run has none (made before they were kept) or they do not read."""
    try:
        with np.load(Path(run_dir) / PREDICTIONS_FILE) as stored:
            return RunPredictions(stored["outputs"].astype(np.float32), str(stored["test_rows"]))
    except (OSError, ValueError, KeyError):
        return None


def read_test_rows(results_dir: Path, digest: str) -> TestRows | None:
    """The test rows of `digest`, or None where the file is missing or does not read."""
    try:
        with np.load(Path(results_dir) / TEST_ROWS / f"{digest}.npz") as stored:
            return TestRows(stored["labels"], stored["mask"], stored["cell"], stored["user"],
                            tuple(str(name) for name in stored["behaviours"]),
                            tuple(str(name) for name in stored["cells"]))
    except (OSError, ValueError, KeyError):
        return None


def _save(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a file object: numpy would append .npz to a temporary's name
        np.savez_compressed(handle, **arrays)
