"""Dense banks and the authors' BatchNorm (SPEC §1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mfh_cli.errors import ConfigError
from mfh_cli.models.parts.dense import BATCH_NORM_STYLES, BatchNorm, DenseOptions, MLPBank, StackedLinear


def test_authors_batch_norm_uses_epsilon_1e3_and_the_biased_moving_variance():
    torch.manual_seed(0)
    x = torch.randn(1, 16, 5, dtype=torch.float64) * 3 + 1
    norm = BatchNorm(1, 5, BATCH_NORM_STYLES["authors"]).double()
    output = norm(x)
    mean, biased = x[0].mean(0), x[0].var(0, unbiased=False)
    assert torch.allclose(output[0], (x[0] - mean) / torch.sqrt(biased + 1e-3), atol=1e-10)
    assert torch.allclose(norm.running_mean, 0.01 * mean, atol=1e-12)
    assert torch.allclose(norm.running_var, 0.99 + 0.01 * biased, atol=1e-12)


def test_torch_style_batch_norm_matches_pytorch_batchnorm1d_in_training_and_eval():
    torch.manual_seed(0)
    ours, reference = BatchNorm(1, 4, BATCH_NORM_STYLES["torch"]), nn.BatchNorm1d(4)
    for step in range(3):
        x = torch.randn(1, 32, 4) * (step + 1)
        assert torch.allclose(ours(x)[0], reference(x[0]), atol=1e-5)
    assert torch.allclose(ours.running_var, reference.running_var, atol=1e-6)
    ours.eval(), reference.eval()
    x = torch.randn(1, 8, 4)
    assert torch.allclose(ours(x)[0], reference(x[0]), atol=1e-5)


def test_stacked_batch_norm_normalises_each_group_and_channel_over_rows():
    x = torch.randn(3, 64, 2) * torch.tensor([1.0, 5.0, 9.0]).view(3, 1, 1)
    output = BatchNorm(3, 2, BATCH_NORM_STYLES["authors"])(x)
    assert torch.allclose(output.mean(dim=1), torch.zeros(3, 2), atol=1e-5)
    assert torch.allclose(output.var(dim=1, unbiased=False), torch.ones(3, 2), atol=1e-3)


def test_a_shared_input_gives_the_same_result_as_its_copies():
    linear = StackedLinear(4, 6, 3)
    x = torch.randn(1, 10, 6)
    assert torch.allclose(linear(x.expand(4, -1, -1)), linear(x.repeat(4, 1, 1)), atol=1e-6)


def test_mlp_bank_equals_one_mlp_per_group_and_member():
    torch.manual_seed(1)
    options = DenseOptions(batch_norm=None)
    bank = MLPBank(2, 3, 5, [4, 2], options, final_activation=False).double()
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    output = bank(x)
    first, second = bank.layers
    for group in range(2):
        for member in range(3):
            columns = slice(member * 4, (member + 1) * 4)
            linear = first.linear
            hidden = torch.relu(x[group] @ linear.weight[group, :, columns] + linear.bias[group, 0, columns])
            index = group * 3 + member
            expected = hidden @ second.linear.weight[index] + second.linear.bias[index, 0]
            assert torch.allclose(output[group, :, member], expected, atol=1e-6)


def test_bad_dense_options_name_the_key():
    with pytest.raises(ConfigError, match="model.dense.batch_norm"):
        DenseOptions.from_config("relu", "tensorflow", 0.0)
    with pytest.raises(ConfigError, match="model.dense.activation"):
        DenseOptions.from_config("swishy", "none", 0.0)
