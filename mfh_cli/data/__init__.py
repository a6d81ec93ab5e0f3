"""Data layer: the simulator, KuaiRand and your own log, all behind `load_dataset` → `Dataset`.

Names are imported lazily so that torch-free commands (`mfh data download`, `mfh data validate`) start fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from mfh_cli.data.dataset import Dataset

__all__ = ["SPLITS", "Dataset", "Schema", "load_dataset"]


def __getattr__(name: str) -> Any:
    if name in ("SPLITS", "Schema"):
        from mfh_cli.data import schema

        return getattr(schema, name)
    if name == "Dataset":
        from mfh_cli.data.dataset import Dataset

        return Dataset
    raise AttributeError(f"module 'mfh_cli.data' has no attribute '{name}'")


def load_dataset(cfg: DictConfig, data_dir: Path | None = None, cache_dir: Path | None = None,
                 quiet: bool = True) -> Dataset:
    """Build (or read from the cache) the dataset named by `cfg.data.name`.

    `data_dir` is the `--data-dir` option; `cache_dir` holds encoded tensors keyed by the data config and
    the source files' size and mtime (None: no cache).
    """
    from mfh_cli.config import data_dir as resolve_data_dir
    from mfh_cli.errors import ConfigError

    name = cfg.data.name
    directory = resolve_data_dir(data_dir, cfg.data.get("dir"))
    if name == "synthetic":
        from mfh_cli.data.synthetic import simulate

        dataset = simulate(cfg.data, quiet=quiet)
    elif name == "kuairand":
        from mfh_cli.data.kuairand import load_kuairand

        dataset = load_kuairand(cfg.data, directory, cache_dir=cache_dir, quiet=quiet)
    elif name == "table":
        from mfh_cli.data.table import load_table

        dataset = load_table(cfg.data, directory, cache_dir=cache_dir, quiet=quiet)
    else:
        raise ConfigError(f"unknown data.name '{name}': expected synthetic, kuairand or table")
    return dataset.without_inputs(list(cfg.data.get("hidden_inputs") or []))
