"""Task towers: one MLP per task ending in one logit, sizes chosen per user group (heterogeneous, SPEC §2).

The towers of one group (one per behaviour) are one `MLPBank`. Every tower runs on every row, as in the
authors' graph (so BatchNorm statistics are the batch's); a row's outputs are then read from its own group's
towers, so other groups' towers get no gradient from it (SPEC §3). At the appendix sizes the towers are ~5%
of the forward FLOPs, so running them on all rows costs little.

Shape letters: T tasks (behaviour-major: task t = behaviour·G + group), B rows, Tb behaviours, G groups,
H leaf width.
"""

from __future__ import annotations

import torch
from torch import nn

from mfh_cli.models.parts.dense import DenseOptions, MLPBank


class Towers(nn.Module):
    """Per-group banks of per-behaviour towers; `groups=None`: one tower per behaviour shared by all groups."""

    def __init__(self, input_dim: int, behaviours: int, sizes_by_group: dict[str, list[int]],
                 options: DenseOptions, grouped: bool):
        super().__init__()
        self.grouped = grouped
        self.banks = nn.ModuleDict({name: MLPBank(behaviours, 1, input_dim, [*sizes, 1], options, False)
                                    for name, sizes in sizes_by_group.items()})

    def forward(self, leaves: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """leaves [T, B, H], group [B] → raw outputs [B, Tb] from each row's own group's towers."""
        behaviours, rows = leaves.shape[0] // len(self.banks), leaves.shape[1]
        if not self.grouped:
            (bank,) = self.banks.values()
            return bank(leaves).view(behaviours, rows).T
        by_group = leaves.view(behaviours, len(self.banks), rows, -1).unbind(1)  # G × [Tb, B, H]
        logits = torch.stack([bank(inputs).view(behaviours, rows)
                              for inputs, bank in zip(by_group, self.banks.values())])  # [G, Tb, B]
        return logits[group, :, torch.arange(group.shape[0], device=group.device)]
