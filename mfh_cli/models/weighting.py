"""Loss weighting across the task cells (behaviour × cell of the run: its user group, × scenario on a three-facet
grid), its own axis: `trainer.weighting` (SPEC §3).

The architecture (models/zoo.py) and the weighting are separate modules, as in LibMTL: a weighting turns the
per-row, per-behaviour losses [B, Tb] into the scalar to minimise.
- `fixed`: each term × its task weight (`trainer.task_weights`, default 1) × mask; Σ / number of active terms
  (SPEC §3 [code]).
- `uncertainty`: homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, "Multi-Task Learning Using
  Uncertainty to Weigh Losses for Scene Geometry and Semantics", CVPR 2018, eqs. 7 and 10): one learned
  log-variance s = log σ² per task cell, initialised at 0 (weight 1). Each active term becomes
  regression (cmpl, squared error L): 0.5·exp(−s)·L + 0.5·s    (Gaussian likelihood, eq. 7)
  binary (cross-entropy L):           exp(−s)·L + 0.5·s        (Boltzmann likelihood, eq. 10's approximation)
  and, as for `fixed`, the loss is the sum of the task-weighted active terms over their number. The 0.5·s form
  with s = log σ² is LibMTL's (`LibMTL/weighting/UW.py`). A cell with task weight 0 stays off.
Shape letters: B rows, G cells of the run (the user groups on a two-facet grid), Tb behaviours of the task grid.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from mfh_cli.errors import ConfigError
from mfh_cli.models.loss import multitask_loss
from mfh_cli.tasks import task_name

WEIGHTINGS = ("fixed", "uncertainty")
# Factor of exp(−s)·L per behaviour kind (Kendall et al. 2018, eqs. 7 and 10).
PRECISION_FACTOR = {"regression": 0.5, "binary": 1.0}


def task_weights(cfg: DictConfig, groups: list[str], behaviours: list[str]) -> torch.Tensor:
    """[G, Tb] loss weights (SPEC §3) of the run's cells `groups`: trainer.task_weights maps a task
    (`<behaviour>_<group>`, `<behaviour>_<group>_<scenario>`) or `<behaviour>` → weight."""
    configured = dict(cfg.trainer.get("task_weights") or {})
    known = {task_name(b, g) for b in behaviours for g in groups} | set(behaviours)
    unknown = sorted(set(configured) - known)
    if unknown:
        raise ConfigError(f"trainer.task_weights: unknown task(s) {', '.join(unknown)}")
    return torch.tensor([[float(configured.get(task_name(b, g), configured.get(b, 1.0))) for b in behaviours]
                         for g in groups])


class LossWeighting(nn.Module):
    """Fixed task weights: Σ masked weighted terms / number of active terms (SPEC §3); the base of every weighting."""

    name = "fixed"

    def __init__(self, weights: torch.Tensor, groups: list[str], behaviours: list[str], kinds: list[str]):
        super().__init__()
        self.groups, self.behaviours, self.kinds = list(groups), list(behaviours), list(kinds)
        self.register_buffer("weights", weights.float())  # [G, Tb] the configured task weights

    def forward(self, elementwise: torch.Tensor, mask: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """The training loss of per-row losses [B, Tb] with label mask [B, Tb] for rows of cell `group` [B]."""
        return multitask_loss(elementwise, mask, self.weights[group])

    def fixed_loss(self, elementwise: torch.Tensor, mask: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """The SPEC §3 loss with the configured task weights alone: the early-stopping criterion of every
        weighting, so that learned weights cannot move the validation loss by themselves."""
        return multitask_loss(elementwise, mask, self.weights[group])

    def effective_weights(self) -> torch.Tensor:
        """[G, Tb] the weight of each cell's loss now."""
        return self.weights.detach().clone()

    def log_variances(self) -> torch.Tensor | None:
        """[G, Tb] learned log-variances s, or None for a weighting without."""
        return None

    def record(self) -> dict:
        """The metrics.json `loss_weights` entry: the method and, per task `<behaviour>_<group>`, its weight
        (and its log-variance where learned)."""
        weights, variances = self.effective_weights().cpu(), self.log_variances()
        tasks = {}
        for g, group in enumerate(self.groups):
            for t, behaviour in enumerate(self.behaviours):
                entry = {"weight": round(float(weights[g, t]), 6)}
                if variances is not None:
                    entry["log_variance"] = round(float(variances[g, t]), 6)
                tasks[task_name(behaviour, group)] = entry
        return {"method": self.name, "tasks": tasks}


class UncertaintyWeighting(LossWeighting):
    """Homoscedastic uncertainty weighting (Kendall et al., CVPR 2018; module docstring): s [G, Tb] learned."""

    name = "uncertainty"

    def __init__(self, weights: torch.Tensor, groups: list[str], behaviours: list[str], kinds: list[str]):
        super().__init__(weights, groups, behaviours, kinds)
        self.log_variance = nn.Parameter(torch.zeros(len(groups), len(behaviours)))  # s = log σ², 0: weight 1
        self.register_buffer("factor", torch.tensor([PRECISION_FACTOR[kind] for kind in kinds]))  # [Tb]

    def forward(self, elementwise: torch.Tensor, mask: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        s = self.log_variance[group]  # [B, Tb]
        # Inactive terms zeroed first: a non-finite one would otherwise reach s's gradient as 0·inf = NaN.
        losses = torch.where(mask, elementwise, torch.zeros_like(elementwise))
        terms = self.factor.to(elementwise.dtype) * torch.exp(-s) * losses + 0.5 * s
        return multitask_loss(terms, mask, self.weights[group])

    def effective_weights(self) -> torch.Tensor:
        """[G, Tb] task weight × exp(−s), the precision (regression terms carry the likelihood's 0.5 besides)."""
        with torch.no_grad():
            return self.weights * torch.exp(-self.log_variance)

    def log_variances(self) -> torch.Tensor:
        return self.log_variance.detach().cpu().clone()


def build_weighting(cfg: DictConfig, groups: list[str], behaviours: list[str], kinds: list[str]) -> LossWeighting:
    """The weighting `cfg.trainer.weighting` (fixed | uncertainty) over the task grid, with its task weights."""
    name = str(cfg.trainer.get("weighting", "fixed"))
    weights = task_weights(cfg, groups, behaviours)
    if name == "fixed":
        return LossWeighting(weights, groups, behaviours, kinds)
    if name == "uncertainty":
        return UncertaintyWeighting(weights, groups, behaviours, kinds)
    raise ConfigError(f"trainer.weighting '{name}' is unknown: expected {' or '.join(WEIGHTINGS)}")
