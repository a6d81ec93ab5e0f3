"""Hierarchies of switchers over a grid of tasks (SPEC §2): level 0, then one or more trees.

A tree is written `behaviour/group`: level 1 splits by behaviour, then every level-1 branch is split by group at
level 2 (one level-2 switcher per behaviour). `behaviour+group` is one level splitting by every task at once
(the flat models). With K facets, `f/a+b+…` is the SPEC's tree f (level 2 splits each f branch into the tasks
that share its value); any depth works the same way. All trees read one level-0 output, and the input of task
t's tower is the sum over trees of t's leaf (SPEC §2 [code]).

Speed: the switchers of one depth that have the same shape are ONE stacked switcher module (S copies), across
trees too: MFH 9-task runs its two level-1 PLEs as one module (S=2) and its six level-2 CGCs as one (S=6).

Shape letters: B rows, D input width, S stacked switchers of a depth, K branches of each, T tasks, H width.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn

from mfh_cli.errors import ConfigError
from mfh_cli.models.parts.dense import DenseOptions, MLPBank
from mfh_cli.models.parts.switchers import SwitcherSpec, build_switcher


def parse_tree(text: str) -> list[list[str]]:
    """`behaviour/group` → [[behaviour], [group]]; `behaviour+group` → [[behaviour, group]]."""
    return [level.split("+") for level in str(text).split("/")]


@dataclass(frozen=True)
class TreeLayout:
    """The shape of one tree: facets split at each level, switchers (S) and branches (K) per level."""

    name: str
    levels: list[list[str]]
    facet_values: dict[str, list[str]]  # canonical facet order → value names

    @property
    def branches(self) -> list[int]:
        """K of each level: the number of value combinations of the facets it splits by."""
        return [math.prod(len(self.facet_values[facet]) for facet in level) for level in self.levels]

    def copies(self, depth: int) -> int:
        """How many switchers the tree has at `depth` (one per branch of the level above)."""
        return math.prod(self.branches[:depth])

    def copy_labels(self, depth: int) -> list[str]:
        """Names of the switchers at `depth`: the facet values of the branch each one splits (`cmpl`, …)."""
        facets = [facet for level in self.levels[:depth] for facet in level]
        return [",".join(values) for values in itertools.product(*(self.facet_values[f] for f in facets))]

    def leaf_order(self) -> list[int]:
        """For each task in canonical order (facets' order, last fastest), its position among the leaves."""
        tree_facets = [facet for level in self.levels for facet in level]
        order = []
        for values in itertools.product(*(range(len(names)) for names in self.facet_values.values())):
            by_facet = dict(zip(self.facet_values, values))
            position = 0
            for facet in tree_facets:
                position = position * len(self.facet_values[facet]) + by_facet[facet]
            order.append(position)
        return order


class Stage(nn.Module):
    """The stacked switcher (and per-branch MLPs) of one depth for the trees `members`."""

    def __init__(self, members: list[int], switcher: nn.Module, branch_mlp: MLPBank | None):
        super().__init__()
        self.members, self.switcher, self.branch_mlp = members, switcher, branch_mlp


class TaskForest(nn.Module):
    """Level 0 (a shared-bottom MLP, or none) feeding one or more trees whose leaves are summed per task."""

    def __init__(self, input_dim: int, facet_values: dict[str, list[str]], level0: list[int], trees: list[str],
                 switchers: list[SwitcherSpec], branch_mlp: list[int], options: DenseOptions):
        super().__init__()
        if not trees:
            raise ConfigError("model.trees is empty: name at least one tree (e.g. behaviour/group)")
        self.layouts = [self._layout(name, facet_values, len(switchers)) for name in trees]
        depths = {len(layout.levels) for layout in self.layouts}
        if len(depths) > 1:
            raise ConfigError(f"model.trees {trees}: all trees need the same number of levels")
        self.level0 = MLPBank(1, 1, input_dim, level0, options, final_activation=True) if level0 else None
        width = level0[-1] if level0 else input_dim
        self.stages = nn.ModuleList()  # per depth, one Stage per distinct branch count
        (depth_count,) = depths
        for depth in range(depth_count):
            by_branches: dict[int, list[int]] = {}  # trees whose switchers at this depth have K branches
            for index, layout in enumerate(self.layouts):
                by_branches.setdefault(layout.branches[depth], []).append(index)
            last = depth == depth_count - 1
            stages = nn.ModuleList()
            for branches, members in by_branches.items():
                copies = sum(self.layouts[index].copies(depth) for index in members)
                switcher = build_switcher(switchers[depth], copies, branches, width, options,
                                          where=f"model.levels[{depth}]")
                mlp = MLPBank(copies * branches, 1, switcher.output_dim, branch_mlp, options, True) \
                    if branch_mlp and not last else None
                stages.append(Stage(members, switcher, mlp))
            self.stages.append(stages)
            width = stages[0].branch_mlp.output_dim if stages[0].branch_mlp else stages[0].switcher.output_dim
        self.output_dim = width
        for index, layout in enumerate(self.layouts):
            order = layout.leaf_order()
            self.register_buffer(f"leaf_order_{index}", None if order == sorted(order) else torch.tensor(order),
                                 persistent=False)

    @staticmethod
    def _layout(name: str, facet_values: dict[str, list[str]], configured_levels: int) -> TreeLayout:
        levels = parse_tree(name)
        used = [facet for level in levels for facet in level]
        if sorted(used) != sorted(facet_values):
            raise ConfigError(f"model.trees: tree '{name}' must split by each of {', '.join(facet_values)} "
                              "exactly once")
        if configured_levels < len(levels):
            raise ConfigError(f"model.levels: tree '{name}' has {len(levels)} levels but only "
                              f"{configured_levels} switcher(s) are configured")
        return TreeLayout(name, levels, facet_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, D] → tower inputs [T, B, H] in canonical task order."""
        rows = x.shape[0]
        if self.level0 is not None:
            x = self.level0(x.unsqueeze(0)).view(rows, -1)
        streams = [x.unsqueeze(0)] * len(self.layouts)  # per tree: [S_tree, B, D]
        for stages in self.stages:
            for stage in stages:
                inputs = [streams[index] for index in stage.members]
                if len(inputs) == 1:
                    stacked = inputs[0]
                elif all(part is inputs[0] for part in inputs):  # level 1: every tree reads level 0
                    stacked = inputs[0].expand(len(inputs), -1, -1)
                else:
                    stacked = torch.cat(inputs)
                output = stage.switcher(stacked)  # [S, B, K, H]
                output = output.transpose(1, 2).reshape(-1, rows, output.shape[-1])  # [S·K, B, H], tree order
                if stage.branch_mlp is not None:
                    output = stage.branch_mlp(output).squeeze(2)
                sizes = [streams[index].shape[0] * output.shape[0] // stacked.shape[0] for index in stage.members]
                for index, part in zip(stage.members, output.split(sizes)):
                    streams[index] = part
        leaves = None
        for index, stream in enumerate(streams):
            order = getattr(self, f"leaf_order_{index}")
            stream = stream if order is None else stream.index_select(0, order)
            leaves = stream if leaves is None else leaves + stream
        return leaves
