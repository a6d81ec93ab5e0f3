"""The one dataset interface every later piece uses: encoded tensors, masked labels, groups, splits, schema.

`SPLITS` and `Schema` live in the torch-free `schema.py` and are re-exported here.

Shape letters: N rows, C categorical fields, D dense features, L behaviours (label columns).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mfh_cli.data.schema import SPLITS, Schema

__all__ = ["SPLITS", "Dataset", "Schema"]


@dataclass
class Dataset:
    """Encoded rows of one dataset, all splits together; `select` slices one split."""

    schema: Schema
    categorical: torch.Tensor  # [N, C] int64
    dense: torch.Tensor  # [N, D] float32
    labels: torch.Tensor  # [N, L] float32, 0 where masked (never NaN)
    label_mask: torch.Tensor  # [N, L] bool, True where the label exists
    group: torch.Tensor  # [N] int64, index into schema.groups
    split: torch.Tensor  # [N] int64, index into SPLITS
    user: torch.Tensor  # [N] int64 user id (for user counts per group)
    oracle: torch.Tensor | None = None  # [N, L] true expectation per label (simulator only)
    scenario: torch.Tensor | None = None  # [N] int64, index into schema.scenarios (None: no scenario facet)

    TENSORS = ("categorical", "dense", "labels", "label_mask", "group", "split", "user", "oracle", "scenario")

    @classmethod
    def from_numpy(cls, schema: Schema, **arrays: np.ndarray | None) -> Dataset:
        """A dataset over NumPy arrays named as the tensors (shared, not copied: arrays must be writable)."""
        return cls(schema, **{name: None if values is None else torch.from_numpy(values)
                              for name, values in arrays.items()})

    def __len__(self) -> int:
        return int(self.group.shape[0])

    def rows(self, index: torch.Tensor) -> Dataset:
        """The rows at `index` (a bool mask or integer index)."""
        values = {name: getattr(self, name) for name in self.TENSORS}
        return Dataset(self.schema, **{k: (v[index] if v is not None else None) for k, v in values.items()})

    def select(self, split: str) -> Dataset:
        """The rows of one split (train, validation or test)."""
        return self.rows(self.split == SPLITS.index(split))

    def without_inputs(self, names: list[str]) -> Dataset:
        """The dataset with the named inputs carrying no information (`data.hidden_inputs`): a categorical field
        becomes 0 (out of vocabulary) and a dense feature 0 on every row. The shapes stay, so a model keeps its
        architecture, its initialisation and its data order for a seed: a paired comparison with the full inputs
        differs in the information alone. Labels, groups, splits and the oracle are unchanged."""
        from dataclasses import replace

        from mfh_cli.errors import ConfigError

        if not names:
            return self
        categorical, dense = list(self.schema.categorical), list(self.schema.dense)
        unknown = [name for name in names if name not in categorical + dense]
        if unknown:
            raise ConfigError(f"data.hidden_inputs: {', '.join(unknown)} not an input of '{self.schema.name}' "
                              f"(it has {', '.join(categorical + dense)})")
        categorical_values, dense_values = self.categorical.clone(), self.dense.clone()
        categorical_values[:, [categorical.index(name) for name in names if name in categorical]] = 0
        dense_values[:, [dense.index(name) for name in names if name in dense]] = 0.0
        return replace(self, categorical=categorical_values, dense=dense_values)

    def cells(self, facets: dict[str, list[str]]) -> torch.Tensor:
        """[N] int64 each row's cell among the value combinations of `facets` ({facet: values}, canonical order,
        the last fastest: `tasks.cell_facets`), from the rows' index in each facet (`Facet.column`)."""
        from mfh_cli.tasks import FACETS

        cell = torch.zeros(len(self), dtype=torch.int64)
        for name, values in facets.items():
            index = getattr(self, FACETS[name].column)
            if index is None:
                raise ValueError(f"dataset '{self.schema.name}' has no {name} per row")
            cell = cell * len(values) + index
        return cell

    def behaviour_columns(self, behaviours: list[str]) -> list[int]:
        """Label column indices of the named behaviours, in the order given."""
        names = list(self.schema.behaviours)
        return [names.index(name) for name in behaviours]

    def check(self) -> None:
        """Shapes and dtypes agree with the schema (a programming error if not)."""
        n = len(self)
        assert self.categorical.shape == (n, len(self.schema.categorical)), self.categorical.shape
        assert self.dense.shape == (n, len(self.schema.dense)), self.dense.shape
        assert self.labels.shape == self.label_mask.shape == (n, len(self.schema.behaviours))
        assert self.label_mask.dtype == torch.bool
        assert not torch.isnan(self.labels).any(), "labels hold NaN: mask them instead"
        assert (self.scenario is None) == (not self.schema.scenarios), "scenario rows need schema.scenarios"

    def state(self) -> dict:
        """Tensors and schema as a dict of tensors + plain values (what the cache stores)."""
        return {"schema": self.schema.to_dict(), **{k: getattr(self, k) for k in self.TENSORS}}

    @classmethod
    def from_state(cls, state: dict) -> Dataset:
        """The dataset back from `state()`'s values."""
        return cls(Schema.from_dict(state["schema"]), **{k: state.get(k) for k in cls.TENSORS})
