"""An on-disk cache of encoded datasets, keyed by the loader's config and its source files' size and mtime.

One file per (kind, key): `<cache_dir>/<kind>-<digest>.pt`, holding `Dataset.state()` saved by `torch.save`.
A changed source file changes the digest; an unreadable cache file is rebuilt, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from mfh_cli.data.dataset import Dataset
from mfh_cli.errors import DataError
from mfh_cli.files import write_atomically


def cache_digest(kind: str, key: dict, sources: list[Path]) -> str:
    """A short hash of the loader kind, its key and every source file's resolved path, size and mtime."""
    stamps = []
    for source in sources:
        try:
            status = Path(source).stat()
        except OSError as error:
            raise DataError(f"{source}: cannot read source file ({error.strerror})") from None
        stamps.append([str(Path(source).resolve()), status.st_size, status.st_mtime_ns])
    text = json.dumps({"kind": kind, "key": key, "sources": stamps}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_dataset(kind: str, key: dict, sources: list[Path], cache_dir: Path | None,
                   build: Callable[[], Dataset]) -> Dataset:
    """The dataset from `cache_dir` when its key and sources are unchanged, else `build()` (then stored).

    `cache_dir=None` always builds. A cache that cannot be written (read-only disk) only warns.
    """
    if cache_dir is None:
        return build()
    path = Path(cache_dir) / f"{kind}-{cache_digest(kind, key, sources)}.pt"
    if path.is_file():
        try:
            return _read(path)
        # A truncated, corrupt or incompatible file can fail in many ways (zip, unpickling, missing keys,
        # shape checks); each means the same thing here: rebuild it.
        except Exception:  # noqa: BLE001
            pass
    dataset = build()
    _write(dataset, path)
    return dataset


def _read(path: Path) -> Dataset:
    # mmap: tensors are paged in from the file on first use instead of copied up front.
    state = torch.load(path, weights_only=True, mmap=True)
    dataset = Dataset.from_state(state)
    dataset.check()
    return dataset


def _write(dataset: Dataset, path: Path) -> None:
    """Save to a temporary file next to `path`, then rename it: readers never see half a file."""
    try:
        write_atomically(path, lambda temporary: torch.save(dataset.state(), temporary))
    except OSError as error:
        warnings.warn(f"dataset cache not written to {path}: {error}", stacklevel=3)
