"""The nine models as compositions of parts, built from `cfg.model` (conf/model/*.yaml) and `cfg.size`.

Every model is: input (embeddings + dense, or a given width) → `TaskForest` (level 0 + trees) → `Towers`
(+ a `BiasTower` for biasnet). The YAML chooses the trees, the switcher of each level, the towers per group
and the bias tower, so a new variant is a YAML file. Shape letters: B rows, C categorical fields, D dense
features, F input width, T tasks, Tb behaviours, C' cells of the run.

Routing. A row belongs to one cell of the run (`tasks.cell_facets`: its user group, and its scenario where the
grid has one); the model takes that cell index and reads the row's outputs from the towers of the cell over its
own facets (the facets its trees split by: a model over behaviour × group on a behaviour × group × scenario grid
serves every scenario of a group from the group's towers). For a two-facet grid the run's cells are the user
groups, so the cell index is the group index and nothing is remapped.
"""

from __future__ import annotations

import itertools
import math

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from mfh_cli.data.dataset import Schema
from mfh_cli.errors import ConfigError
from mfh_cli.models.parts.bias import BiasTower
from mfh_cli.models.parts.dense import DenseOptions
from mfh_cli.models.parts.embeddings import FeatureEmbedding
from mfh_cli.models.parts.switchers import SwitcherSpec
from mfh_cli.models.parts.towers import Towers
from mfh_cli.models.trees import TaskForest, parse_tree
from mfh_cli.tasks import BEHAVIOUR, USER_GROUP, cell_facets, cell_names, run_facets, task_names

SHARED_TOWER = "all"  # the towers key of a model without the group facet (one tower per behaviour)


class MultiTaskModel(nn.Module):
    """`model(categorical [B, C], dense [B, D], cell [B]) → [B, Tb]` raw outputs (logit or value) of the task
    grid's behaviours, read from the towers of each row's own cell (ARCHITECTURE.md "Model contract"); `cell`
    indexes `model.cells` (the user groups on a two-facet grid)."""

    def __init__(self, name: str, behaviours: list[str], kinds: list[str], groups: list[str], input_dim: int,
                 embedding: FeatureEmbedding | None, forest: TaskForest, towers: Towers, bias: BiasTower | None,
                 cells: dict[str, list[str]] | None = None, tower_facets: dict[str, list[str]] | None = None):
        super().__init__()
        self.name, self.behaviours, self.kinds, self.groups = name, behaviours, kinds, groups
        self.cell_facets = cells or {USER_GROUP.name: list(groups)}  # the run's cells: {facet: values}
        self.tower_facets = tower_facets if tower_facets is not None else (
            {USER_GROUP.name: list(groups)} if towers.grouped else {})  # the facets the towers split by, but behaviour
        self.cells = cell_names(self.cell_facets)  # names of the run's cells (`high`, `high_tab1`)
        self.input_dim = input_dim  # F, the width forward_features takes
        self.embedding, self.forest, self.towers, self.bias = embedding, forest, towers, bias
        # [C'] the model's tower cell and the user group of every cell of the run; None where it is the identity.
        self.register_buffer("tower_cell", _projection(self.cell_facets, self.tower_facets), persistent=False)
        self.register_buffer("cell_group", _projection(self.cell_facets, {USER_GROUP.name: list(groups)}),
                             persistent=False)

    @property
    def tasks(self) -> list[str]:
        """Task names `<behaviour>_<group>[_<scenario>]` of the towers (behaviour-major), or the behaviours for a
        model without further facets."""
        return task_names({BEHAVIOUR.name: self.behaviours, **self.tower_facets})

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters: the embedding table apart from the network (`mfh model describe`, metrics.json)."""
        embeddings = 0 if self.embedding is None else sum(p.numel() for p in self.embedding.parameters())
        total = sum(p.numel() for p in self.parameters())
        return {"embeddings": embeddings, "network": total - embeddings, "total": total}

    def forward(self, categorical: torch.Tensor, dense: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        if self.embedding is None:
            raise RuntimeError("this model was built with input_dim: call forward_features(x, cell)")
        return self.forward_features(self.embedding(categorical, dense), cell)

    def forward_features(self, x: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """x [B, F] (after the embedding layer), cell [B] (index into `model.cells`) → [B, Tb]."""
        tower_cell = cell if self.tower_cell is None else self.tower_cell[cell]
        outputs = self.towers(self.forest(x), tower_cell)
        if self.bias is not None:
            outputs = outputs + self.bias(cell if self.cell_group is None else self.cell_group[cell])
        return outputs


def _projection(cells: dict[str, list[str]], facets: dict[str, list[str]]) -> torch.Tensor | None:
    """[C'] for every cell of `cells` (canonical order) its index among the value combinations of `facets`, a
    subset of its facets (0 for none); None when that is every cell's own index."""
    index = []
    for values in itertools.product(*(range(len(names)) for names in cells.values())):
        by_facet, position = dict(zip(cells, values)), 0
        for facet, names in facets.items():
            position = position * len(names) + by_facet[facet]
        index.append(position)
    return None if index == list(range(len(index))) and len(index) == math.prod(map(len, facets.values())) \
        else torch.tensor(index)


def _plain(node):
    """A config node as plain Python values (other values unchanged)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node


def _sizes(value, where: str) -> list[int]:
    value = _plain(value)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(size, int) and size > 0 for size in value):
        raise ConfigError(f"{where} must be a list of positive layer sizes (e.g. [128, 64]), got {value}")
    return value


def _switcher(node, where: str) -> SwitcherSpec:
    values = _plain(node)
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a switcher mapping (kind, layers, ...), got {values}")
    known = {"kind", "layers", "experts_per_branch", "shared_experts", "gate", "gate_hidden"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {', '.join(unknown)}: expected {', '.join(sorted(known))}")
    if "kind" not in values or "layers" not in values:
        raise ConfigError(f"{where} needs `kind` and `layers`")
    layers = values["layers"]
    if not isinstance(layers, list):
        raise ConfigError(f"{where}.layers must be a list of expert layer-size lists, e.g. [[256], [128]]")
    return SwitcherSpec(kind=values["kind"], layers=[_sizes(sizes, f"{where}.layers") for sizes in layers],
                        experts_per_branch=int(values.get("experts_per_branch", 0)),
                        shared_experts=int(values.get("shared_experts", 1)), gate=values.get("gate", "softmax"),
                        gate_hidden=_sizes(values.get("gate_hidden"), f"{where}.gate_hidden"))


def _tower_sizes(towers, groups: list[str], grouped: bool) -> dict[str, list[int]]:
    towers = _plain(towers) or {}
    if not isinstance(towers, dict):
        raise ConfigError(f"model.towers must map user group -> layer sizes, got {towers}")
    if not grouped:
        if SHARED_TOWER not in towers:
            raise ConfigError(f"model.towers needs key '{SHARED_TOWER}': this model has no user-group facet")
        return {SHARED_TOWER: _sizes(towers[SHARED_TOWER], f"model.towers.{SHARED_TOWER}")}
    missing = [group for group in groups if group not in towers and SHARED_TOWER not in towers]
    if missing:
        raise ConfigError(f"model.towers has no sizes for user group(s) {', '.join(missing)} (nor '{SHARED_TOWER}')")
    return {group: _sizes(towers.get(group, towers.get(SHARED_TOWER)), f"model.towers.{group}") for group in groups}


def _tree_facets(trees: list[str], grid: dict[str, list[str]], tasks_name: str) -> dict[str, list[str]]:
    """{facet: values} of the task grid `grid` that `trees` split by (grid order); every tree splits by behaviour
    and only by facets of the grid."""
    used = {facet for tree in trees for level in parse_tree(tree) for facet in level}
    unknown = sorted(used - set(grid))
    if unknown:
        raise ConfigError(f"model.trees {trees}: {', '.join(unknown)} is not a facet of tasks '{tasks_name}' "
                          f"(tasks.facets: {', '.join(grid)})")
    if BEHAVIOUR.name not in used:
        raise ConfigError(f"model.trees {trees}: every model splits by {BEHAVIOUR.name}")
    return {facet: values for facet, values in grid.items() if facet in used}


def build_model(cfg: DictConfig, schema: Schema, input_dim: int | None = None) -> MultiTaskModel:
    """The model `cfg.model` at sizes `cfg.size` for the task grid of `cfg.tasks` (`tasks.run_facets`: the
    behaviours `cfg.tasks.behaviours` × the dataset's `schema.groups` (× its `schema.scenarios`)).

    With `input_dim`, no embeddings: the model takes a dense input of that width (`forward_features`).
    """
    model = cfg.model
    behaviours = list(cfg.tasks.behaviours)
    unknown = [name for name in behaviours if name not in schema.behaviours]
    if unknown:
        raise ConfigError(f"tasks.behaviours: {', '.join(unknown)} not in the behaviours of dataset "
                          f"'{schema.name or cfg.data.name}' ({', '.join(schema.behaviours)})")
    trees = [str(tree) for tree in _plain(model.trees)]
    grid = run_facets(cfg.tasks, schema)
    facet_values = _tree_facets(trees, grid, str(cfg.tasks.name))
    grouped = USER_GROUP.name in facet_values
    tower_facets = {facet: values for facet, values in facet_values.items() if facet != BEHAVIOUR.name}
    cells_per_group = math.prod(len(values) for facet, values in tower_facets.items() if facet != USER_GROUP.name)
    dense = model.dense
    options = DenseOptions.from_config(dense.activation, str(dense.batch_norm), dense.dropout)

    if input_dim is None:
        embedding = FeatureEmbedding(list(schema.categorical.values()), len(schema.dense), int(cfg.size.embedding_dim))
        width = embedding.output_dim
    else:
        embedding, width = None, int(input_dim)
    if width < 1:
        raise ConfigError(f"the model input has width {width}: the dataset has no features (or --input-dim < 1)")
    levels = [_switcher(node, f"model.levels[{index}]") for index, node in enumerate(model.levels)]
    level0, branch_mlp = _sizes(model.level0, "model.level0"), _sizes(model.branch_mlp, "model.branch_mlp")
    forest = TaskForest(width, facet_values, level0, trees, levels, branch_mlp, options)
    towers = Towers(forest.output_dim, len(behaviours), _tower_sizes(model.towers, schema.groups, grouped), options,
                    grouped, cells_per_group)
    bias_sizes = _sizes(model.get("bias_tower"), "model.bias_tower")
    bias = BiasTower(len(schema.groups), len(behaviours), bias_sizes, options) if bias_sizes else None
    kinds = [schema.behaviours[name] for name in behaviours]
    return MultiTaskModel(str(model.name), behaviours, kinds, list(schema.groups), width, embedding, forest, towers,
                          bias, cell_facets(grid, schema), tower_facets)
