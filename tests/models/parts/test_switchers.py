"""Switchers: shapes, PLE wiring as the authors' graph, and every parameter on a gradient path (SPEC §1)."""

from __future__ import annotations

import pytest
import torch

from mfh_cli.errors import ConfigError
from mfh_cli.models.parts.dense import DenseOptions
from mfh_cli.models.parts.switchers import SwitcherSpec, build_switcher

OPTIONS = DenseOptions()  # the authors' BatchNorm
BRANCHES, WIDTH = 3, 6
PLE = SwitcherSpec("ple", [[5], [4]], experts_per_branch=2, shared_experts=2)


def build(spec: SwitcherSpec, copies: int = 1):
    torch.manual_seed(0)
    return build_switcher(spec, copies, BRANCHES, WIDTH, OPTIONS, where="model.levels[0]")


@pytest.mark.parametrize("spec", [
    SwitcherSpec("shared_bottom", [[5, 4]], experts_per_branch=0, shared_experts=1),
    SwitcherSpec("mmoe", [[5, 4]], experts_per_branch=0, shared_experts=3),
    SwitcherSpec("cgc", [[4]], experts_per_branch=1, shared_experts=1, gate="sigmoid", gate_hidden=[3]),
    PLE,
    SwitcherSpec("ple", [[5], [4], [4]], experts_per_branch=1, shared_experts=2),
], ids=lambda spec: f"{spec.kind}-{len(spec.layers)}")
def test_every_switcher_maps_stacked_inputs_to_one_output_per_branch_with_gradients_everywhere(spec):
    switcher = build(spec, copies=2)
    output = switcher(torch.randn(2, 16, WIDTH))
    assert output.shape == (2, 16, BRANCHES, 4)
    (output * torch.randn_like(output)).sum().backward()
    missing = [name for name, parameter in switcher.named_parameters()
               if parameter.grad is None or not parameter.grad.abs().sum() > 0]
    assert missing == []


def test_shared_bottom_gives_every_branch_the_same_output():
    output = build(SwitcherSpec("shared_bottom", [[4]], experts_per_branch=0, shared_experts=1))(
        torch.randn(1, 8, WIDTH))
    assert torch.equal(output[:, :, 0], output[:, :, 1]) and torch.equal(output[:, :, 0], output[:, :, 2])


def test_single_layer_switchers_have_no_shared_gate():
    cgc = build(SwitcherSpec("cgc", [[4]], experts_per_branch=1, shared_experts=1))
    assert cgc.layers[0].shared_gate is None
    ple = build(PLE)
    assert ple.layers[0].shared_gate is not None and ple.layers[1].shared_gate is None


def perturbed_outputs(switcher, x: torch.Tensor, expert: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer-1 branch outputs and final outputs before and after changing one first-layer expert's weights."""
    switcher.eval()  # moving statistics: rows and runs do not interact
    first = switcher.layers[0]
    with torch.no_grad():
        before_layer1, before = first(x, None)[0], switcher(x)
        size = first.experts.output_dim
        first.experts.fused_bank.layers[0].linear.weight[:, :, expert * size:(expert + 1) * size] += 1.0
        after_layer1, after = first(x, None)[0], switcher(x)
    changed_layer1 = (after_layer1 - before_layer1).abs().amax(dim=(0, 1, 3)) > 1e-6  # per branch
    changed = (after - before).abs().amax(dim=(0, 1, 3)) > 1e-6
    return changed_layer1, changed


def test_perturbing_a_shared_expert_changes_every_branch():
    x = torch.randn(1, 10, WIDTH)
    shared_expert = BRANCHES * PLE.experts_per_branch  # the first shared expert
    changed_layer1, changed = perturbed_outputs(build(PLE), x, shared_expert)
    assert changed_layer1.tolist() == [True, True, True]
    assert changed.tolist() == [True, True, True]


@pytest.mark.parametrize("branch", range(BRANCHES))
def test_perturbing_branch_k_expert_changes_only_branch_k_at_layer_1(branch):
    x = torch.randn(1, 10, WIDTH)
    changed_layer1, changed = perturbed_outputs(build(PLE), x, branch * PLE.experts_per_branch)
    assert changed_layer1.tolist() == [index == branch for index in range(BRANCHES)]
    # Layer 2: the shared gate of layer 1 mixes every expert into the next shared experts (SPEC §1).
    assert changed.tolist() == [True, True, True]


def test_later_layer_branch_experts_read_their_own_branch_output():
    switcher = build(PLE).eval()
    x = torch.randn(1, 10, WIDTH)
    second = switcher.layers[1]
    branch_input = torch.randn(BRANCHES, 10, 5)
    shared_input = torch.randn(1, 10, 5)
    with torch.no_grad():
        before = second(shared_input, branch_input)[0]
        changed_input = branch_input.clone()
        changed_input[1] += 1.0
        after = second(shared_input, changed_input)[0]
    assert ((after - before).abs().amax(dim=(0, 1, 3)) > 1e-6).tolist() == [False, True, False]
    assert switcher(x).shape == (1, 10, BRANCHES, 4)


@pytest.mark.parametrize("spec, message", [
    (SwitcherSpec("moe", [[4]]), "kind 'moe' is unknown"),
    (SwitcherSpec("cgc", [[4], [4]], 1, 1), "exactly one layer"),
    (SwitcherSpec("mmoe", [[4]], 1, 2), "experts_per_branch must be 0"),
    (SwitcherSpec("ple", [[]], 1, 1), "positive sizes"),
    (SwitcherSpec("ple", [[4]], 0, 0), "at least one expert"),
])
def test_bad_switcher_settings_are_config_errors_naming_the_key(spec, message):
    with pytest.raises(ConfigError, match=message) as error:
        build(spec)
    assert "model.levels[0]" in str(error.value)
