"""Biasnet's bias tower (SPEC §2 [paper, Fig. 2]): an MLP with ReLU on the one-hot user group, one bias
logit per behaviour [ours], added to each behaviour tower's logit. Shape letters: B rows, G groups,
Tb behaviours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mfh_cli.models.parts.dense import DenseOptions, MLPBank


class BiasTower(nn.Module):
    """group [B] → bias logits [B, Tb] from an MLP of `sizes` (the paper: (128, 64))."""

    def __init__(self, groups: int, behaviours: int, sizes: list[int], options: DenseOptions):
        super().__init__()
        self.groups = groups
        self.mlp = MLPBank(1, 1, groups, [*sizes, behaviours], options, final_activation=False)

    def forward(self, group: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(group, self.groups).to(self.mlp.layers[0].linear.weight.dtype)
        return self.mlp(one_hot.unsqueeze(0)).view(group.shape[0], -1)
