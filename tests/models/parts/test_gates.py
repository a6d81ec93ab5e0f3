"""Gates and the weighted sum of experts (SPEC §1 [code])."""

from __future__ import annotations

import pytest
import torch

from mfh_cli.errors import ConfigError
from mfh_cli.models.parts.dense import DenseOptions
from mfh_cli.models.parts.gates import Gates, mix_experts

OPTIONS = DenseOptions(batch_norm=None)


def test_softmax_gates_sum_to_one_and_sigmoid_gates_are_scaled_by_the_expert_count():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5)
    softmax = Gates(2, 3, 5, 4, "softmax", [], OPTIONS)
    weights = softmax(x)
    assert weights.shape == (2, 6, 3, 4)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 6, 3), atol=1e-6)
    sigmoid = Gates(2, 3, 5, 4, "sigmoid", [7], OPTIONS)
    assert torch.allclose(sigmoid(x), torch.sigmoid(sigmoid.scores(x)) / 4, atol=1e-7)


def test_unknown_gate_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="gate kind 'argmax'"):
        Gates(1, 1, 3, 2, "argmax", [], OPTIONS)


@pytest.mark.parametrize("size, rows_first", [(4, False), (64, False), (64, True)],
                         ids=["broadcast", "matmul", "matmul-rows-first"])
def test_branch_mix_weights_its_own_experts_then_the_shared_ones(size, rows_first):
    torch.manual_seed(1)
    copies, branches, per_branch, shared = 2, 3, 2, 2
    count = branches * per_branch + shared
    experts = torch.randn(5, copies, count, size).transpose(0, 1) if rows_first else \
        torch.randn(copies, 5, count, size)
    weights = torch.rand(copies, 5, branches, per_branch + shared)
    mixed, shared_output = mix_experts(experts, weights, per_branch)
    assert shared_output is None
    for branch in range(branches):
        chosen = [*range(branch * per_branch, (branch + 1) * per_branch),
                  *range(branches * per_branch, count)]
        expected = sum(weights[:, :, branch, position, None] * experts[:, :, expert]
                       for position, expert in enumerate(chosen))
        assert torch.allclose(mixed[:, :, branch], expected, atol=1e-5)


@pytest.mark.parametrize("size", [5, 64], ids=["broadcast", "matmul"])
def test_shared_mix_weights_every_expert_and_leaves_the_branch_outputs_unchanged(size):
    torch.manual_seed(2)
    experts = torch.randn(2, 3, 4, size)
    branch_weights, shared_weights = torch.rand(2, 3, 2, 3), torch.rand(2, 3, 1, 4)
    branch_output, shared_output = mix_experts(experts, branch_weights, 1, shared_weights)
    expected = sum(shared_weights[:, :, 0, expert, None] * experts[:, :, expert] for expert in range(4))
    assert torch.allclose(shared_output, expected, atol=1e-5)
    assert torch.allclose(branch_output, mix_experts(experts, branch_weights, 1)[0], atol=1e-6)
