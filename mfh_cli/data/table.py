"""Your own log as a `Dataset` (`data=table`, SPEC §5): a CSV or Parquet file plus a mapping of its columns.

The mapping (inline in conf/data/table.yaml, or a YAML file given as `data.mapping=FILE`; documented example:
docs/table_mapping_example.yaml) names the user, item and time columns, the user group (a column of group names,
or a rule mapping a column's values to groups with a default), the label column of each behaviour, extra
categorical and dense inputs, and the split (time boundaries, or fractions of the time-ordered rows). The log is
checked with the rules of `validate.py` first; its first error stops loading.

Shape letters: N rows, C categorical fields, D dense features, L behaviours (label columns).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mfh_cli.data.cache import cached_dataset
from mfh_cli.data.dataset import BEHAVIOURS, SPLITS, Dataset, Schema
from mfh_cli.data.describe import label_sparsity_notes
from mfh_cli.data.kuairand import encode
from mfh_cli.data.validate import ColumnRules, Problem, column_problems, empty_categories, read_log
from mfh_cli.errors import ConfigError, DataError

# Bump when the encoding changes, so caches written by an older loader are not reused.
ENCODING_VERSION = 1

KINDS = ("regression", "binary")
MAPPING_KEYS = ("path", "user", "item", "time", "group", "labels", "categorical", "dense", "split")
DATA_KEYS = ("name", "dir", "mapping", "sparse_positives")  # data-config keys that are not part of the mapping
GROUP_KEYS = ("column", "values", "default", "names")
LABEL_KEYS = ("column", "kind", "range", "allow_missing")
SPLIT_KEYS = ("by", "fractions", "boundaries")


@dataclass(frozen=True)
class Label:
    """One behaviour's label column and its kind; `range` (regression only) bounds its values."""

    behaviour: str
    column: str
    kind: str
    range: tuple[float, float] | None = None
    allow_missing: bool = False  # True: empty cells mask the label instead of being an error


@dataclass(frozen=True)
class GroupRule:
    """How a row's user group is read from `column`: its value is a group name (`values` None) or listed under a
    group in `values`; anything else goes to `default`."""

    column: str
    names: tuple[str, ...]
    default: str
    values: dict[str, tuple[str, ...]] | None = None  # group -> the column's values (as text) meaning it


@dataclass(frozen=True)
class SplitRule:
    """Train / validation / test by `boundaries` on the time column or by `fractions` of the time-ordered rows."""

    by: str  # "time" | "fraction"
    boundaries: tuple[float, float] | None = None  # validation start, test start
    fractions: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class TableMapping:
    """Which column of the log plays which part (parsed and checked from the mapping keys)."""

    path: str | None
    user: str
    item: str
    time: str
    group: GroupRule
    labels: tuple[Label, ...]
    categorical: tuple[str, ...]
    dense: tuple[str, ...]
    split: SplitRule

    def column_rules(self) -> ColumnRules:
        """The per-column checks of this log (validate.py): required, numeric, complete, binary, in range."""
        label_columns = [label.column for label in self.labels]
        return ColumnRules(
            required=_unique([self.user, self.item, self.time, self.group.column, *label_columns,
                              *self.categorical, *self.dense]),
            numeric=_unique([self.time, *label_columns, *self.dense]),
            complete=_unique([self.user, self.item, self.time,
                              *(label.column for label in self.labels if not label.allow_missing)]),
            binary=_unique([label.column for label in self.labels if label.kind == "binary"]),
            ranges={label.column: label.range for label in self.labels if label.range is not None},
            unique=(self.user, self.item, self.time),
        )


def load_table(data_cfg: DictConfig, directory: Path, cache_dir: Path | None, quiet: bool) -> Dataset:
    """Your own log from its mapping (inline or `data.mapping`), checked, encoded and cached."""
    mapping_file = data_cfg.get("mapping")
    mapping = read_mapping_file(Path(mapping_file)) if mapping_file else _MappingParser(
        "data config", key_prefix="data.", ignored=DATA_KEYS).mapping(OmegaConf.to_container(data_cfg, resolve=True))
    if mapping.path is None:
        raise ConfigError("data=table needs your log: set data.path=FILE (.csv or .parquet) or give a mapping "
                          "file with `path:` as data.mapping=FILE")
    path = Path(mapping.path) if Path(mapping.path).is_absolute() else Path(directory) / mapping.path
    if not path.is_file():
        raise DataError(f"{path}: no such file (the log's path is relative to the data dir unless absolute)")
    sparse_positives = int(data_cfg.get("sparse_positives", 50))
    key = {"encoding": ENCODING_VERSION, "mapping": asdict(mapping), "sparse_positives": sparse_positives}
    return cached_dataset("table", key, [path], cache_dir,
                          lambda: build_table(path, mapping, sparse_positives, quiet))


def read_mapping_file(path: Path) -> TableMapping:
    """A mapping YAML (the mapping keys of conf/data/table.yaml), parsed and checked."""
    try:
        values = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OSError, OmegaConfBaseException, ValueError) as error:
        raise ConfigError(f"{path}: cannot read the mapping ({str(error).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the mapping must be a YAML dictionary of {', '.join(MAPPING_KEYS)}")
    return _MappingParser(str(path)).mapping(values)


class _MappingParser:
    """Turns plain mapping values into a TableMapping; every bad value is a ConfigError naming source and key."""

    def __init__(self, source: str, key_prefix: str = "", ignored: tuple[str, ...] = ()) -> None:
        self.source, self.key_prefix, self.ignored = source, key_prefix, ignored

    def mapping(self, values: dict) -> TableMapping:
        self.known_keys(values, (*MAPPING_KEYS, *self.ignored), "")
        return TableMapping(
            path=None if values.get("path") is None else self.column(values["path"], "path"),
            user=self.column(values.get("user"), "user"),
            item=self.column(values.get("item"), "item"),
            time=self.column(values.get("time"), "time"),
            group=self.group(values.get("group")),
            labels=self.labels(values.get("labels")),
            categorical=self.columns(values.get("categorical"), "categorical"),
            dense=self.columns(values.get("dense"), "dense"),
            split=self.split(values.get("split")),
        )

    def fail(self, key: str, rule: str) -> ConfigError:
        return ConfigError(f"{self.source}: key {self.key_prefix}{key}: {rule}")

    def known_keys(self, values: dict, allowed: tuple[str, ...], prefix: str) -> None:
        """A typo in a key fails loudly instead of being ignored."""
        unknown = [key for key in values if key not in allowed]
        if unknown:
            raise self.fail(f"{prefix}{unknown[0]}", f"unknown key (expected one of {', '.join(allowed)})")

    def column(self, value: object, key: str) -> str:
        if not isinstance(value, (str, int)) or isinstance(value, bool) or value == "":
            raise self.fail(key, f"expected a column name, got {value!r}")
        return str(value)

    def columns(self, value: object, key: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list of names, got {value!r}")
        return tuple(self.column(item, f"{key}[{index}]") for index, item in enumerate(value))

    def numbers(self, value: object, count: int) -> bool:
        """`value` is a list of `count` numbers in non-decreasing order."""
        return isinstance(value, list) and len(value) == count and all(
            isinstance(number, (int, float)) and not isinstance(number, bool) for number in value) and \
            all(first <= second for first, second in zip(value, value[1:]))

    def group(self, group: object) -> GroupRule:
        if not isinstance(group, dict):
            raise self.fail("group", "expected {column, names, default, values}")
        self.known_keys(group, GROUP_KEYS, "group.")
        names = self.columns(group.get("names"), "group.names")
        if not names or len(set(names)) != len(names):
            raise self.fail("group.names", "expected a non-empty list of distinct group names")
        if group.get("default") not in names:
            raise self.fail("group.default", f"must be one of the group names {list(names)}, got "
                                             f"{group.get('default')!r}")
        values = group.get("values")
        if values is not None:
            if not isinstance(values, dict) or not set(values) <= set(names):
                raise self.fail("group.values", f"expected group -> list of the column's values, groups among "
                                                f"{list(names)}")
            values = {name: tuple(str(item) for item in (listed if isinstance(listed, list) else [listed]))
                      for name, listed in values.items()}
        return GroupRule(column=self.column(group.get("column"), "group.column"), names=names,
                         default=group["default"], values=values)

    def labels(self, labels: object) -> tuple[Label, ...]:
        if not isinstance(labels, dict) or not labels:
            raise self.fail("labels", "expected behaviour -> its label column (or {column, kind, range}), at "
                                      "least one")
        return tuple(self.label(str(behaviour), spec) for behaviour, spec in labels.items())

    def label(self, behaviour: str, spec: object) -> Label:
        key = f"labels.{behaviour}"
        spec = {"column": spec} if isinstance(spec, (str, int)) else ({} if spec is None else spec)
        if not isinstance(spec, dict):
            raise self.fail(key, f"expected a column name or {{{', '.join(LABEL_KEYS)}}}")
        self.known_keys(spec, LABEL_KEYS, f"{key}.")
        kind = spec.get("kind") or BEHAVIOURS.get(behaviour)
        if kind not in KINDS:
            raise self.fail(f"{key}.kind", f"a new behaviour needs kind: regression or binary (known: "
                                           f"{', '.join(BEHAVIOURS)}), got {kind!r}")
        if behaviour in BEHAVIOURS and kind != BEHAVIOURS[behaviour]:
            raise self.fail(f"{key}.kind", f"{behaviour} is a {BEHAVIOURS[behaviour]} behaviour, not {kind}")
        bounds = spec.get("range")
        if bounds is not None and (kind != "regression" or not self.numbers(bounds, 2)):
            raise self.fail(f"{key}.range", f"expected [lowest, highest] on a regression label, got {bounds!r}")
        return Label(behaviour=behaviour, column=self.column(spec.get("column", behaviour), f"{key}.column"),
                     kind=kind, range=None if bounds is None else (float(bounds[0]), float(bounds[1])),
                     allow_missing=bool(spec.get("allow_missing", False)))

    def split(self, split: object) -> SplitRule:
        if not isinstance(split, dict) or split.get("by") not in ("time", "fraction"):
            raise self.fail("split.by", "expected time (with boundaries) or fraction (with fractions)")
        self.known_keys(split, SPLIT_KEYS, "split.")
        if split["by"] == "time":
            bounds = split.get("boundaries")
            if not self.numbers(bounds, 2):
                raise self.fail("split.boundaries", f"expected [validation_start, test_start] times, got {bounds!r}")
            return SplitRule(by="time", boundaries=(float(bounds[0]), float(bounds[1])))
        fractions = split.get("fractions")
        if not (isinstance(fractions, list) and len(fractions) == 3 and all(
                isinstance(share, (int, float)) and share > 0 for share in fractions)
                and abs(sum(fractions) - 1) < 1e-6):
            raise self.fail("split.fractions", f"expected [train, validation, test] shares, positive, summing to "
                                               f"1, got {fractions!r}")
        return SplitRule(by="fraction", fractions=tuple(float(share) for share in fractions))


def assign_groups(column: pd.Series, rule: GroupRule) -> np.ndarray:
    """[N] int64 index into `rule.names` per row; values neither a group name nor listed go to the default.

    Values are compared as text, so `values: {new: [1]}` matches a column holding the integer 1."""
    if rule.values is None:
        lookup = {name: index for index, name in enumerate(rule.names)}
    else:
        lookup = {value: rule.names.index(name) for name, listed in rule.values.items() for value in listed}
    values = column.to_numpy()
    if pd.api.types.is_float_dtype(column) and np.all(np.isnan(values) | (values == np.round(values))):
        column = column.astype("Int64")  # integers read as floats (a CSV column with gaps): 1.0 reads as "1"
    mapped = column.astype(str).map(lookup)
    return mapped.fillna(rule.names.index(rule.default)).to_numpy(dtype=np.int64, copy=True)


def assign_splits(time: np.ndarray, rule: SplitRule) -> np.ndarray:
    """[N] int64 index into SPLITS per row, from the time column [N] (SPEC-free: the user's rule)."""
    if rule.by == "time":
        validation_start, test_start = rule.boundaries
        return (time >= validation_start).astype(np.int64) + (time >= test_start).astype(np.int64)
    # By fraction: the first rows in time order (ties keep file order) are train, then validation, then test.
    rank = np.empty(len(time), dtype=np.int64)
    rank[np.argsort(time, kind="stable")] = np.arange(len(time))
    cuts = np.round(np.cumsum(rule.fractions[:2]) * len(time)).astype(np.int64)
    return np.searchsorted(cuts, rank, side="right").astype(np.int64)


def table_problems(frame: pd.DataFrame, mapping: TableMapping, file: str) -> list[Problem]:
    """Every problem of your own log under its mapping: the per-column rules, then empty groups and splits."""
    problems, numeric = column_problems(frame, file, mapping.column_rules())
    if numeric is None:
        return problems
    groups = assign_groups(frame[mapping.group.column], mapping.group)
    problems += empty_categories(groups, mapping.group.names, "user group", file, mapping.group.column)
    splits = assign_splits(numeric[mapping.time], mapping.split)
    problems += empty_categories(splits, SPLITS, "split", file, mapping.time, details=_split_details(mapping.split))
    return problems


def _split_details(rule: SplitRule) -> list[str]:
    """Each split's definition, quoted when it is empty."""
    if rule.by == "fraction":
        return [f"fraction {share:g} of the rows" for share in rule.fractions]
    validation_start, test_start = rule.boundaries
    return [f"time < {validation_start:g}", f"{validation_start:g} <= time < {test_start:g}",
            f"time >= {test_start:g}"]


def build_table(path: Path, mapping: TableMapping, sparse_positives: int = 50, quiet: bool = True) -> Dataset:
    """Read and check the log (the first error raises DataError), then encode it; no cache."""
    frame, unreadable = read_log(path)
    if unreadable is not None:
        raise DataError(unreadable.message)
    problems = table_problems(frame, mapping, path.name)
    errors = [problem for problem in problems if problem.level == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more: `mfh data validate` lists them)" if len(errors) > 1 else ""
        raise DataError(errors[0].message + more)
    if not quiet:
        for problem in problems:
            print(problem, file=sys.stderr)
    dataset = encode_table(frame, mapping)
    dataset.schema = replace(dataset.schema, notes=label_sparsity_notes(dataset, sparse_positives))
    return dataset


def encode_table(frame: pd.DataFrame, mapping: TableMapping) -> Dataset:
    """The checked log as tensors: ids and categoricals on train-only vocabularies (0 = unseen or missing), dense
    inputs standardised on the train rows (0 where missing), labels masked where empty."""
    split = assign_splits(pd.to_numeric(frame[mapping.time]).to_numpy(dtype=np.float64), mapping.split)
    in_train = split == SPLITS.index("train")
    fields = _unique([mapping.user, mapping.item, *mapping.categorical])
    codes, vocabulary = [], {}
    for name in fields:
        column_codes, vocabulary[name] = encode(frame[name], in_train)
        codes.append(column_codes)
    categorical = np.stack(codes, axis=1)  # [N, C]

    dense = frame[list(mapping.dense)].apply(pd.to_numeric).astype(np.float64)  # [N, D]
    mean, deviation = dense[in_train].mean(), dense[in_train].std(ddof=0)
    standard = (dense - mean.fillna(0.0)) / deviation.where(deviation > 0, 1.0).fillna(1.0)
    dense_values = standard.fillna(0.0).to_numpy(dtype=np.float32, copy=True).reshape(len(frame), len(mapping.dense))

    raw_labels = np.stack([pd.to_numeric(frame[label.column]).to_numpy(dtype=np.float64, na_value=np.nan)
                           for label in mapping.labels], axis=1)  # [N, L]
    label_mask = ~np.isnan(raw_labels)
    schema = Schema(categorical=vocabulary, dense=list(mapping.dense),
                    behaviours={label.behaviour: label.kind for label in mapping.labels},
                    groups=list(mapping.group.names), name="table")
    dataset = Dataset(schema, categorical=torch.from_numpy(categorical),
                      dense=torch.from_numpy(dense_values),
                      labels=torch.from_numpy(np.where(label_mask, raw_labels, 0.0).astype(np.float32)),
                      label_mask=torch.from_numpy(label_mask),
                      group=torch.from_numpy(assign_groups(frame[mapping.group.column], mapping.group)),
                      split=torch.from_numpy(split),
                      user=torch.from_numpy(pd.factorize(frame[mapping.user])[0].astype(np.int64)))
    dataset.check()
    return dataset


def _unique(columns: list[str]) -> tuple[str, ...]:
    """The columns in order, each once."""
    return tuple(dict.fromkeys(columns))
