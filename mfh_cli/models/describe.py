"""`mfh model describe`: the model as a tree with the parameter count of every component.

Components: level 0, each tree's level-1 switcher, each level-2 switcher (one per level-1 branch), their
experts and gates, the per-branch MLPs, the towers per user group and the bias tower; embeddings are counted
apart from the network. A stacked switcher module holds S identical switchers, so each one is 1/S of it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree as RichTree
from torch import nn

from mfh_cli.data.dataset import Schema
from mfh_cli.models.parts.experts import Experts
from mfh_cli.models.parts.gates import Gates
from mfh_cli.models.zoo import MultiTaskModel, build_model
from mfh_cli.tasks import BEHAVIOURS, USER_GROUPS


def count(module: nn.Module | None) -> int:
    """Trainable parameters of a module (0 for None)."""
    return 0 if module is None else sum(parameter.numel() for parameter in module.parameters())


def _part_counts(switcher: nn.Module, copies: int) -> dict[str, int]:
    """Experts and gates of one of the `copies` stacked switchers in `switcher`."""
    experts = sum(count(module) for module in switcher.modules() if isinstance(module, Experts))
    gates = sum(count(module) for module in switcher.modules() if isinstance(module, Gates))
    return {"experts": experts // copies, "gates": gates // copies} if gates else {}


def switcher_components(model: MultiTaskModel) -> list[tuple[str, int, dict[str, int]]]:
    """(name, parameters, {experts, gates}) of every switcher and per-branch MLP, tree by tree, level by level."""
    forest = model.forest
    rows: list[tuple[str, int, dict[str, int]]] = []
    for index, layout in enumerate(forest.layouts):
        for depth, stages in enumerate(forest.stages):
            stage = next(stage for stage in stages if index in stage.members)
            copies = sum(forest.layouts[member].copies(depth) for member in stage.members)
            per_switcher, parts = count(stage.switcher) // copies, _part_counts(stage.switcher, copies)
            labels = layout.copy_labels(depth)
            for label in labels:
                suffix = f"[{label}]" if label else ""
                rows.append((f"tree[{layout.name}].level{depth + 1}{suffix}", per_switcher, parts))
            if stage.branch_mlp is not None:
                branches = layout.branches[depth]
                per_branch = count(stage.branch_mlp) // (copies * branches)
                for label in layout.copy_labels(depth + 1):
                    rows.append((f"tree[{layout.name}].branch_mlp[{label}]", per_branch, {}))
    return rows


def components(model: MultiTaskModel) -> dict[str, int]:
    """Every component's parameter count by name (parents and their experts/gates children)."""
    result: dict[str, int] = {}
    if model.forest.level0 is not None:
        result["level0"] = count(model.forest.level0)
    for name, parameters, parts in switcher_components(model):
        result[name] = parameters
        result.update({f"{name}.{part}": value for part, value in parts.items()})
    for group, bank in model.towers.banks.items():
        result[f"towers[{group}]"] = count(bank)
    if model.bias is not None:
        result["bias_tower"] = count(model.bias)
    return result


def summary(model: MultiTaskModel) -> dict:
    """The JSON form: model name, parameter totals (embeddings apart) and the components."""
    return {"model": model.name, "parameters": model.parameter_counts(), "components": components(model)}


def render_tree(model: MultiTaskModel, values: dict) -> str:
    """The model as a rich tree rendered to plain text."""
    parameters = values["parameters"]
    root = RichTree(f"[bold]{model.name}[/bold]: {parameters['network']:,} network parameters "
                    f"+ {parameters['embeddings']:,} embedding = {parameters['total']:,}")
    root.add(f"input: {'embeddings ' + format(parameters['embeddings'], ',') if model.embedding else 'dense'}"
             f" → width {model.input_dim}")
    if model.forest.level0 is not None:
        root.add(f"level 0 (shared bottom): {count(model.forest.level0):,}")
    nodes: dict[str, RichTree] = {}
    for name, value, parts in switcher_components(model):
        tree_name = name.split("]")[0] + "]"
        if tree_name not in nodes:
            nodes[tree_name] = root.add(escape(tree_name.replace("tree[", "tree ").rstrip("]")))
        node = nodes[tree_name].add(escape(f"{name[len(tree_name) + 1:]}: {value:,}"))
        for part, part_value in parts.items():
            node.add(f"{part}: {part_value:,}")
    towers = root.add(f"towers: {count(model.towers):,} ({', '.join(model.tasks)})")
    for group, bank in model.towers.banks.items():
        towers.add(f"{group}: {count(bank):,}")
    if model.bias is not None:
        root.add(f"bias tower: {count(model.bias):,}")
    buffer = io.StringIO()
    Console(file=buffer, width=120, color_system=None, highlight=False).print(root)
    return buffer.getvalue().rstrip()


def describe_model(cfg: DictConfig, input_dim: int | None, data_dir: Path | None, cache_dir: Path | None,
                   fmt: str) -> str:
    """`mfh model describe`: the schema comes from the dataset, or `input_dim` replaces the data-derived input."""
    if input_dim is None:
        from mfh_cli.data import load_dataset

        schema = load_dataset(cfg, data_dir, cache_dir).schema
    else:
        schema = Schema(categorical={}, dense=[], behaviours=dict(BEHAVIOURS), groups=list(USER_GROUPS))
    model = build_model(cfg, schema, input_dim=input_dim)
    values = summary(model)
    return json.dumps(values, indent=2) if fmt == "json" else render_tree(model, values)
