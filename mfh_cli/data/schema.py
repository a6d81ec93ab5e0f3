"""What a dataset's tensors mean, without torch: the splits and the `Schema` dataclass.

Torch-free so that `mfh data validate` and other checks can use the names without loading torch;
`mfh_cli.data.dataset` re-exports them next to `Dataset`. The behaviours the project knows and the user groups
are the task grid's (`mfh_cli/tasks.py`); a schema lists the ones its dataset has.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from mfh_cli.config_schema import SPLIT_NAMES

SPLITS: tuple[str, ...] = SPLIT_NAMES


@dataclass(frozen=True)
class Schema:
    """What the tensors mean: feature vocabularies, behaviours (label columns, in order), user groups and
    scenarios (the surfaces rows were shown on, where the dataset records them)."""

    categorical: dict[str, int]  # field -> vocabulary size; index 0 is out-of-vocabulary / missing
    dense: list[str]
    behaviours: dict[str, str]  # label column -> "regression" | "binary"
    groups: list[str]  # Dataset.group holds an index into this list
    name: str = ""
    notes: list[str] = field(default_factory=list)  # caveats worth printing (e.g. label sparsity)
    scenarios: list[str] = field(default_factory=list)  # Dataset.scenario indexes it; [] = no scenario facet

    def to_dict(self) -> dict:
        """Plain values (what the cache stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Schema:
        """The schema back from `to_dict`'s values."""
        return cls(**values)
