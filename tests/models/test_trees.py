"""Trees over any number of facets (SPEC §2): leaf order, stacking, and the sum over trees."""

from __future__ import annotations

import torch

from mfh_cli.models.parts.dense import DenseOptions
from mfh_cli.models.parts.switchers import SwitcherSpec
from mfh_cli.models.trees import TaskForest, TreeLayout, parse_tree

FACETS = {"behaviour": ["cmpl", "finish", "skip"], "group": ["new", "low"]}
OPTIONS = DenseOptions(batch_norm=None)
CGC = SwitcherSpec("cgc", [[4]], experts_per_branch=1, shared_experts=1)


def test_tree_names_list_the_facets_of_each_level():
    assert parse_tree("behaviour/group") == [["behaviour"], ["group"]]
    assert parse_tree("behaviour+group") == [["behaviour", "group"]]


def test_leaf_order_maps_canonical_tasks_to_the_trees_leaves():
    # canonical task t = behaviour·2 + group; tree group/behaviour puts leaf (g, b) at g·3 + b
    assert TreeLayout("group/behaviour", parse_tree("group/behaviour"), FACETS).leaf_order() == [0, 3, 1, 4, 2, 5]
    assert TreeLayout("behaviour/group", parse_tree("behaviour/group"), FACETS).leaf_order() == [0, 1, 2, 3, 4, 5]


def test_level_two_switchers_are_named_by_the_branch_they_split():
    layout = TreeLayout("group/behaviour", parse_tree("group/behaviour"), FACETS)
    assert layout.branches == [2, 3]
    assert layout.copy_labels(0) == [""] and layout.copy_labels(1) == ["new", "low"]


def test_three_facets_one_tree_per_facet_give_one_leaf_per_task():
    facets = {"a": ["a0", "a1"], "b": ["b0", "b1", "b2"], "c": ["c0", "c1"]}
    trees = ["a/b+c", "b/a+c", "c/a+b"]  # the SPEC's K-facet MFH: tree f splits by f, then by the rest
    forest = TaskForest(5, facets, [6], trees, [CGC, CGC], [], OPTIONS)
    assert forest(torch.randn(7, 5)).shape == (12, 7, 4)
    deep = TaskForest(5, facets, [], ["a/b/c", "c/b/a"], [CGC, CGC, CGC], [3], OPTIONS)
    assert deep(torch.randn(7, 5)).shape == (12, 7, 4)


def test_the_forest_sums_each_tasks_leaves_over_the_trees():
    torch.manual_seed(0)
    trees = ["behaviour/group", "group/behaviour"]
    both = TaskForest(5, FACETS, [], trees, [CGC, CGC], [], OPTIONS)
    singles = [TaskForest(5, FACETS, [], [tree], [CGC, CGC], [], OPTIONS) for tree in trees]
    for index, single in enumerate(singles):  # give each single tree the weights of its part of `both`
        for depth, stages in enumerate(single.stages):
            source = next(stage for stage in both.stages[depth] if stage.members == [index])
            stages[0].load_state_dict(source.state_dict())
    x = torch.randn(4, 5)
    assert torch.allclose(both(x), singles[0](x) + singles[1](x), atol=1e-6)


def test_trees_of_the_same_shape_share_one_stacked_switcher_per_level():
    facets = {"behaviour": ["cmpl", "finish", "skip"], "group": ["new", "low", "high"]}
    forest = TaskForest(5, facets, [8], ["behaviour/group", "group/behaviour"], [CGC, CGC], [], OPTIONS)
    assert [len(stages) for stages in forest.stages] == [1, 1]
    assert forest.stages[1][0].members == [0, 1]
    assert forest(torch.randn(6, 5)).shape == (9, 6, 4)
