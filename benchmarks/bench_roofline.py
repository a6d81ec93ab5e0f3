"""Roofline: the machine's fp32 and bf16 matmul peak, every model's matmul FLOPs per sample at both presets, and
the training FLOP/s each achieves as a fraction of the fp32 peak; mfh paper also under bf16 autocast against the
bf16 peak, and a torch.profiler breakdown of an mfh paper step that explains the gap to the peak.

bf16 is measured only where the CPU has it natively (AMX or AVX512_BF16, engine/placement.py): elsewhere PyTorch
emulates it, its "peak" is near 0 and no share of it means anything, so the record says "no native bf16" instead.
`--emulated-bf16` times mfh paper under emulated bf16 anyway (2 steps: about a minute) as a slowdown against fp32.

Run: python -m benchmarks.bench_roofline [--threads 2] [--batch 1024] [--steps 20] [--emulated-bf16] [--quick]
Inputs are random features of a fixed width (the simulator's embedded width at compact, 256 at paper, as the
issue's reference), so the figures are the network's alone: no embedding lookup. Training FLOPs = 3 × forward
(forward, and two matmuls of the same size per matmul in backward).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from benchmarks.bench_models import MODELS, PRESETS, engine_optimizer, forward_flops, samples_per_second
from benchmarks.common import median_seconds, no_native_bf16, record
from mfh_cli.config import compose
from mfh_cli.data.synthetic import simulate
from mfh_cli.engine.run import keep_freed_memory
from mfh_cli.models import build_model, elementwise_loss, multitask_loss
from mfh_cli.models.parts.dense import BatchNorm
from mfh_cli.models.parts.fused import load_kernels, use_fused_kernels

# Shape letters: N rows of random input, B batch rows, F input width, Tb behaviours.

PAPER_INPUT_WIDTH = 256
TRAINING_FLOPS_PER_FORWARD = 3
TARGET_SHARE = 0.60  # of the fp32 peak, for mfh training at the paper preset (the throughput issue)
STRETCH_SHARE = 0.70  # its stretch goal
MATMUL_OPS = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "_addmm_activation"}
ACTIVATION_OPS = {"relu", "relu_", "clamp_min", "clamp_min_", "threshold_backward"}
SCOPES = ("data", "optimizer")  # record_function labels of a profiled step's phases


def matmul_flops_per_second(dtype: torch.dtype, size: int, repeats: int) -> float:
    """FLOP/s of a [size, size] @ [size, size] matmul in `dtype`: 2·size³ / median seconds."""
    left, right = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    return 2 * size**3 / median_seconds(lambda: torch.mm(left, right), repeats=repeats, warmup=2)


def memory_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes/s of a large copy (read + write counted), the bound of elementwise ops on data beyond the caches."""
    source = torch.randn(megabytes * (1 << 20) // 4)
    target = torch.empty_like(source)
    return 2 * source.nbytes / median_seconds(lambda: target.copy_(source), repeats=repeats, warmup=2)


NORMALISATION_WIDTH = 4096  # the widest hidden layer of mfh paper (2 trees × 8 experts × 256)


def normalisation_passes(bandwidth: float, rows: int, repeats: int = 20) -> float:
    """ReLU then BatchNorm, forward and backward, on [rows, NORMALISATION_WIDTH] alone with every input beyond
    the caches: its time in passes of the tensor at `bandwidth` (the eager floor the in-model figure is compared
    with)."""
    width = NORMALISATION_WIDTH
    pool = [torch.randn(rows, width) for _ in range(12)]  # 12 × 16 MB at 1024 rows: past the caches
    weight, bias = torch.ones(width, requires_grad=True), torch.zeros(width, requires_grad=True)
    times = []
    for index in range(repeats + 4):
        inputs, gradient = pool[index % 12].detach().requires_grad_(), pool[(index + 5) % 12]
        started = time.perf_counter()
        output = torch.native_batch_norm(torch.relu(inputs), weight, bias, None, None, True, 0.0, 1e-3)[0]
        output.backward(gradient)
        if index >= 4:
            times.append(time.perf_counter() - started)
    return statistics.median(times) / (rows * width * 4 / bandwidth)


def hidden_values_per_row(model: torch.nn.Module) -> int:
    """Hidden-layer values per row: the channels of every BatchNorm (each follows one activation)."""
    return sum(module.weight.numel() for module in model.modules() if isinstance(module, BatchNorm))


def random_inputs(rows: int, width: int, behaviours: int, groups: int) -> tuple[torch.Tensor, ...]:
    """features [N, F], group [N], labels [N, Tb] (0/1, valid for both loss kinds), mask [N, Tb] all set."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(rows, width, generator=generator)
    group = torch.randint(0, groups, (rows,), generator=generator)
    labels = (torch.rand(rows, behaviours, generator=generator) < 0.3).float()
    return features, group, labels, torch.ones(rows, behaviours, dtype=torch.bool)


def op_category(name: str, scope: str | None) -> str:
    """Where a profiled op's time goes: its phase (data gather, optimizer) or its kind of computation."""
    if scope is not None:
        return {"data": "data (row gather)", "optimizer": "optimizer (Adam)"}[scope]
    op = name.removeprefix("aten::")
    if op in MATMUL_OPS:
        return "matmul (experts, gate scores and mixing, towers)"
    if "batch_norm" in op:
        return "BatchNorm"
    if "softmax" in op:
        return "gate softmax"
    if op in ACTIVATION_OPS:
        return "activation (ReLU forward and backward)"
    return "other (copies, concatenation, loss, autograd)"


def enclosing_scope(event) -> str | None:
    """The phase label (SCOPES) an event was recorded under, if any."""
    while event is not None:
        if event.name in SCOPES:
            return event.name
        event = event.cpu_parent
    return None


def profile_lines(model, inputs: tuple[torch.Tensor, ...], batch: int, steps: int, peak: float,
                  flops: float, bandwidth: float, floor_passes: float) -> list[str]:
    """Self CPU time of `steps` training steps by category and the top ops, and what the target would need,
    as markdown lines."""
    features, group, labels, mask = inputs
    optimiser, flat = engine_optimizer(model)
    generator = torch.Generator().manual_seed(1)

    def step() -> None:
        with record_function("data"):
            rows = torch.randint(0, features.shape[0], (batch,), generator=generator)
            batch_features, batch_group, batch_labels, batch_mask = (t[rows] for t in (features, group, labels, mask))
        outputs = model.forward_features(batch_features, batch_group)
        loss = multitask_loss(elementwise_loss(outputs, batch_labels, model.kinds), batch_mask)
        flat.zero_grad()
        loss.backward()
        with record_function("optimizer"):
            optimiser.step()

    for _ in range(3):  # warm-up
        step()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            step()
    seconds_by_category: dict[str, float] = defaultdict(float)
    for event in profiler.events():
        seconds_by_category[op_category(event.name, enclosing_scope(event))] += event.self_cpu_time_total / 1e6
    total = sum(seconds_by_category.values())
    matmul_seconds = sum(s for c, s in seconds_by_category.items() if c.startswith("matmul"))
    matmul_rate = TRAINING_FLOPS_PER_FORWARD * flops * batch * steps / max(matmul_seconds, 1e-12)
    lines = [f"Profile of {steps} training steps (batch {batch}), self CPU time (profiler overhead included):", "",
             "| where | ms per step | share |", "|---|---:|---:|"]
    for category, seconds in sorted(seconds_by_category.items(), key=lambda item: -item[1]):
        lines.append(f"| {category} | {1e3 * seconds / steps:.2f} | {seconds / total:.0%} |")
    per_step = {category: 1e3 * seconds / steps for category, seconds in seconds_by_category.items()}
    matmul_ms, step_ms = 1e3 * matmul_seconds / steps, 1e3 * total / steps
    target_ms = 1e3 * TRAINING_FLOPS_PER_FORWARD * flops * batch / (STRETCH_SHARE * peak)
    normalise_ms = per_step.get("BatchNorm", 0.0) + per_step.get("activation (ReLU forward and backward)", 0.0)
    hidden = hidden_values_per_row(model)
    pass_ms = 1e3 * hidden * batch * 4 / bandwidth  # one read or write of them, fp32
    lines += ["", f"Inside the matmul ops alone the step runs at {matmul_rate / 1e9:.1f} GFLOP/s = "
              f"{matmul_rate / peak:.0%} of the fp32 peak; time outside matmuls is {1 - matmul_seconds / total:.0%} "
              "of the step. Achieved ≈ (matmul share) × (matmul efficiency) × peak.", "",
              f"What {STRETCH_SHARE:.0%} of the peak (the stretch goal) needs: the whole step in {target_ms:.0f} ms; "
              "its matmuls alone "
              f"take {matmul_ms:.0f} ms at the efficiency above, and everything else {step_ms - matmul_ms:.0f} ms. "
              f"BatchNorm and ReLU (forward and backward) take {normalise_ms:.0f} ms over "
              f"{hidden:,} hidden values per row: one fp32 read or write of them for the "
              f"batch costs {pass_ms:.1f} ms at the measured {bandwidth / 1e9:.0f} GB/s copy bandwidth, so they "
              f"make ≈ {normalise_ms / pass_ms:.0f} such passes. Eager PyTorch needs at least 13 (forward: ReLU 2, "
              "BatchNorm 3 — statistics, then normalise; backward: BatchNorm 5, ReLU 3), and ReLU + BatchNorm "
              f"alone on a [{batch}, {NORMALISATION_WIDTH}] tensor beyond the caches measure {floor_passes:.0f} "
              "passes here. Only fusing Linear, ReLU and BatchNorm into the matmul's epilogue (a custom kernel) or "
              "halving the bytes (bf16) removes them.", "",
              "Top ops by self CPU time:", "", "| op | calls per step | ms per step |", "|---|---:|---:|"]
    top = sorted(profiler.key_averages(), key=lambda average: -average.self_cpu_time_total)[:10]
    lines += [f"| {average.key} | {average.count / steps:.0f} | {average.self_cpu_time_total / 1e3 / steps:.2f} |"
              for average in top]
    return lines


def verdict(share: float) -> str:
    """Whether a share of the peak meets the target and the stretch goal."""
    if share >= STRETCH_SHARE:
        return "target and stretch met"
    return "target met, stretch not" if share >= TARGET_SHARE else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--rows", type=int, default=20000, help="rows of random input batches are drawn from")
    parser.add_argument("--emulated-bf16", action="store_true", help="without native bf16: time mfh paper under "
                        "emulated bf16 (2 steps) as a slowdown against fp32")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script runs")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.batch, arguments.steps, arguments.matmul_size, arguments.rows = 128, 2, 256, 1024
    torch.set_num_threads(arguments.threads)
    torch.manual_seed(0)
    repeats = 2 if arguments.quick else 5
    keep_freed_memory()  # as `mfh train` does

    bf16_missing = no_native_bf16()
    precisions = {"fp32": torch.float32, **({} if bf16_missing else {"bf16": torch.bfloat16})}

    def peaks() -> dict[str, float]:
        return {name: matmul_flops_per_second(dtype, arguments.matmul_size, repeats)
                for name, dtype in precisions.items()}

    # The machine's speed drifts (shared host): the peak is measured before and after the models, and the
    # shares use the better of the two (the "best peak measured"), so they are not flattered.
    before = peaks()
    bandwidth = memory_bandwidth(16 if arguments.quick else 256, repeats)
    defaults = compose(["data.rows=2000"])
    schema = simulate(defaults.data).schema
    behaviours = len(defaults.tasks.behaviours)
    compact_width = len(schema.categorical) * int(defaults.size.embedding_dim) + len(schema.dense)
    widths = {"compact": compact_width, "paper": PAPER_INPUT_WIDTH}
    inputs = {preset: random_inputs(arguments.rows, widths[preset], behaviours, len(schema.groups))
              for preset in PRESETS}

    def measure(name: str, preset: str, steps: int = arguments.steps,
                fused: bool = False) -> tuple[torch.nn.Module, float, float]:
        """Build `name` at `preset` and time its training steps (eager, or through the fused kernels): the model,
        its forward FLOPs per sample and its training samples/s."""
        model = build_model(compose([f"model={name}", f"size={preset}"]), schema, input_dim=widths[preset])
        use_fused_kernels(model, fused)
        features, group, labels, mask = inputs[preset]
        flops = forward_flops(model, features, group)
        speed = samples_per_second([model], features, group, labels, mask, model.kinds, arguments.batch,
                                   steps)[0]
        print(f"{preset} {name}: {speed:,.0f} samples/s", flush=True)
        return model, flops, speed

    measured = {(preset, name, "fp32"): measure(name, preset) for preset in PRESETS for name in MODELS}
    kernels_missing = load_kernels()[1]
    if kernels_missing is None:  # the same models through trainer.kernels=fused (models/parts/fused.py)
        measured.update({(preset, name, "fp32 fused"): measure(name, preset, fused=True)
                         for preset in PRESETS for name in MODELS})
    if not bf16_missing:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            measured["paper", "mfh", "bf16"] = measure("mfh", "paper")
    emulated = None
    if bf16_missing and arguments.emulated_bf16:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            emulated = measure("mfh", "paper", steps=2)[2]
    after = peaks()
    peak = {name: max(before[name], after[name]) for name in before}
    peak_text = ", ".join(f"{name} {before[name] / 1e9:.0f} / {after[name] / 1e9:.0f} GFLOP/s" for name in peak)
    lines = [f"Matmul peak ({arguments.matmul_size}² @ {arguments.matmul_size}², median of {repeats}, before / "
             f"after the models): {peak_text}; shares use the better ("
             f"{', '.join(f'{name} {value / 1e9:.0f}' for name, value in peak.items())}). Memory: "
             f"{bandwidth / 1e9:.1f} GB/s (copy of {16 if arguments.quick else 256} MB, read + write).",
             *([f"bf16: {bf16_missing}: no bf16 peak is measured and no share of one given."] if bf16_missing
               else []),
             "",
             f"Training: batch {arguments.batch}, median of {arguments.steps} steps (forward + backward + Adam), "
             f"random inputs of width {widths['compact']} (compact) / {widths['paper']} (paper). "
             "FLOPs count matmuls (torch FlopCounterMode).", "",
             "| preset | model | forward MFLOP/sample | training MFLOP/sample | training samples/s | "
             "achieved GFLOP/s | of the peak |", "|---|---|---:|---:|---:|---:|---:|"]
    labels = {"fp32": "{}", "fp32 fused": "{}, fused kernels", "bf16": "{}, bf16 autocast"}
    for (preset, name, precision), (_, flops, speed) in sorted(measured.items(), key=lambda item: item[0][:2]):
        achieved = speed * TRAINING_FLOPS_PER_FORWARD * flops
        peak_name = precision.split()[0]
        lines.append(f"| {preset} | {labels[precision].format(name)} | {flops / 1e6:.2f} | "
                     f"{TRAINING_FLOPS_PER_FORWARD * flops / 1e6:.2f} | {speed:,.0f} | {achieved / 1e9:.1f} | "
                     f"{achieved / peak[peak_name]:.0%} ({peak_name}) |")
    if bf16_missing:
        _, flops, fp32_speed = measured["paper", "mfh", "fp32"]
        speed_text = "not measured" if emulated is None else f"{emulated:,.0f} (emulated, 2 steps)"
        lines.append(f"| paper | mfh, bf16 autocast | {flops / 1e6:.2f} | "
                     f"{TRAINING_FLOPS_PER_FORWARD * flops / 1e6:.2f} | {speed_text} | — | no native bf16 |")
        if emulated is not None:
            lines += ["", f"Emulated bf16 (no native bf16): mfh paper trains {fp32_speed / emulated:.0f}× slower than "
                      "in fp32 — the reason `trainer.precision=bf16` is refused on this CPU."]
    model, flops, speed = measured["paper", "mfh", "fp32"]
    share = speed * TRAINING_FLOPS_PER_FORWARD * flops / peak["fp32"]
    lines += ["", *profile_lines(model, inputs["paper"], arguments.batch, max(arguments.steps // 2, 2),
                                 peak["fp32"], flops, bandwidth,
                                 normalisation_passes(bandwidth, arguments.batch)),
              "", f"Target: mfh paper training ≥ {TARGET_SHARE:.0%} of the fp32 peak (stretch {STRETCH_SHARE:.0%}): "
              f"eager {share:.0%}, {verdict(share)}."]
    if kernels_missing is None:
        _, flops, speed = measured["paper", "mfh", "fp32 fused"]
        fused_share = speed * TRAINING_FLOPS_PER_FORWARD * flops / peak["fp32"]
        lines[-1] += (f" Fused kernels (trainer.kernels=fused, the default): {fused_share:.0%}, "
                      f"{verdict(fused_share)}.")
    else:
        lines[-1] += f" Fused kernels not measured: {kernels_missing}."
    title = "Roofline (benchmarks/bench_roofline.py)"
    record(title, lines, arguments.quick)


if __name__ == "__main__":
    main()
