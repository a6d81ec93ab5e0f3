"""The experts of one extraction layer (CGC/PLE/MMoE), fused: experts that read the same input are one matmul.

Expert order in the output: branch 0's own experts, branch 1's, …, then the shared experts (SPEC §1).
On a switcher's first layer every expert reads the layer input, so all E experts of all S stacked switchers
are one `baddbmm` of [S, B, D] by [S, D, E·H]. On later PLE layers branch k's experts read branch k's gated
output and the shared experts read the shared gate's output: two banks, one matmul each.

Shape letters: S stacked switchers, B rows, K branches, D input width, E experts, H expert width.
"""

from __future__ import annotations

import torch
from torch import nn

from mfh_cli.models.parts.dense import DenseOptions, MLPBank


class Experts(nn.Module):
    """All experts of one extraction layer of S stacked switchers with K branches."""

    def __init__(self, copies: int, branches: int, per_branch: int, shared: int, input_dim: int,
                 sizes: list[int], options: DenseOptions, branch_inputs: bool):
        super().__init__()
        self.copies, self.branches, self.per_branch, self.shared = copies, branches, per_branch, shared
        self.count = branches * per_branch + shared
        self.output_dim = sizes[-1]
        if branch_inputs:
            self.branch_bank = MLPBank(copies * branches, per_branch, input_dim, sizes, options, True) \
                if per_branch else None
            self.shared_bank = MLPBank(copies, shared, input_dim, sizes, options, True) if shared else None
            self.fused_bank = None
        else:
            self.branch_bank = self.shared_bank = None
            self.fused_bank = MLPBank(copies, self.count, input_dim, sizes, options, True)

    def forward(self, shared_input: torch.Tensor, branch_input: torch.Tensor | None) -> torch.Tensor:
        """shared_input [S, B, D], branch_input [S·K, B, D] (None on a first layer) → experts [S, B, E, H]."""
        if self.fused_bank is not None:
            return self.fused_bank(shared_input)
        parts = []
        if self.branch_bank is not None:
            own = self.branch_bank(branch_input)  # [S·K, B, per_branch, H]
            rows = own.shape[1]
            own = own.view(self.copies, self.branches, rows, self.per_branch, -1).transpose(1, 2)
            parts.append(own.reshape(self.copies, rows, self.branches * self.per_branch, -1))
        if self.shared_bank is not None:
            parts.append(self.shared_bank(shared_input))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
