"""Switchers (SPEC §1 [paper]): one input → K outputs, one per child branch; S identical switchers stacked.

`shared_bottom` (one MLP, output copied K times) and the extraction family: `mmoe` (one layer, shared experts
only), `cgc` (one layer, per-branch + shared experts) and `ple` (any number of such layers). PLE wiring as the
authors' graph [code]: every layer but the last has a shared gate over all its experts whose output feeds the
next layer's shared experts; branch k's next experts and next gate read branch k's gated output. The authors'
CGC helper also builds that shared gate on a single (= last) layer, where nothing reads it; it is left out here
so that every parameter has a gradient path (their level-2 CGCs each carry one such unused gate).

Stacking: level 2 of a tree is S = (branches of level 1) switchers of one shape; they run as one module whose
every matmul is batched over S. Shape letters: S stacked switchers, B rows, K branches, D input width,
H output width, E experts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from mfh_cli.errors import ConfigError
from mfh_cli.models.parts.dense import DenseOptions, MLPBank
from mfh_cli.models.parts.experts import Experts
from mfh_cli.models.parts.gates import Gates, gated_mix

SWITCHER_KINDS = ("shared_bottom", "mmoe", "cgc", "ple")


@dataclass(frozen=True)
class SwitcherSpec:
    """One switcher's settings: `layers` holds the expert MLP sizes of each extraction layer."""

    kind: str
    layers: list[list[int]]
    experts_per_branch: int = 0
    shared_experts: int = 1
    gate: str = "softmax"
    gate_hidden: list[int] = field(default_factory=list)

    def check(self, where: str) -> None:
        """Raise ConfigError naming `where` (the config key) when the settings do not fit the kind."""
        if self.kind not in SWITCHER_KINDS:
            raise ConfigError(f"{where}.kind '{self.kind}' is unknown: expected {', '.join(SWITCHER_KINDS)}")
        if not self.layers or any(not sizes or min(sizes) < 1 for sizes in self.layers):
            raise ConfigError(f"{where}.layers must list at least one layer of positive sizes, got {self.layers}")
        if self.kind in ("shared_bottom", "mmoe", "cgc") and len(self.layers) != 1:
            raise ConfigError(f"{where}.layers: a {self.kind} switcher has exactly one layer, got {len(self.layers)}")
        if self.kind in ("shared_bottom", "mmoe") and self.experts_per_branch != 0:
            raise ConfigError(f"{where}.experts_per_branch must be 0 for {self.kind} (its experts are all shared)")
        if self.kind == "shared_bottom" and self.shared_experts != 1:
            raise ConfigError(f"{where}.shared_experts must be 1 for shared_bottom (one MLP)")
        if self.experts_per_branch < 0 or self.shared_experts < 0 or \
                self.experts_per_branch + self.shared_experts < 1:
            raise ConfigError(f"{where}: experts_per_branch and shared_experts must be >= 0 with at least one expert")


class SharedBottomSwitcher(nn.Module):
    """One MLP per stacked switcher, its output copied to the K branches."""

    def __init__(self, spec: SwitcherSpec, copies: int, branches: int, input_dim: int, options: DenseOptions):
        super().__init__()
        self.branches, self.output_dim = branches, spec.layers[0][-1]
        self.bottom = MLPBank(copies, 1, input_dim, spec.layers[0], options, final_activation=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[S, B, D] → [S, B, K, H]."""
        return self.bottom(x).expand(-1, -1, self.branches, -1)


class ExtractionLayer(nn.Module):
    """One CGC-like layer: experts, a gate per branch, and (all but the last PLE layer) a shared gate."""

    def __init__(self, spec: SwitcherSpec, copies: int, branches: int, input_dim: int, sizes: list[int],
                 first: bool, last: bool, options: DenseOptions):
        super().__init__()
        self.copies, self.branches, self.first = copies, branches, first
        self.per_branch = spec.experts_per_branch
        self.experts = Experts(copies, branches, spec.experts_per_branch, spec.shared_experts, input_dim, sizes,
                               options, branch_inputs=not first)
        choices = spec.experts_per_branch + spec.shared_experts
        # First layer: the K branch gates all read the layer input (K gates per switcher); later: one gate per
        # branch reading that branch's input (SPEC §1: gate input = that branch's layer input).
        self.branch_gates = Gates(copies, branches, input_dim, choices, spec.gate, spec.gate_hidden, options) \
            if first else Gates(copies * branches, 1, input_dim, choices, spec.gate, spec.gate_hidden, options)
        self.shared_gate = None if last else \
            Gates(copies, 1, input_dim, self.experts.count, spec.gate, spec.gate_hidden, options)
        self.fusable, self.use_fused = True, False  # the mixing's fused kernel (fused.use_fused_kernels)

    def forward(self, shared_input: torch.Tensor, branch_input: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """shared [S, B, D], branches [S·K, B, D] or None → branch outputs [S, B, K, H], shared output [S, B, H]."""
        experts = self.experts(shared_input, branch_input)
        if self.first:
            scores = self.branch_gates.scores(shared_input)  # [S, B, K, C]
        else:
            rows = shared_input.shape[1]
            scores = self.branch_gates.scores(branch_input).view(self.copies, self.branches, rows, -1).transpose(1, 2)
        shared_scores = self.shared_gate.scores(shared_input) if self.shared_gate is not None else None
        return gated_mix(experts, scores, self.per_branch, shared_scores, self.branch_gates.kind,
                         fused_kernel=self.use_fused)


class ExtractionSwitcher(nn.Module):
    """MMoE, CGC or PLE: a chain of extraction layers (SPEC §1)."""

    def __init__(self, spec: SwitcherSpec, copies: int, branches: int, input_dim: int, options: DenseOptions):
        super().__init__()
        self.copies, self.branches = copies, branches
        layers, width = [], input_dim
        for index, sizes in enumerate(spec.layers):
            layers.append(ExtractionLayer(spec, copies, branches, width, sizes, first=index == 0,
                                          last=index == len(spec.layers) - 1, options=options))
            width = sizes[-1]
        self.layers = nn.ModuleList(layers)
        self.output_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[S, B, D] → [S, B, K, H]."""
        shared, branch = x, None
        for layer in self.layers:
            output, shared = layer(shared, branch)
            if shared is not None:  # a next layer follows: its branch inputs, branch-major [S·K, B, H]
                branch = output.transpose(1, 2).reshape(self.copies * self.branches, x.shape[1], -1)
        return output


def build_switcher(spec: SwitcherSpec, copies: int, branches: int, input_dim: int, options: DenseOptions,
                   where: str) -> nn.Module:
    """The switcher of `spec.kind` (checked; errors name the config key `where`), S=`copies` stacked."""
    spec.check(where)
    if spec.kind == "shared_bottom":
        return SharedBottomSwitcher(spec, copies, branches, input_dim, options)
    return ExtractionSwitcher(spec, copies, branches, input_dim, options)
