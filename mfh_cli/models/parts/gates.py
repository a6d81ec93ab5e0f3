"""Gates: per-branch (and shared) weights over experts, and the weighted sum of experts (SPEC §1 [code]).

A gate is optional hidden layers then Linear(input → number of experts it mixes), then softmax; the sigmoid
variant (the authors' `gate_version == 1`) is sigmoid scaled by 1/number of experts. Branch k's gate mixes its
own experts and the shared experts; the PLE shared gate mixes all experts of the layer.

Shape letters: S stacked switchers, B rows, K branches, D input width, E experts, C experts one gate mixes,
H expert width.
"""

from __future__ import annotations

import torch
from torch import nn

from mfh_cli.errors import ConfigError
from mfh_cli.models.parts import fused
from mfh_cli.models.parts.dense import DenseOptions, MLPBank

GATE_KINDS = ("softmax", "sigmoid")


def _normalise(scores: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "softmax":
        return torch.softmax(scores, dim=-1)
    return torch.sigmoid(scores) / scores.shape[-1]


class Gates(nn.Module):
    """The G·n gates of one layer: n gates per stacked input, each mixing C experts → weights [G, B, n, C]."""

    def __init__(self, groups: int, per_group: int, input_dim: int, choices: int, kind: str, hidden: list[int],
                 options: DenseOptions):
        super().__init__()
        if kind not in GATE_KINDS:
            raise ConfigError(f"gate kind '{kind}' is unknown: expected softmax or sigmoid")
        self.kind = kind
        self.scores = MLPBank(groups, per_group, input_dim, [*hidden, choices], options, final_activation=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[G, B, D] → [G, B, n, C], each row of C weights summing to 1 (softmax)."""
        return _normalise(self.scores(x), self.kind)


# From this many expert values per row (E·H) on, B small matmuls beat a broadcast multiply + sum on a CPU
# (measured on 2 cores: 2-4× faster at MFH's level 1, 1.5× slower at compact level 2 with E·H = 128).
MATMUL_MIN_VALUES = 256
# Up to this many expert values per row the fused C++ gates and mixing (trainer.kernels=fused) beat both (Xeon, 1-2
# threads: mfh compact, E·H 128-512); above, at the paper sizes, batched matmul wins (mfh paper step 254 ms with the
# fused mixing, 233 ms without, 244 ms all eager, 2 threads).
FUSED_MIX_MAX_VALUES = 512


def gated_mix(experts: torch.Tensor, branch_scores: torch.Tensor, per_branch: int,
              shared_scores: torch.Tensor | None, kind: str,
              fused_kernel: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The gates' raw scores → weights (softmax or scaled sigmoid) → `mix_experts`: experts [S,B,E,H], branch
    scores [S,B,K,C], shared scores [S,B,1,E] or None → [S,B,K,H], [S,B,H] or None.
    `fused_kernel`: softmax gates and mixing in one C++ loop over the rows (models/parts/fused.py) where it runs:
    E·H up to FUSED_MIX_MAX_VALUES, float32 on the CPU."""
    if fused_kernel and kind == "softmax" and experts.shape[2] * experts.shape[3] <= FUSED_MIX_MAX_VALUES \
            and branch_scores.dtype == experts.dtype and fused.supports(experts):
        return fused.GatedMix.apply(branch_scores, shared_scores, experts, per_branch)
    shared_weights = None if shared_scores is None else _normalise(shared_scores, kind)
    return mix_experts(experts, _normalise(branch_scores, kind), per_branch, shared_weights)


def _row_matmul(weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """[S,B,K,E] @ [S,B,E,H] → [S,B,K,H], batched over (B, S) when the experts are stored rows first (a shared
    input's one matmul writes them so), which spares torch.matmul a copy of the experts."""
    if experts.shape[0] > 1 and experts.transpose(0, 1).is_contiguous():
        return (weights.transpose(0, 1) @ experts.transpose(0, 1)).transpose(0, 1)
    return weights @ experts


def mix_experts(experts: torch.Tensor, branch_weights: torch.Tensor, per_branch: int,
                shared_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Branch k's output = Σ weights over its own experts, then the shared ones; with the shared gate's weights
    [S,B,1,E], also the shared output = Σ over all experts: [S,B,E,H], [S,B,K,C] → [S,B,K,H], [S,B,H] or None."""
    if experts.shape[2] * experts.shape[3] >= MATMUL_MIN_VALUES:
        # One matmul for every gate of the layer: the experts are read once and get one gradient (two products
        # would sum two expert-sized gradients in backward).
        rows = _weights_over_all_experts(branch_weights, per_branch)  # [S,B,K,E]
        if shared_weights is None:
            return _row_matmul(rows, experts), None
        mixed = _row_matmul(torch.cat([rows, shared_weights], dim=2), experts)  # [S,B,K+1,H]
        branch_output, shared_output = mixed.split([rows.shape[2], 1], dim=2)
        return branch_output, shared_output.squeeze(2)
    shared_output = None if shared_weights is None else (shared_weights.squeeze(2).unsqueeze(-1) * experts).sum(2)
    return _mix_branches_broadcast(experts, branch_weights, per_branch), shared_output


def _weights_over_all_experts(weights: torch.Tensor, per_branch: int) -> torch.Tensor:
    """[S,B,K,C] → [S,B,K,E]: branch k's own weights in branch k's columns, zero in the others', then shared."""
    copies, rows, branches, choices = weights.shape
    own_weights, shared_weights = weights.split([per_branch, choices - per_branch], dim=3)
    identity = torch.eye(branches, dtype=weights.dtype, device=weights.device)[:, :, None]
    own_block = (own_weights.unsqueeze(3) * identity).reshape(copies, rows, branches, branches * per_branch)
    return torch.cat([own_block, shared_weights], dim=3)


def _mix_branches_broadcast(experts: torch.Tensor, weights: torch.Tensor, per_branch: int) -> torch.Tensor:
    """`mix_experts`' branch outputs by broadcast products and sums (small experts)."""
    copies, rows, branches, choices = weights.shape
    own_count = branches * per_branch
    own_weights, shared_weights = weights.split([per_branch, choices - per_branch], dim=3)
    # split, not slicing: its backward concatenates instead of zero-filling a full-size gradient per slice
    shared_count = experts.shape[2] - own_count
    own, shared = experts.split([own_count, shared_count], dim=2)
    # One expert to mix (CGC's usual one shared, one own): a broadcast product, no sum over a dimension of 1.
    if shared_count == 1:
        mixed = shared_weights * shared  # [S,B,K,1] * [S,B,1,H]
    else:
        mixed = (shared_weights.unsqueeze(-1) * shared.unsqueeze(2)).sum(dim=3)
    if per_branch == 1:
        mixed = mixed + own_weights * own  # [S,B,K,1] * [S,B,K,H]
    elif per_branch:
        own = own.reshape(copies, rows, branches, per_branch, -1)
        mixed = mixed + (own_weights.unsqueeze(-1) * own).sum(dim=3)
    return mixed
