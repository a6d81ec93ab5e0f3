"""The dataset cache: a hit returns equal tensors without a rebuild; a changed source or a corrupt file rebuilds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mfh_cli.data.cache import cached_dataset
from mfh_cli.data.dataset import Dataset, Schema
from mfh_cli.errors import DataError


def small_dataset(seed: int) -> Dataset:
    """Six rows with random codes and labels, two masked labels."""
    generator = torch.Generator().manual_seed(seed)
    label_mask = torch.ones(6, 2, dtype=torch.bool)
    label_mask[[1, 4], 0] = False
    labels = torch.rand(6, 2, generator=generator) * label_mask
    schema = Schema(categorical={"user_id": 5, "tab": 3}, dense=["count"],
                    behaviours={"cmpl": "regression", "like": "binary"}, groups=["new", "low", "high"],
                    name="small", notes=["a note"])
    return Dataset(schema, categorical=torch.randint(0, 3, (6, 2), generator=generator),
                   dense=torch.randn(6, 1, generator=generator), labels=labels, label_mask=label_mask,
                   group=torch.tensor([0, 1, 2, 2, 1, 0]), split=torch.tensor([0, 0, 0, 1, 2, 2]),
                   user=torch.arange(6))


class Builder:
    """A build callable that counts its calls and returns a fresh dataset each time."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> Dataset:
        self.calls += 1
        return small_dataset(seed=self.calls)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "log.csv"
    path.write_text("user_id,date\n1,20220425\n")
    return path


def assert_same(first: Dataset, second: Dataset) -> None:
    assert first.schema == second.schema
    for name in Dataset.TENSORS:
        left, right = getattr(first, name), getattr(second, name)
        assert (left is None and right is None) or torch.equal(left, right), name


def test_hit_returns_equal_tensors_without_rebuilding(tmp_path: Path, source: Path):
    build = Builder()
    first = cached_dataset("small", {"rows": 6}, [source], tmp_path / "cache", build)
    second = cached_dataset("small", {"rows": 6}, [source], tmp_path / "cache", build)
    assert build.calls == 1
    assert_same(first, second)
    assert [path.name.startswith("small-") for path in (tmp_path / "cache").iterdir()] == [True]  # no temp left


def test_touched_or_changed_source_invalidates(tmp_path: Path, source: Path):
    build = Builder()
    cached_dataset("small", {}, [source], tmp_path, build)
    status = source.stat()
    os.utime(source, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))
    cached_dataset("small", {}, [source], tmp_path, build)
    assert build.calls == 2
    source.write_text("user_id,date\n1,20220425\n2,20220426\n")
    rebuilt = cached_dataset("small", {}, [source], tmp_path, build)
    assert build.calls == 3
    assert_same(rebuilt, small_dataset(seed=3))


def test_changed_key_is_a_different_entry(tmp_path: Path, source: Path):
    build = Builder()
    cached_dataset("small", {"rows": 6}, [source], tmp_path, build)
    cached_dataset("small", {"rows": 7}, [source], tmp_path, build)
    cached_dataset("small", {"rows": 6}, [source], tmp_path, build)
    assert build.calls == 2
    assert len(list(tmp_path.glob("small-*.pt"))) == 2


@pytest.mark.parametrize("damage", [b"", b"not a torch file", "truncate"])
def test_corrupt_cache_file_is_rebuilt(tmp_path: Path, source: Path, damage):
    build = Builder()
    cached_dataset("small", {}, [source], tmp_path, build)
    (cache_file,) = tmp_path.glob("small-*.pt")
    content = cache_file.read_bytes()
    cache_file.write_bytes(content[: len(content) // 2] if damage == "truncate" else damage)
    rebuilt = cached_dataset("small", {}, [source], tmp_path, build)
    assert build.calls == 2
    assert_same(rebuilt, small_dataset(seed=2))
    reread = cached_dataset("small", {}, [source], tmp_path, build)  # the rebuilt file is valid again
    assert build.calls == 2
    assert_same(reread, rebuilt)


def test_no_cache_dir_always_builds(source: Path):
    build = Builder()
    cached_dataset("small", {}, [source], None, build)
    cached_dataset("small", {}, [source], None, build)
    assert build.calls == 2


def test_missing_source_is_a_data_error(tmp_path: Path):
    with pytest.raises(DataError, match=r"gone\.csv: cannot read source file"):
        cached_dataset("small", {}, [tmp_path / "gone.csv"], tmp_path, Builder())
