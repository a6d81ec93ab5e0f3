"""`mfh model describe`: per-component parameter counts against counts written out from the layer sizes."""

from __future__ import annotations

import json

import pytest

from mfh_cli.data import load_dataset
from mfh_cli.models import build_model
from mfh_cli.models.describe import summary
from tests.models.model_helpers import TINY, config

# TINY at input width 10, BatchNorm on (the authors' recipe: 2 parameters per unit), 3 behaviours × 3 groups.
# Linear(i → o) has i·o + o parameters.
BN_TINY = [*TINY, "recipe=authors"]
LEVEL0 = 10 * 8 + 8 + 2 * 8                                           # 104
LEVEL1_EXPERTS = 8 * (8 * 6 + 6) + 2 * 8 * 6 + 8 * (6 * 4 + 4) + 2 * 8 * 4  # 8 experts per layer: 528 + 288
LEVEL1_GATES = 3 * (8 * 4 + 4) + (8 * 8 + 8) + 3 * (6 * 4 + 4)     # branch gates, shared gate, layer-2 gates
LEVEL2_EXPERTS = 4 * (4 * 4 + 4) + 2 * 4 * 4                          # 3 branch experts + 1 shared, size 4
LEVEL2_GATES = 3 * (4 * 2 + 2)                                         # no shared gate on a single layer
TOWER_NEW = 3 * ((4 * 3 + 3) + 2 * 3 + (3 + 1))
TOWER_LOW = 3 * ((4 * 3 + 3) + 2 * 3 + (3 * 2 + 2) + 2 * 2 + (2 + 1))
TOWER_HIGH = 3 * ((4 * 5 + 5) + 2 * 5 + (5 * 2 + 2) + 2 * 2 + (2 + 1))
MFH_NETWORK = LEVEL0 + 2 * (LEVEL1_EXPERTS + LEVEL1_GATES + 3 * (LEVEL2_EXPERTS + LEVEL2_GATES)) + \
    TOWER_NEW + TOWER_LOW + TOWER_HIGH  # two trees, three level-2 switchers each


def expected_mfh_components() -> dict[str, int]:
    components = {"level0": LEVEL0}
    for tree, branches in (("behaviour/group", ["cmpl", "finish", "skip"]),
                           ("group/behaviour", ["new", "low", "high"])):
        components[f"tree[{tree}].level1"] = LEVEL1_EXPERTS + LEVEL1_GATES
        components[f"tree[{tree}].level1.experts"] = LEVEL1_EXPERTS
        components[f"tree[{tree}].level1.gates"] = LEVEL1_GATES
        for branch in branches:
            components[f"tree[{tree}].level2[{branch}]"] = LEVEL2_EXPERTS + LEVEL2_GATES
            components[f"tree[{tree}].level2[{branch}].experts"] = LEVEL2_EXPERTS
            components[f"tree[{tree}].level2[{branch}].gates"] = LEVEL2_GATES
    components.update({"towers[new]": TOWER_NEW, "towers[low]": TOWER_LOW, "towers[high]": TOWER_HIGH})
    return components


def test_mfh_component_counts_match_the_layer_sizes(schema):
    values = summary(build_model(config("model=mfh", *BN_TINY), schema, input_dim=10))
    assert values["components"] == expected_mfh_components()
    assert values["parameters"] == {"embeddings": 0, "network": MFH_NETWORK, "total": MFH_NETWORK}


def test_the_default_recipe_has_no_batch_norm_parameters(schema):
    values = summary(build_model(config("model=mfh", *TINY), schema, input_dim=10))
    assert values["components"]["level0"] == LEVEL0 - 2 * 8
    assert values["components"]["towers[new]"] == TOWER_NEW - 3 * 2 * 3


def test_biasnet_counts_its_shared_towers_and_bias_tower(schema):
    values = summary(build_model(config("model=biasnet", *BN_TINY), schema, input_dim=10))
    bias_tower = (3 * 4 + 4) + 2 * 4 + (4 * 3 + 3)  # one-hot of 3 groups → 4 → one logit per behaviour
    assert values["components"] == {"level0": LEVEL0, "tree[behaviour].level1": LEVEL1_EXPERTS + LEVEL1_GATES,
                                    "tree[behaviour].level1.experts": LEVEL1_EXPERTS,
                                    "tree[behaviour].level1.gates": LEVEL1_GATES,
                                    "towers[all]": TOWER_HIGH, "bias_tower": bias_tower}


def test_embeddings_are_counted_apart_from_the_network(schema):
    values = summary(build_model(config("model=hmtl", *TINY), schema))
    assert values["parameters"]["embeddings"] == (30 + 20) * 2
    assert values["parameters"]["total"] == values["parameters"]["embeddings"] + values["parameters"]["network"]


def test_cli_json_reports_the_hand_counted_totals(run_mfh):
    result = run_mfh("model", "describe", "--input-dim", "10", "--format", "json", "model=mfh", *BN_TINY, check=True)
    values = json.loads(result.stdout)
    assert values["model"] == "mfh"
    assert values["components"] == expected_mfh_components()
    assert values["parameters"] == {"embeddings": 0, "network": MFH_NETWORK, "total": MFH_NETWORK}


def test_cli_table_shows_the_tree_with_counts(run_mfh):
    result = run_mfh("model", "describe", "--input-dim", "10", "model=mfh", *BN_TINY, check=True)
    assert f"level2[cmpl]: {LEVEL2_EXPERTS + LEVEL2_GATES:,}" in result.stdout
    assert f"level1: {LEVEL1_EXPERTS + LEVEL1_GATES:,}" in result.stdout
    assert f"high: {TOWER_HIGH:,}" in result.stdout and "tree group/behaviour" in result.stdout


@pytest.mark.slow
def test_cli_without_input_dim_reads_the_schema_from_the_simulator(run_mfh):
    overrides = ["data.rows=3000", "model=hmtl"]
    result = run_mfh("model", "describe", "-f", "json", *overrides, check=True)
    schema = load_dataset(config(*overrides)).schema
    expected = sum(schema.categorical.values()) * config(*overrides).size.embedding_dim
    assert json.loads(result.stdout)["parameters"]["embeddings"] == expected


def test_cli_bad_model_setting_is_one_error_line(run_mfh):
    result = run_mfh("model", "describe", "--input-dim", "10", "model.dense.batch_norm=sometimes")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: model.dense.batch_norm 'sometimes' is unknown: expected authors, torch or none"]
