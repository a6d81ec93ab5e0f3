"""Your own log as a `Dataset` (`data=table`, SPEC §5): a CSV or Parquet file plus a mapping of its columns.

The mapping (inline in conf/data/table.yaml, or a YAML file given as `data.mapping=FILE`; documented example:
docs/table_mapping_example.yaml) names the user, item and time columns, the user group (a column of group names,
or a rule mapping a column's values to groups with a default), the label column of each behaviour, extra
categorical and dense inputs, and the split (time boundaries, or fractions of the time-ordered rows). It is
parsed, and the log checked, by `validate.py` (torch-free, shared with `mfh data validate`); the first error
stops loading.

Shape letters: N rows, C categorical fields, D dense features, L behaviours (label columns).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from mfh_cli.data.cache import cached_dataset
from mfh_cli.data.dataset import Dataset
from mfh_cli.data.describe import label_sparsity_notes
from mfh_cli.data.encoding import encode, standardise
from mfh_cli.data.schema import SPLITS, Schema
from mfh_cli.data.validate import (RULES_VERSION, TableMapping, apply_duplicate_policy, assign_groups, assign_splits,
                                   duplicate_policy, parse_mapping, read_log, read_mapping_file, stop_on_errors,
                                   table_problems)
from mfh_cli.errors import ConfigError, DataError

# Bump when the encoding changes, so caches written by an older loader are not reused.
ENCODING_VERSION = 2
# data-config keys that are not part of the mapping
DATA_KEYS = ("name", "dir", "mapping", "sparse_positives", "hidden_inputs", "duplicates")


def load_table(data_cfg: DictConfig, directory: Path, cache_dir: Path | None, quiet: bool) -> Dataset:
    """Your own log from its mapping (inline or `data.mapping`), checked, encoded and cached."""
    mapping_file = data_cfg.get("mapping")
    mapping = read_mapping_file(Path(mapping_file)) if mapping_file else parse_mapping(
        OmegaConf.to_container(data_cfg, resolve=True), "data config", key_prefix="data.", ignored=DATA_KEYS)
    if mapping.path is None:
        raise ConfigError("data=table needs your log: set data.path=FILE (.csv or .parquet) or give a mapping "
                          "file with `path:` as data.mapping=FILE")
    path = Path(mapping.path) if Path(mapping.path).is_absolute() else Path(directory) / mapping.path
    if not path.is_file():
        raise DataError(f"{path}: no such file (the log's path is relative to the data dir unless absolute)")
    sparse_positives, duplicates = int(data_cfg.sparse_positives), duplicate_policy(data_cfg)
    key = {"encoding": ENCODING_VERSION, "rules": RULES_VERSION, "mapping": asdict(mapping),
           "sparse_positives": sparse_positives, "duplicates": duplicates}
    return cached_dataset("table", key, [path], cache_dir,
                          lambda: build_table(path, mapping, sparse_positives, duplicates, quiet))


def build_table(path: Path, mapping: TableMapping, sparse_positives: int, duplicates: str,
                quiet: bool) -> Dataset:
    """Read and check the log as `mfh data validate` does (the first error raises DataError), apply the duplicate
    impressions policy `duplicates`, then encode it; no cache (so nothing is cached from a log that fails the
    checks)."""
    frame, unreadable = read_log(path)
    stop_on_errors([unreadable] if unreadable else table_problems(frame, mapping, path.name, duplicates), quiet)
    frame, duplicate_notes = apply_duplicate_policy(frame, mapping.column_rules().unique, duplicates)
    dataset = encode_table(frame, mapping)
    dataset.schema = replace(dataset.schema, notes=duplicate_notes + label_sparsity_notes(dataset, sparse_positives))
    return dataset


def encode_table(frame: pd.DataFrame, mapping: TableMapping) -> Dataset:
    """The checked log as tensors: ids and categoricals on train-only vocabularies (0 = unseen or missing), dense
    inputs standardised on the train rows (0 where missing), labels masked where empty."""
    split = assign_splits(pd.to_numeric(frame[mapping.time]).to_numpy(dtype=np.float64), mapping.split)
    in_train = split == SPLITS.index("train")
    codes, vocabulary = [], {}
    for name in mapping.categorical_fields():
        column_codes, vocabulary[name] = encode(frame[name], in_train)
        codes.append(column_codes)
    categorical = np.stack(codes, axis=1)  # [N, C]

    dense = frame[list(mapping.dense)].apply(pd.to_numeric).to_numpy(dtype=np.float64, na_value=np.nan)  # [N, D]

    raw_labels = np.stack([pd.to_numeric(frame[label.column]).to_numpy(dtype=np.float64, na_value=np.nan)
                           for label in mapping.labels], axis=1)  # [N, L]
    label_mask = ~np.isnan(raw_labels)
    schema = Schema(categorical=vocabulary, dense=list(mapping.dense),
                    behaviours={label.behaviour: label.kind for label in mapping.labels},
                    groups=list(mapping.group.names), name="table")
    dataset = Dataset.from_numpy(schema, categorical=categorical, dense=standardise(dense, in_train),
                                 labels=np.where(label_mask, raw_labels, 0.0).astype(np.float32),
                                 label_mask=label_mask,
                                 group=assign_groups(frame[mapping.group.column], mapping.group), split=split,
                                 user=pd.factorize(frame[mapping.user])[0].astype(np.int64))
    dataset.check()
    return dataset
