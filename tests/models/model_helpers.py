"""Shared values and helpers of the model tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import torch

from mfh_cli.config import CONF_DIR, compose
from mfh_cli.data.dataset import Schema

# Every model file in conf/model/ (a new variant is tested as soon as its YAML exists).
MODELS = sorted(path.stem for path in (CONF_DIR / "model").glob("*.yaml"))

# A small network with every kind of part, for tests that need exact counts or fast training.
TINY = ["size.level0=[8]", "size.switchers.level1.layers=[[6],[4]]", "size.switchers.level2.layers=[[4]]",
        "size.towers.new=[3]", "size.towers.low=[3,2]", "size.towers.high=[5,2]", "size.bias_tower=[4]",
        "size.switchers.mmoe.layers=[[6,4]]", "size.switchers.cgc.layers=[[6,4]]",
        "size.switchers.shared_bottom.layers=[[6,4]]", "size.embedding_dim=2"]


def config(*overrides: str):
    """The composed config with overrides (Hydra syntax)."""
    return compose(list(overrides))


def batch(schema: Schema, rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (categorical, dense, group) inputs for `schema` with every group present."""
    generator = torch.Generator().manual_seed(seed)
    categorical = torch.stack([torch.randint(0, size, (rows,), generator=generator)
                               for size in schema.categorical.values()], dim=1)
    dense = torch.randn(rows, len(schema.dense), generator=generator)
    group = torch.arange(rows) % len(schema.groups)
    return categorical, dense, group
