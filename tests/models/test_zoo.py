"""The nine models: shapes on both task grids, own-group readout, and the relations between models (SPEC §2)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from mfh_cli.errors import ConfigError
from mfh_cli.models import build_model
from tests.models.model_helpers import MODELS, TINY, batch, config


def test_the_nine_models_of_the_spec_have_a_config_file():
    assert set(MODELS) >= {"mfh", "hmtl", "heter_abl", "flat", "biasnet", "shared_bottom", "mmoe", "cgc", "ple"}


@pytest.mark.parametrize("tasks, behaviours", [("play", ["cmpl", "finish", "skip"]),
                                               ("interactive", ["like", "share", "comment", "follow"])])
@pytest.mark.parametrize("name", MODELS)
def test_every_model_gives_one_output_per_behaviour_and_trains_every_parameter(schema, name, tasks, behaviours):
    torch.manual_seed(0)
    model = build_model(config(f"model={name}", f"tasks={tasks}"), schema)
    assert model.behaviours == behaviours and model.groups == ["new", "low", "high"]
    assert model.kinds == [schema.behaviours[behaviour] for behaviour in behaviours]
    categorical, dense, group = batch(schema, 48)
    outputs = model(categorical, dense, group)
    assert outputs.shape == (48, len(behaviours)) and torch.isfinite(outputs).all()
    (outputs * torch.randn_like(outputs)).sum().backward()
    without_gradient = [key for key, parameter in model.named_parameters()
                        if parameter.grad is None or not parameter.grad.abs().sum() > 0]
    assert without_gradient == []


@pytest.mark.parametrize("name", MODELS)
def test_paper_size_models_take_a_given_input_width(schema, name):
    model = build_model(config(f"model={name}", "size=paper", "tasks=interactive"), schema, input_dim=24)
    assert model.embedding is None
    assert model.forward_features(torch.randn(8, 24), torch.arange(8) % 3).shape == (8, 4)


def test_task_names_follow_the_grid(schema):
    assert build_model(config("model=mfh"), schema).tasks == [
        f"{behaviour}_{group}" for behaviour in ("cmpl", "finish", "skip") for group in ("new", "low", "high")]
    assert build_model(config("model=biasnet"), schema).tasks == ["cmpl", "finish", "skip"]


def tower_gradient_norms(model, group_index: int, schema) -> dict[str, float]:
    categorical, dense, _ = batch(schema, 6)
    group = torch.full((6,), group_index)
    model.zero_grad()
    model(categorical, dense, group).sum().backward()
    return {name: sum(float(parameter.grad.abs().sum()) for parameter in bank.parameters()
                      if parameter.grad is not None) for name, bank in model.towers.banks.items()}


@pytest.mark.parametrize("name", ["mfh", "hmtl", "flat", "heter_abl", "mmoe"])
def test_rows_of_group_new_train_only_the_new_towers(schema, name):
    model = build_model(config(f"model={name}"), schema)
    norms = tower_gradient_norms(model, schema.groups.index("new"), schema)
    assert norms["new"] > 0
    assert norms["low"] == 0 and norms["high"] == 0


def test_rows_are_read_from_their_own_groups_towers(schema):
    torch.manual_seed(0)
    model = build_model(config("model=mfh"), schema).eval()
    categorical, dense, _ = batch(schema, 1)
    with torch.no_grad():
        outputs = {group: model(categorical, dense, torch.tensor([group])) for group in range(3)}
        with_low_changed = {}
        for parameter in model.towers.banks["low"].parameters():
            parameter.add_(0.5)
        for group in range(3):
            with_low_changed[group] = model(categorical, dense, torch.tensor([group]))
    assert torch.equal(outputs[0], with_low_changed[0]) and torch.equal(outputs[2], with_low_changed[2])
    assert not torch.equal(outputs[1], with_low_changed[1])


def test_hmtl_equals_mfh_restricted_to_one_tree(schema):
    """MFH with hmtl's weights on its first tree and zero level-2 experts on its second tree is hmtl."""
    torch.manual_seed(0)
    overrides = ["model.dense.batch_norm=none"]
    hmtl = build_model(config("model=hmtl", *overrides), schema)
    mfh = build_model(config("model=mfh", *overrides), schema)
    mfh_parameters = dict(mfh.named_parameters())
    with torch.no_grad():
        for name, parameter in hmtl.named_parameters():
            target = mfh_parameters[name]
            tree_one = parameter.shape[0]
            target[:tree_one] = parameter  # stacked switchers: tree 1's copies come first
            if tree_one != target.shape[0]:
                is_last_level = name.startswith(f"forest.stages.{len(mfh.forest.stages) - 1}.")
                target[tree_one:] = 0.0 if is_last_level else target[tree_one:]
    categorical, dense, group = batch(schema, 30)
    assert torch.allclose(mfh(categorical, dense, group), hmtl(categorical, dense, group), atol=1e-6)


def test_heter_abl_gives_every_group_the_high_activity_towers(schema):
    heter = build_model(config("model=heter_abl"), schema)
    mfh = build_model(config("model=mfh"), schema)
    high = [tuple(parameter.shape) for parameter in mfh.towers.banks["high"].parameters()]
    for group in ("new", "low", "high"):
        assert [tuple(parameter.shape) for parameter in heter.towers.banks[group].parameters()] == high
    assert [tuple(p.shape) for p in mfh.towers.banks["new"].parameters()] != high


def test_biasnet_outputs_depend_on_the_group_only_through_the_bias_tower(schema):
    torch.manual_seed(0)
    model = build_model(config("model=biasnet"), schema).eval()
    categorical, dense, _ = batch(schema, 1)
    rows = (categorical.repeat(3, 1), dense.repeat(3, 1), torch.arange(3))
    with torch.no_grad():
        outputs = model(*rows)
        bias = model.bias(rows[2])
        assert not torch.allclose(outputs[0], outputs[1])
        assert torch.allclose(outputs - bias, (outputs - bias)[0].expand(3, -1), atol=1e-6)
        last = model.bias.mlp.layers[-1].linear
        last.weight.zero_(), last.bias.zero_()
        unbiased = model(*rows)
    assert torch.allclose(unbiased, unbiased[0].expand(3, -1), atol=1e-6)


@pytest.mark.parametrize("override, message", [
    ("model.trees=[behaviour/region]", "region is not a facet of tasks 'play' \\(tasks.facets: behaviour, group\\)"),
    ("model.trees=[group]", "every model splits by behaviour"),
    ("model.trees=[behaviour/group/behaviour]", "exactly once"),
    ("model.levels.0.kind=moe", "model.levels\\[0\\].kind 'moe'"),
    ("model.towers.new=[0]", "model.towers.new"),
    ("model.dense.batch_norm=batch", "model.dense.batch_norm"),
    ("model.trees=[group/behaviour,behaviour+group]", "same number of levels"),
])
def test_bad_model_configs_are_one_line_config_errors(schema, override, message):
    with pytest.raises(ConfigError, match=message) as error:
        build_model(config("model=mfh", override), schema)
    assert "\n" not in str(error.value)


def test_behaviours_missing_from_the_data_are_a_config_error(schema):
    narrow = type(schema)(schema.categorical, schema.dense, {"cmpl": "regression"}, schema.groups)
    with pytest.raises(ConfigError, match="tasks.behaviours: finish, skip"):
        build_model(config("model=mfh"), narrow)


def test_tiny_preset_composes_for_every_model(schema):
    for name in MODELS:
        assert build_model(config(f"model={name}", *TINY), schema)(*batch(schema, 6)).shape == (6, 3)


def test_the_groups_of_the_dataset_name_the_tasks(schema):
    renamed = type(schema)(schema.categorical, schema.dense, schema.behaviours, ["cold", "warm"])
    model = build_model(config("model=mfh", "+size.towers.all=[4]"), renamed)
    assert model.tasks == [f"{behaviour}_{group}" for behaviour in ("cmpl", "finish", "skip")
                           for group in ("cold", "warm")]
    assert model(*batch(renamed, 6)).shape == (6, 3)


def test_a_tasks_config_without_the_group_facet_allows_only_models_that_do_not_split_by_group(schema):
    behaviours_only = "tasks.facets=[behaviour]"
    with pytest.raises(ConfigError, match="group is not a facet of tasks 'play' \\(tasks.facets: behaviour\\)"):
        build_model(config("model=hmtl", behaviours_only), schema)
    assert build_model(config("model=biasnet", behaviours_only), schema).tasks == ["cmpl", "finish", "skip"]
    with pytest.raises(ConfigError, match="model.towers needs key 'all'"):  # mfh's one tree there: towers unsized
        build_model(config("model=mfh", behaviours_only), schema)


# A third facet (issue 14): behaviour × user group × scenario (conf/tasks/play_scenario.yaml).

BEHAVIOURS, GROUPS, SCENARIOS = ["cmpl", "finish", "skip"], ["new", "low", "high"], ["a", "b"]


@pytest.fixture
def scenario_schema(schema):
    return replace(schema, scenarios=list(SCENARIOS))


def cells_batch(rows: int) -> torch.Tensor:
    """Every cell (group × scenario) of the grid in turn."""
    return torch.arange(rows) % (len(GROUPS) * len(SCENARIOS))


def test_three_facet_mfh_has_one_tree_per_facet_and_reads_each_row_from_its_own_cells_tower(scenario_schema):
    torch.manual_seed(0)
    model = build_model(config("model=mfh", "tasks=play_scenario", *TINY), scenario_schema).eval()
    assert [layout.name for layout in model.forest.layouts] == [
        "behaviour/group+scenario", "group/behaviour+scenario", "scenario/behaviour+group"]
    assert [layout.branches for layout in model.forest.layouts] == [[3, 6], [3, 6], [2, 9]]
    assert model.tasks == [f"{b}_{g}_{s}" for b in BEHAVIOURS for g in GROUPS for s in SCENARIOS]
    assert model.cells == [f"{g}_{s}" for g in GROUPS for s in SCENARIOS]
    assert {name: bank.groups for name, bank in model.towers.banks.items()} == dict.fromkeys(GROUPS, 6)
    categorical, dense, _ = batch(scenario_schema, 24)
    cell = cells_batch(24)
    with torch.no_grad():
        outputs = model(categorical, dense, cell)
        leaves = model.forest(model.embedding(categorical, dense)).view(3, 3, 2, 24, -1)  # [b, g, s, B, H]
        for row in range(24):
            group, scenario = divmod(int(cell[row]), 2)
            bank = model.towers.banks[GROUPS[group]]  # towers (behaviour, scenario) of the row's group
            towers = bank(leaves[:, group].reshape(6, 24, -1)).view(3, 2, 24)
            assert torch.equal(outputs[row], towers[:, scenario, row]), row


def test_a_two_facet_model_on_the_three_facet_grid_is_the_two_facet_model_read_per_cell(scenario_schema):
    two_trees = "model.trees=[behaviour/group,group/behaviour]"
    torch.manual_seed(0)
    on_three = build_model(config("model=mfh", "tasks=play_scenario", two_trees, *TINY), scenario_schema).eval()
    torch.manual_seed(0)
    on_two = build_model(config("model=mfh", "tasks=play", *TINY), scenario_schema).eval()
    assert on_three.parameter_counts() == on_two.parameter_counts()
    assert on_three.tasks == on_two.tasks and len(on_three.cells) == 6
    categorical, dense, _ = batch(scenario_schema, 24)
    cell = cells_batch(24)
    with torch.no_grad():  # its prediction for cell g × s is its g tower's
        assert torch.equal(on_three(categorical, dense, cell), on_two(categorical, dense, cell // 2))


@pytest.mark.parametrize("name", MODELS)
def test_every_model_builds_on_the_three_facet_grid(scenario_schema, name):
    model = build_model(config(f"model={name}", "tasks=play_scenario", *TINY), scenario_schema)
    categorical, dense, _ = batch(scenario_schema, 12)
    assert model(categorical, dense, cells_batch(12)).shape == (12, 3)
    split_by = {facet for layout in model.forest.layouts for level in layout.levels for facet in level}
    assert len(model.tasks) == 3 * (3 if "group" in split_by else 1) * (2 if "scenario" in split_by else 1)


def test_a_grid_with_a_facet_the_dataset_lacks_is_one_error_naming_it(schema):
    with pytest.raises(ConfigError, match="tasks.facets: dataset .* has no scenario values"):
        build_model(config("model=mfh", "tasks=play_scenario"), schema)
