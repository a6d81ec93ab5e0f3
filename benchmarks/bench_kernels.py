"""The fused ReLU → BatchNorm training kernel (trainer.kernels, mfh_cli/models/parts/fused.py) against the eager path:
training-step time per model and preset, both paths on the same model, weights and batch, in one process,
alternating blocks of steps so that both see the same machine load; medians and the eager / fused ratio. Also the
share of the step that is matmul (profiler), which bounds what any elementwise fusion can gain.

Run: python -m benchmarks.bench_kernels [--models mfh shared_bottom] [--presets compact paper] [--threads 1]
[--batch 1024] [--rounds 7] [--record]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import append_results, machine
from mfh_cli.config import compose
from mfh_cli.data.synthetic import simulate
from mfh_cli.engine.loop import build_trainer
from mfh_cli.models.parts.fused import use_fused_kernels
from mfh_cli.models.parts.fused import load_kernels

MATMULS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")


def step_seconds(trainer, batch, fused: bool, steps: int) -> float:
    """Mean seconds of `steps` training steps with the fused path on or off."""
    use_fused_kernels(trainer.model, fused)
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batch, 1)
    return (time.perf_counter() - started) / steps


def matmul_share(trainer, batch, fused: bool) -> float:
    """Share of a step's CPU time spent in matmul kernels (self time), with the given path."""
    use_fused_kernels(trainer.model, fused)
    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        for _ in range(3):
            trainer.train_step(batch, 1)
    events = profiled.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    return sum(event.self_cpu_time_total for event in events if event.key in MATMULS) / max(total, 1)


def compare(model: str, preset: str, batch_rows: int, rounds: int, steps: int) -> dict:
    cfg = compose([f"model={model}", f"size={preset}", "data.rows=20000"])
    trainer = build_trainer(cfg, simulate(cfg.data))
    train = trainer.splits["train"]
    batch = train.rows(torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:batch_rows])
    step_seconds(trainer, batch, True, 3)
    step_seconds(trainer, batch, False, 3)
    eager, fused = [], []
    for _ in range(rounds):  # alternate blocks: both paths see the same drift in the machine's load
        eager.append(step_seconds(trainer, batch, False, steps))
        fused.append(step_seconds(trainer, batch, True, steps))
    ratios = [e / f for e, f in zip(eager, fused)]
    return {"model": model, "preset": preset, "eager": statistics.median(eager), "fused": statistics.median(fused),
            "ratio": statistics.median(ratios), "low": min(ratios), "high": max(ratios),
            "matmul_eager": matmul_share(trainer, batch, False), "matmul_fused": matmul_share(trainer, batch, True),
            "layers": use_fused_kernels(trainer.model, True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mfh", "hmtl", "shared_bottom", "mmoe", "ple"])
    parser.add_argument("--presets", nargs="+", default=["compact", "paper"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--record", action="store_true")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    kernels, reason = load_kernels()
    if kernels is None:
        raise SystemExit(f"the fused kernel is not available here: {reason}")
    print(machine())
    lines = [f"Training step (forward, backward, fused Adam), batch {arguments.batch}, {arguments.threads} thread(s); "
             f"medians of {arguments.rounds} alternating blocks of {arguments.steps} steps. Ratio = eager / fused "
             "step time (median of the per-round ratios, min–max in brackets); matmul = share of the step's CPU "
             "time in mm/bmm/addmm/baddbmm.", "",
             "| model | preset | fusable layers | eager ms | fused ms | eager / fused | matmul share eager → fused |",
             "|---|---|---|---|---|---|---|"]
    for preset in arguments.presets:
        for model in arguments.models:
            row = compare(model, preset, arguments.batch, arguments.rounds, arguments.steps)
            line = (f"| {model} | {preset} | {row['layers']} | {1000 * row['eager']:.1f} | {1000 * row['fused']:.1f} | "
                    f"{row['ratio']:.2f}× ({row['low']:.2f}–{row['high']:.2f}) | "
                    f"{100 * row['matmul_eager']:.0f}% → {100 * row['matmul_fused']:.0f}% |")
            print(line, flush=True)
            lines.append(line)
    if arguments.record:
        append_results("Fused ReLU → BatchNorm kernel against eager (bench_kernels.py)", lines)


if __name__ == "__main__":
    main()
