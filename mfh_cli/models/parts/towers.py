"""Task towers: one MLP per task ending in one logit, sizes chosen per user group (heterogeneous, SPEC §2).

A task is a behaviour × a cell of the model's other facets (user group, then any further one such as the
scenario). The towers of one user group (one per behaviour × further cell) are one `MLPBank`. Every tower runs
on every row, as in the authors' graph (so BatchNorm statistics are the batch's); a row's outputs are then read
from its own cell's towers, so other cells' towers get no gradient from it (SPEC §3). At the appendix sizes the
towers are ~5% of the forward FLOPs, so running them on all rows costs little.

Shape letters: T tasks (behaviour-major: task t = (behaviour·G + group)·R + further cell), B rows, Tb behaviours,
G groups (the banks), R cells of the further facets within a group (1 for the two-facet grids), H leaf width.
"""

from __future__ import annotations

import torch
from torch import nn

from mfh_cli.models.parts.dense import DenseOptions, MLPBank


class Towers(nn.Module):
    """Per-group banks of per-behaviour (× further cell) towers; `grouped=False`: one bank shared by all groups.

    Example: `Towers(8, 3, {"new": [4], "high": [4]}, options, True, cells_per_group=2)(torch.randn(12, 5, 8),
    torch.tensor([0, 1, 2, 3, 0])).shape == (5, 3)`: row r reads the towers of its cell (group = cell // 2).
    """

    def __init__(self, input_dim: int, behaviours: int, sizes_by_group: dict[str, list[int]],
                 options: DenseOptions, grouped: bool, cells_per_group: int = 1):
        super().__init__()
        self.grouped, self.cells_per_group = grouped, cells_per_group
        self.banks = nn.ModuleDict({name: MLPBank(behaviours * cells_per_group, 1, input_dim, [*sizes, 1], options,
                                                  False)
                                    for name, sizes in sizes_by_group.items()})

    def forward(self, leaves: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """leaves [T, B, H], cell [B] (index among the model's cells, group-major) → raw outputs [B, Tb] from
        each row's own cell's towers."""
        per_group = self.cells_per_group
        behaviours, rows = leaves.shape[0] // (len(self.banks) * per_group), leaves.shape[1]
        index = torch.arange(cell.shape[0], device=cell.device)
        if not self.grouped:
            (bank,) = self.banks.values()
            logits = bank(leaves).view(behaviours, per_group, rows)  # [Tb, R, B]
            return logits[:, 0].T if per_group == 1 else logits[:, cell, index].T
        by_group = leaves.reshape(behaviours, len(self.banks), per_group * rows, -1).unbind(1)  # G × [Tb, R·B, H]
        logits = torch.stack([bank(inputs.reshape(behaviours * per_group, rows, -1)).view(behaviours, per_group, rows)
                              for inputs, bank in zip(by_group, self.banks.values())])  # [G, Tb, R, B]
        if per_group == 1:
            return logits[:, :, 0][cell, :, index]
        return logits[cell // per_group, :, cell % per_group, index]
