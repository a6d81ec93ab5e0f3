"""What the golden file records: every conf/model at size=compact (and mfh at size=paper) on the simulator schema,
its parameter counts and its outputs for seeded weights and a fixed 16-row batch, in eval then train mode."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from mfh_cli.config import CONF_DIR, compose
from mfh_cli.data.dataset import Schema
from mfh_cli.models.zoo import MultiTaskModel, build_model
from mfh_cli.tasks import BEHAVIOURS, USER_GROUPS

GOLDEN_FILE = Path(__file__).with_name("models.json")
ROWS = 16  # rows of the fixed input batch
MODELS = sorted(path.stem for path in (CONF_DIR / "model").glob("*.yaml"))
# (label, overrides): every model at the compact size, and mfh at the paper's appendix size, as the authors' graph has
# them (recipe=authors: BatchNorm after every hidden activation); the default recipe leaves BatchNorm out.
CASES = [(f"{name}@compact", [f"model={name}", "size=compact", "recipe=authors"]) for name in MODELS] + [
    ("mfh@paper", ["model=mfh", "size=paper", "recipe=authors"])]


def simulator_schema(cfg: DictConfig) -> Schema:
    """The schema `data=synthetic` gives at its defaults, without simulating rows (the world alone is drawn)."""
    from mfh_cli.data.synthetic import (CATEGORICAL_FIELDS, DENSE_FIELDS, ITEM_TAGS, USER_AGES, USER_REGIONS,
                                        build_world, read_settings)
    settings = read_settings(cfg.data)
    world = build_world(settings)
    vocabulary = [settings.users + 1, settings.items + 1, len(USER_GROUPS) + 1, USER_AGES + 1, USER_REGIONS + 1,
                  ITEM_TAGS + 1, world.authors + 1]
    return Schema(categorical=dict(zip(CATEGORICAL_FIELDS, vocabulary)), dense=list(DENSE_FIELDS),
                  behaviours=dict(BEHAVIOURS), groups=list(USER_GROUPS), name="synthetic")


def schema_to_json(schema: Schema) -> dict:
    """The schema's fields that shape a model, as JSON values."""
    return {"categorical": dict(schema.categorical), "dense": list(schema.dense),
            "behaviours": dict(schema.behaviours), "groups": list(schema.groups)}


def schema_from_json(values: dict) -> Schema:
    """The schema stored in the golden file."""
    return Schema(categorical=dict(values["categorical"]), dense=list(values["dense"]),
                  behaviours=dict(values["behaviours"]), groups=list(values["groups"]), name="synthetic")


def fixed_batch(schema: Schema) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A deterministic (categorical, dense, group) batch of ROWS rows, every group present."""
    generator = torch.Generator().manual_seed(1234)
    categorical = torch.stack([torch.randint(0, size, (ROWS,), generator=generator)
                               for size in schema.categorical.values()], dim=1)
    dense = torch.randn(ROWS, len(schema.dense), generator=generator)
    group = torch.arange(ROWS) % len(schema.groups)
    return categorical, dense, group


def seeded_model(overrides: list[str], schema: Schema) -> MultiTaskModel:
    """The model of `overrides` with weights from torch.manual_seed(0)."""
    torch.manual_seed(0)
    return build_model(compose(overrides), schema)


def record(overrides: list[str], schema: Schema) -> dict:
    """Parameter counts (total and per top-level submodule) and eval/train-mode outputs of one case."""
    model = seeded_model(overrides, schema)
    counts = {"total": sum(p.numel() for p in model.parameters())}
    for name, child in model.named_children():
        counts[name] = sum(p.numel() for p in child.parameters())
    inputs = fixed_batch(schema)
    with torch.no_grad():
        model.eval()
        evaluated = model(*inputs)
        model.train()
        trained = model(*inputs)
    return {"overrides": overrides, "parameters": counts, "eval": evaluated.tolist(), "train": trained.tolist()}
