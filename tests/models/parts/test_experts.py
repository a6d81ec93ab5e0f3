"""Fused experts equal a per-expert loop (to 1e-6), with BatchNorm after the activation (SPEC §1)."""

from __future__ import annotations

import torch

from mfh_cli.models.parts.dense import BATCH_NORM_STYLES, DenseOptions
from mfh_cli.models.parts.experts import Experts

OPTIONS = DenseOptions(batch_norm=BATCH_NORM_STYLES["authors"])


def one_expert(layer, x: torch.Tensor, group: int, member: int, per_group: int) -> torch.Tensor:
    """Member `member` of stacked group `group` of a bank's first layer, written out alone:
    Linear → ReLU → BatchNorm (training statistics, epsilon 1e-3)."""
    size = layer.linear.weight.shape[2] // per_group
    columns = slice(member * size, (member + 1) * size)
    channels = slice((group * per_group + member) * size, (group * per_group + member + 1) * size)
    hidden = torch.relu(x @ layer.linear.weight[group, :, columns] + layer.linear.bias[group, 0, columns])
    mean, variance = hidden.mean(0), hidden.var(0, unbiased=False)
    return (hidden - mean) / torch.sqrt(variance + 1e-3) * layer.batch_norm.weight[channels] + \
        layer.batch_norm.bias[channels]


def randomise(module: torch.nn.Module) -> None:
    """Non-trivial BatchNorm scales and shifts, so that slicing mistakes show."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.uniform_(-1.0, 1.0)


def test_first_layer_experts_equal_a_loop_over_experts():
    torch.manual_seed(0)
    copies, branches, per_branch, shared, width, size = 2, 3, 2, 2, 5, 4
    experts = Experts(copies, branches, per_branch, shared, width, [size], OPTIONS, branch_inputs=False).double()
    randomise(experts)
    x = torch.randn(copies, 16, width, dtype=torch.float64)
    fused = experts(x, None)
    layer = experts.fused_bank.layers[0]
    count = branches * per_branch + shared
    assert fused.shape == (copies, 16, count, size)
    for copy in range(copies):
        for expert in range(count):
            expected = one_expert(layer, x[copy], copy, expert, count)
            assert torch.allclose(fused[copy, :, expert], expected, atol=1e-6)


def test_later_layer_experts_read_their_branch_input_and_equal_a_loop():
    torch.manual_seed(1)
    copies, branches, per_branch, shared, width, size = 1, 3, 2, 1, 4, 3
    experts = Experts(copies, branches, per_branch, shared, width, [size], OPTIONS, branch_inputs=True).double()
    randomise(experts)
    shared_input = torch.randn(copies, 12, width, dtype=torch.float64)
    branch_input = torch.randn(copies * branches, 12, width, dtype=torch.float64)
    fused = experts(shared_input, branch_input)
    own, common = experts.branch_bank.layers[0], experts.shared_bank.layers[0]
    for branch in range(branches):
        for member in range(per_branch):
            expected = one_expert(own, branch_input[branch], branch, member, per_branch)
            assert torch.allclose(fused[0, :, branch * per_branch + member], expected, atol=1e-6)
    assert torch.allclose(fused[0, :, branches * per_branch], one_expert(common, shared_input[0], 0, 0, 1), atol=1e-6)


def test_two_layer_experts_equal_a_loop():
    torch.manual_seed(2)
    options = DenseOptions(batch_norm=None)
    experts = Experts(1, 2, 1, 1, 4, [5, 3], options, branch_inputs=False).double()
    x = torch.randn(1, 9, 4, dtype=torch.float64)
    fused = experts(x, None)
    first, second = experts.fused_bank.layers
    for expert in range(3):
        hidden = torch.relu(x[0] @ first.linear.weight[0, :, expert * 5:(expert + 1) * 5]
                            + first.linear.bias[0, 0, expert * 5:(expert + 1) * 5])
        expected = torch.relu(hidden @ second.linear.weight[expert] + second.linear.bias[expert, 0])
        assert torch.allclose(fused[0, :, expert], expected, atol=1e-6)


def matmul_calls(function) -> int:
    with torch.profiler.profile() as profiler:
        function()
    return sum(event.name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm") for event in profiler.events())


def test_all_experts_reading_one_input_are_one_matmul():
    experts = Experts(2, 3, 2, 2, 5, [4], OPTIONS, branch_inputs=False)
    stacked = torch.randn(2, 16, 5)
    shared = torch.randn(1, 16, 5).expand(2, -1, -1)  # every stacked switcher reads the same input
    assert matmul_calls(lambda: experts(stacked, None)) == 1
    assert matmul_calls(lambda: experts(shared, None)) == 1
