"""Dense layers computed as banks: G groups of n MLPs of one shape, each layer one batched matmul.

Every MLP in the zoo (level 0, experts, gate hidden layers, towers, the bias tower, the per-branch MLPs) is an
`MLPBank`: the n MLPs of a group read that group's input, so a layer of all of them is a single `baddbmm`.
A hidden layer is Linear → activation → BatchNorm → dropout, BN *after* the activation as in the authors'
graph (SPEC §1); output layers (logits, gate scores) are Linear only.

Shape letters: G groups (stacked inputs), B rows, D input width, n MLPs per group, H layer width.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mfh_cli.errors import ConfigError
from mfh_cli.models.parts import fused

ACTIVATIONS = {"relu": F.relu, "leaky_relu": F.leaky_relu, "elu": F.elu, "gelu": F.gelu, "silu": F.silu,
               "tanh": torch.tanh, "sigmoid": torch.sigmoid}


@dataclass(frozen=True)
class BatchNormStyle:
    """How BatchNorm estimates its moving statistics: `moving = decay·moving + (1−decay)·batch`."""

    epsilon: float
    decay: float
    biased_running_variance: bool


# SPEC §1: the authors' tf.layers.batch_normalization: epsilon 1e-3, decay 0.99 (TF's default momentum; their
# value is a flag we cannot see), moving variance fed the *biased* batch variance. PyTorch's nn.BatchNorm1d:
# epsilon 1e-5, decay 0.9, unbiased moving variance. Training normalises with the biased batch variance in both.
BATCH_NORM_STYLES = {
    "authors": BatchNormStyle(epsilon=1e-3, decay=0.99, biased_running_variance=True),
    "torch": BatchNormStyle(epsilon=1e-5, decay=0.9, biased_running_variance=False),
}


@dataclass(frozen=True)
class DenseOptions:
    """Options shared by every hidden layer of a model: activation, BatchNorm style (None = off), dropout."""

    activation: str = "relu"
    batch_norm: BatchNormStyle | None = BATCH_NORM_STYLES["authors"]
    dropout: float = 0.0

    @classmethod
    def from_config(cls, activation: str, batch_norm: str, dropout: float) -> DenseOptions:
        """Options from `model.dense` (`batch_norm`: authors | torch | none); bad values raise ConfigError."""
        if activation not in ACTIVATIONS:
            raise ConfigError(f"model.dense.activation '{activation}' is unknown: expected one of "
                              f"{', '.join(ACTIVATIONS)}")
        if batch_norm != "none" and batch_norm not in BATCH_NORM_STYLES:
            raise ConfigError(f"model.dense.batch_norm '{batch_norm}' is unknown: expected authors, torch or none")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"model.dense.dropout {dropout} is out of range: expected 0 <= dropout < 1")
        return cls(activation, BATCH_NORM_STYLES.get(batch_norm), float(dropout))


class _ContiguousGradient(torch.autograd.Function):
    """Identity whose backward makes the gradient contiguous: PyTorch's CPU BatchNorm backward is 3-7× slower on
    a strided gradient (a slice of a `cat`'s gradient, as PLE's experts get), far more than the copy costs."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> torch.Tensor:
        return gradient.contiguous()


class BatchNorm(nn.Module):
    """BatchNorm of [G, B, C] over the rows B, one channel per (group, unit), with a chosen `BatchNormStyle`.

    Runs PyTorch's fused kernel on a [B, G·C] view (a copy when G > 1); the moving statistics are updated here
    from the kernel's batch mean and inverse std, so that the moving variance can be the biased one.
    """

    def __init__(self, groups: int, channels: int, style: BatchNormStyle):
        super().__init__()
        self.style = style
        self.weight = nn.Parameter(torch.ones(groups * channels))
        self.bias = nn.Parameter(torch.zeros(groups * channels))
        self.register_buffer("running_mean", torch.zeros(groups * channels))
        self.register_buffer("running_var", torch.ones(groups * channels))
        self.batches_averaged: int | None = None  # set by `precise_statistics`: equal-weight averaging

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups, rows, channels = x.shape
        # squeeze, not x[0]: indexing's backward zero-fills a full-size gradient, squeeze's is a view
        flat = x.squeeze(0) if groups == 1 else x.transpose(0, 1).reshape(rows, groups * channels)  # [B, G·C]
        if self.training:
            output, mean, inverse_std = torch.native_batch_norm(flat, self.weight, self.bias, None, None, True,
                                                                0.0, self.style.epsilon)
            output = _ContiguousGradient.apply(output)
            self.update_moving_statistics(mean, inverse_std, rows)
        else:
            output = torch.batch_norm(flat, self.weight, self.bias, self.running_mean, self.running_var, False,
                                      0.0, self.style.epsilon, False)
        return output.unsqueeze(0) if groups == 1 else output.view(rows, groups, channels).transpose(0, 1)

    def forward_after_relu(self, z: torch.Tensor) -> torch.Tensor:
        """BatchNorm(ReLU(z)) in training, fused into one kernel (models/parts/fused.py): [G, B, C] → [G, B, C]."""
        output, mean, inverse_std = fused.ReluBatchNorm.apply(z, self.weight, self.bias, self.style.epsilon)
        self.update_moving_statistics(mean, inverse_std, z.shape[1])
        return output

    @torch.no_grad()
    def forward_eval_after_relu(self, z: torch.Tensor) -> torch.Tensor:
        """BatchNorm(ReLU(z)) in eval mode, in place in z, in one fused pass (no gradient): [G, B, C] → [G, B, C].
        Scale and shift are formed as PyTorch's CPU kernel forms them (invstd·weight, bias − mean·that)."""
        scale = (1.0 / torch.sqrt(self.running_var + self.style.epsilon)) * self.weight
        shift = self.bias - self.running_mean * scale
        return fused.relu_affine_(z, scale, shift)

    @torch.no_grad()
    def update_moving_statistics(self, mean: torch.Tensor, inverse_std: torch.Tensor, rows: int) -> None:
        """moving = decay·moving + (1−decay)·batch, from the batch mean and inverse std of a training pass; while
        `batches_averaged` counts (precise statistics), the k-th batch enters with weight 1/k: an equal average."""
        variance = inverse_std.pow(-2) - self.style.epsilon  # the biased batch variance
        if not self.style.biased_running_variance and rows > 1:
            variance = variance * (rows / (rows - 1))
        weight = 1.0 - self.style.decay
        if self.batches_averaged is not None:
            self.batches_averaged += 1
            weight = 1.0 / self.batches_averaged
        self.running_mean.lerp_(mean, weight)
        self.running_var.lerp_(variance, weight)


@contextlib.contextmanager
def precise_statistics(model: nn.Module) -> Iterator[int]:
    """Within the block, every BatchNorm of `model` replaces its moving statistics by the equal-weight average of
    the batches it then sees in training mode (precise BatchNorm, Wu & Johnson 2021): population statistics of
    the final weights, not a decayed average over weights that moved. Yields the number of BatchNorm layers."""
    layers = [module for module in model.modules() if isinstance(module, BatchNorm)]
    for layer in layers:
        layer.batches_averaged = 0
    try:
        yield len(layers)
    finally:
        for layer in layers:
            layer.batches_averaged = None


class StackedLinear(nn.Module):
    """G independent Linear layers D → H applied to [G, B, D] in one `baddbmm`."""

    def __init__(self, groups: int, input_dim: int, output_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(groups, input_dim, output_dim))
        self.bias = nn.Parameter(torch.empty(groups, 1, output_dim))
        # PyTorch's nn.Linear default: weight and bias uniform in ±1/√fan_in (the authors' initializer is a flag
        # of theirs we cannot see; they initialised weights and biases with the same one).
        bound = 1.0 / math.sqrt(input_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[G, B, D] → [G, B, H]."""
        groups, rows, _ = x.shape
        if groups > 1 and x.stride(0) == 0:
            # One input read by every group (an expanded [B, D]): one matmul into rows-first memory [B, G·H],
            # which the BatchNorm that follows reads without a copy.
            output = torch.addmm(self.bias.view(1, -1), x[0], self.weight.transpose(0, 1).reshape(x.shape[2], -1))
            return output.view(rows, groups, -1).transpose(0, 1)
        return torch.baddbmm(self.bias, x, self.weight)


class DenseLayer(nn.Module):
    """One layer of G stacked Linears; a hidden layer adds activation → BatchNorm → dropout (SPEC §1).

    With `use_fused` on (fused.use_fused_kernels), a ReLU → BatchNorm layer trains through the fused kernel and
    predicts (eval mode, no gradient) through a fused in-place pass; other activations, bf16 and GPUs take the eager
    path, which is the reference."""

    def __init__(self, groups: int, input_dim: int, output_dim: int, options: DenseOptions, hidden: bool):
        super().__init__()
        self.linear = StackedLinear(groups, input_dim, output_dim)
        self.activation = ACTIVATIONS[options.activation] if hidden else None
        self.batch_norm = BatchNorm(groups, output_dim, options.batch_norm) \
            if hidden and options.batch_norm is not None else None
        self.dropout = options.dropout if hidden else 0.0
        self.fusable = self.batch_norm is not None and options.activation == "relu"
        self.use_fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        if self.use_fused and fused.supports(x):
            if self.training:
                x = self.batch_norm.forward_after_relu(x)
                return F.dropout(x, self.dropout, self.training) if self.dropout else x
            if not torch.is_grad_enabled():  # eval without a gradient (predict): in place in the matmul's output
                return self.batch_norm.forward_eval_after_relu(x)
        if self.activation is not None:
            x = self.activation(x)
        if self.batch_norm is not None:
            x = self.batch_norm(x)
        if self.dropout:
            x = F.dropout(x, self.dropout, self.training)
        return x


class MLPBank(nn.Module):
    """G groups × n MLPs of the same layer sizes; the n MLPs of group g all read input g.

    The first layer of a group's n MLPs is one Linear D → n·H₁ (one matmul for all of them); deeper layers are
    one `baddbmm` over the G·n MLPs. `final_activation=False` leaves the last layer linear (logits, gate scores).
    Example: `MLPBank(2, 3, 16, [8], options, True)(torch.randn(2, 5, 16)).shape == (2, 5, 3, 8)`.
    """

    def __init__(self, groups: int, per_group: int, input_dim: int, sizes: list[int], options: DenseOptions,
                 final_activation: bool):
        super().__init__()
        if not sizes:
            raise ValueError("an MLPBank needs at least one layer")
        self.groups, self.per_group, self.output_dim = groups, per_group, sizes[-1]
        last = len(sizes) - 1
        layers = [DenseLayer(groups, input_dim, per_group * sizes[0], options, final_activation or last > 0)]
        for index in range(1, len(sizes)):
            layers.append(DenseLayer(groups * per_group, sizes[index - 1], sizes[index], options,
                                     final_activation or index < last))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[G, B, D] → [G, B, n, H]."""
        groups, rows, n = self.groups, x.shape[1], self.per_group
        x = self.layers[0](x)  # [G, B, n·H₁]
        if len(self.layers) == 1:
            return x.view(groups, rows, n, -1)
        if n > 1:  # deeper layers batch over the G·n MLPs: [G·n, B, H]
            x = x.view(groups, rows, n, -1).transpose(1, 2).reshape(groups * n, rows, -1)
        for layer in self.layers[1:]:
            x = layer(x)
        return x.view(groups, n, rows, -1).transpose(1, 2)

