"""Model zoo speed: training samples/s (forward + backward + the engine's fused Adam step) of every model at both size presets,
beside a naive per-expert-loop MFH (one nn.Linear per expert, gate, tower; Python loops as the authors' TF
graph is written) of the same architecture, and each model's forward FLOPs per sample.

Run: python -m benchmarks.bench_models [--batch 1024] [--steps 20] [--threads N] [--record]
(--record appends the table to benchmarks/results.md.)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import append_results, machine
from mfh_cli.config import compose
from mfh_cli.data.synthetic import simulate
from mfh_cli.engine.loop import FlatOptimizer, FlatParameters, make_optimizer
from mfh_cli.engine.run import keep_freed_memory
from mfh_cli.models import build_model, elementwise_loss, multitask_loss

MODELS = ["mfh", "hmtl", "heter_abl", "flat", "biasnet", "shared_bottom", "mmoe", "cgc", "ple"]
PRESETS = ["compact", "paper"]

# Shape letters: B rows, T tasks, Tb behaviours, K branches, C experts a gate mixes.


def hidden_layer(width_in: int, width_out: int) -> nn.Module:
    """Linear → ReLU → BatchNorm with the authors' epsilon and decay."""
    return nn.Sequential(nn.Linear(width_in, width_out), nn.ReLU(), nn.BatchNorm1d(width_out, 1e-3, 0.01))


def mlp(width_in: int, sizes: list[int], logit: bool) -> nn.Sequential:
    layers, width = [], width_in
    for size in sizes:
        layers.append(hidden_layer(width, size))
        width = size
    if logit:
        layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


class NaiveExtractionLayer(nn.Module):
    """One CGC/PLE layer with one module per expert and per gate, summed in Python loops."""

    def __init__(self, branches: int, per_branch: int, shared: int, width_in: int, size: int, last: bool):
        super().__init__()
        self.own = nn.ModuleList(nn.ModuleList(hidden_layer(width_in, size) for _ in range(per_branch))
                                 for _ in range(branches))
        self.shared = nn.ModuleList(hidden_layer(width_in, size) for _ in range(shared))
        self.gates = nn.ModuleList(nn.Linear(width_in, per_branch + shared) for _ in range(branches))
        self.shared_gate = None if last else nn.Linear(width_in, branches * per_branch + shared)

    def forward(self, shared_input, branch_inputs):
        shared_experts = [expert(shared_input) for expert in self.shared]
        own_experts = [[expert(branch_input) for expert in experts]
                       for experts, branch_input in zip(self.own, branch_inputs)]
        outputs = []
        for gate, branch_input, own in zip(self.gates, branch_inputs, own_experts):
            weights = torch.softmax(gate(branch_input), dim=1)
            outputs.append(sum(weights[:, index:index + 1] * expert
                               for index, expert in enumerate(own + shared_experts)))
        shared_output = None
        if self.shared_gate is not None:
            every = [expert for own in own_experts for expert in own] + shared_experts
            weights = torch.softmax(self.shared_gate(shared_input), dim=1)
            shared_output = sum(weights[:, index:index + 1] * expert for index, expert in enumerate(every))
        return outputs, shared_output


class NaiveSwitcher(nn.Module):
    def __init__(self, spec, branches: int, width_in: int):
        super().__init__()
        layers, width = [], width_in
        for index, sizes in enumerate(spec.layers):
            layers.append(NaiveExtractionLayer(branches, spec.experts_per_branch, spec.shared_experts, width,
                                               sizes[0], last=index == len(spec.layers) - 1))
            width = sizes[0]
        self.layers, self.branches, self.output_dim = nn.ModuleList(layers), branches, width

    def forward(self, x):
        shared, branches = x, [x] * self.branches
        for layer in self.layers:
            branches, shared = layer(shared, branches)
        return branches


class NaiveMFH(nn.Module):
    """The two-facet MFH of `cfg`, written the straightforward way."""

    def __init__(self, cfg, input_dim: int, behaviours: int, groups: list[str]):
        super().__init__()
        from mfh_cli.models.zoo import _switcher

        level1, level2 = _switcher(cfg.model.levels[0], "level1"), _switcher(cfg.model.levels[1], "level2")
        self.behaviours, self.groups = behaviours, len(groups)
        self.level0 = mlp(input_dim, list(cfg.model.level0), logit=False)
        width = cfg.model.level0[-1]
        self.by_behaviour = NaiveSwitcher(level1, behaviours, width)
        self.by_group = NaiveSwitcher(level1, self.groups, width)
        width = self.by_behaviour.output_dim
        self.behaviour_then_group = nn.ModuleList(NaiveSwitcher(level2, self.groups, width)
                                                  for _ in range(behaviours))
        self.group_then_behaviour = nn.ModuleList(NaiveSwitcher(level2, behaviours, width)
                                                  for _ in range(self.groups))
        width = self.behaviour_then_group[0].output_dim
        self.towers = nn.ModuleList(mlp(width, list(cfg.model.towers[group]), logit=True)
                                    for _ in range(behaviours) for group in groups)

    def forward_features(self, x, group):
        x = self.level0(x)
        first = [switcher(branch) for switcher, branch in zip(self.behaviour_then_group, self.by_behaviour(x))]
        second = [switcher(branch) for switcher, branch in zip(self.group_then_behaviour, self.by_group(x))]
        logits = torch.cat([self.towers[b * self.groups + g](first[b][g] + second[g][b])
                            for b in range(self.behaviours) for g in range(self.groups)], dim=1)  # [B, T]
        columns = torch.arange(self.behaviours) * self.groups
        return logits.gather(1, columns[None, :] + group[:, None])  # [B, Tb]


def engine_optimizer(model: nn.Module) -> tuple[FlatOptimizer, FlatParameters]:
    """The engine's optimizer path: parameters in one flat tensor stepped by fused Adam (trainer defaults)."""
    flat = FlatParameters(model)
    return make_optimizer(flat.values, compose([]).trainer), flat


def samples_per_second(models: list, features, group, labels, mask, kinds, batch: int, steps: int
                       ) -> list[float]:
    """Training samples/s of each model: batch / median seconds of a step (forward + backward + Adam), with the
    engine's optimizer path and memory settings (`keep_freed_memory`, as `mfh train`).

    The models' steps alternate, so that a comparison between them sees the same machine load.
    """
    keep_freed_memory()
    optimisers = [engine_optimizer(model) for model in models]
    generator = torch.Generator().manual_seed(0)
    times: list[list[float]] = [[] for _ in models]
    for step in range(steps + 3):  # 3 warm-up steps
        rows = torch.randint(0, features.shape[0], (batch,), generator=generator)
        for model, (optimiser, flat), seconds in zip(models, optimisers, times):
            started = time.perf_counter()
            outputs = model.forward_features(features[rows], group[rows])
            loss = multitask_loss(elementwise_loss(outputs, labels[rows], kinds), mask[rows])
            flat.zero_grad()
            loss.backward()
            optimiser.step()
            if step >= 3:
                seconds.append(time.perf_counter() - started)
    return [batch / statistics.median(seconds) for seconds in times]


FLOP_ROWS = 256  # the batch FLOPs are counted on


def counted_flops(forward: Callable[[], object]) -> float:
    """FLOPs per row of `forward()`, a forward pass over FLOP_ROWS rows (matmuls, torch's FlopCounterMode)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        forward()
    return counter.get_total_flops() / FLOP_ROWS


def forward_flops(model, features, group) -> float:
    """Forward FLOPs per sample of a model fed fixed-width features."""
    return counted_flops(lambda: model.forward_features(features[:FLOP_ROWS], group[:FLOP_ROWS]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--record", action="store_true")
    arguments = parser.parse_args()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    torch.manual_seed(0)
    data = simulate(compose(["data.rows=20000"]).data).select("train")
    lines = [f"Batch {arguments.batch}, median of {arguments.steps} steps, Adam; input = the simulator's "
             "embeddings (fixed, precomputed) so that every model sees the same features.", "",
             "| preset | model | parameters | forward matmul MFLOP/sample | training samples/s |",
             "|---|---|---:|---:|---:|"]
    for preset in PRESETS:
        for name in arguments.models.split(","):
            cfg = compose([f"model={name}", f"size={preset}", "data.rows=20000"])
            columns = data.behaviour_columns(list(cfg.tasks.behaviours))
            embedded = build_model(cfg, data.schema).embedding
            with torch.no_grad():
                features = embedded(data.categorical, data.dense)
            labels, mask = data.labels[:, columns], data.label_mask[:, columns]
            model = build_model(cfg, data.schema, input_dim=features.shape[1])
            models = [model]
            if name == "mfh":
                models.append(NaiveMFH(cfg, features.shape[1], len(columns), list(data.schema.groups)))
            speeds = samples_per_second(models, features, data.group, labels, mask, model.kinds, arguments.batch,
                                        arguments.steps)
            parameters = [sum(parameter.numel() for parameter in each.parameters()) for each in models]
            lines.append(f"| {preset} | {name} | {parameters[0]:,} | "
                         f"{forward_flops(model, features, data.group) / 1e6:.2f} | {speeds[0]:,.0f} |")
            if name == "mfh":
                assert parameters[1] == parameters[0], parameters  # the same network, written naively
                lines.append(f"| {preset} | mfh, naive per-expert loop | {parameters[1]:,} | same | {speeds[1]:,.0f} |")
                lines.append(f"| {preset} | **fused / naive** | | | **{speeds[0] / speeds[1]:.2f}×** |")
            print(*lines[-3 if name == "mfh" else -1:], sep="\n", flush=True)
    if arguments.record:
        append_results("Model zoo training speed (benchmarks/bench_models.py)", lines)
    else:
        print(f"\nMachine: {machine()}")


if __name__ == "__main__":
    main()
