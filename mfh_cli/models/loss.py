"""The multi-task loss (SPEC §3 [code]). Shape letters: B rows, Tb behaviours of the task grid.

Regression (cmpl): squared error on the raw output, no sigmoid; binary: sigmoid cross-entropy on the logit.
Each term × task weight × mask; the loss is the sum over active terms divided by their number. The model
already reads each row's outputs from its own group's towers, so the label mask alone makes "a row trains only
its own group's tasks". The authors divided by `count_nonzero` of the weighted, masked terms; we count the
active (unmasked, non-zero weight) terms, which differs only where a term is exactly 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mfh_cli.tasks import KINDS


def elementwise_loss(outputs: torch.Tensor, labels: torch.Tensor, kinds: list[str]) -> torch.Tensor:
    """Per-row, per-behaviour loss [B, Tb]: squared error for `regression`, BCE-with-logits for `binary`."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown behaviour kind(s) {unknown}: expected {' or '.join(KINDS)}")
    regression = torch.tensor([kind == "regression" for kind in kinds], device=outputs.device)
    squared = (outputs - labels).square()
    cross_entropy = F.binary_cross_entropy_with_logits(outputs, labels, reduction="none")
    return torch.where(regression, squared, cross_entropy)


def multitask_loss(elementwise: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """Σ masked weighted terms / number of active terms (0 when none); `weights` [Tb] or [B, Tb], None = 1."""
    active = mask.to(elementwise.dtype)
    if weights is not None:
        active = active * weights.to(elementwise.dtype)
    # torch.where, not a product: a masked term may be inf/NaN (e.g. a padded label) and must not leak in.
    total = torch.where(active != 0, elementwise * active, torch.zeros_like(elementwise)).sum()
    return total / (active != 0).sum().clamp(min=1)
