"""The most that training S seeds of a variant as one stacked model could gain: a stacked step runs every op once
for S batches of B rows, so it does the work of one step on S·B rows with the ops of one step on B rows. Its time
is at least that of one step on S·B rows (same ops, same FLOPs, same elements); the ratio S × t(B) / t(S·B) is
therefore an upper bound on the speed-up of any seed stacking, measured on the real model and trainer.

Both batch sizes run on the same trainer in one process, in alternating blocks of steps, one thread (as a study's
runs do); medians over the blocks. The per-step fixed cost (Python, op dispatch: what stacking would share) is
(S·t(B) − t(S·B)) / (S − 1).

Run: python -m benchmarks.bench_seed_stacking [--models mfh hmtl ple shared_bottom] [--seeds 3] [--batch 1024]
[--rounds 5] [--kernels fused] [--record] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import machine, record
from mfh_cli.config import compose
from mfh_cli.data.synthetic import simulate
from mfh_cli.engine.loop import build_trainer


def step_seconds(trainer, batch, steps: int) -> float:
    """Mean seconds of `steps` training steps on `batch`."""
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batch, 1)
    return (time.perf_counter() - started) / steps


def ceiling(model: str, seeds: int, batch_rows: int, rounds: int, steps: int, kernels: str, rows: int) -> dict:
    cfg = compose([f"model={model}", f"data.rows={rows}", f"trainer.kernels={kernels}"])
    trainer = build_trainer(cfg, simulate(cfg.data))
    train = trainer.splits["train"]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    one, stacked = train.rows(order[:batch_rows]), train.rows(order[:seeds * batch_rows])
    step_seconds(trainer, one, 2)
    step_seconds(trainer, stacked, 2)
    single, many = [], []
    for _ in range(rounds):  # alternate: both batch sizes see the same drift in the machine's load
        single.append(step_seconds(trainer, one, steps))
        many.append(step_seconds(trainer, stacked, steps))
    single_time, many_time = statistics.median(single), statistics.median(many)
    return {"model": model, "single": single_time, "many": many_time, "bound": seeds * single_time / many_time,
            "fixed": max(seeds * single_time - many_time, 0.0) / (seeds - 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mfh", "hmtl", "ple", "shared_bottom"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--kernels", default="fused", choices=["fused", "eager"])
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script runs")
    arguments = parser.parse_args()
    if arguments.seeds < 2:
        raise SystemExit("--seeds must be at least 2")
    torch.set_num_threads(1)
    batch, rounds, steps = (64, 1, 1) if arguments.quick else (arguments.batch, arguments.rounds, arguments.steps)
    print(machine())
    lines = [f"Compact training step (forward, backward, fused Adam), 1 thread, "
             f"trainer.kernels={arguments.kernels}; medians of {rounds} alternating blocks of {steps} steps. Bound = {arguments.seeds} × t({batch} rows) / "
             f"t({arguments.seeds * batch} rows): the most a stacked step of {arguments.seeds} seeds could gain.", "",
             f"| model | step, {batch} rows, ms | step, {arguments.seeds * batch} rows, ms | "
             "stacking bound | fixed cost per step, ms |", "|---|---:|---:|---:|---:|"]
    for model in arguments.models:
        row = ceiling(model, arguments.seeds, batch, rounds, steps, arguments.kernels,
                      4000 if arguments.quick else 20000)
        line = (f"| {model} | {1000 * row['single']:.1f} | {1000 * row['many']:.1f} | {row['bound']:.2f}× | "
                f"{1000 * row['fixed']:.1f} |")
        print(line, flush=True)
        lines.append(line)
    record("Seed stacking: the most it could gain (benchmarks/bench_seed_stacking.py)", lines,
           arguments.quick or not arguments.record)


if __name__ == "__main__":
    main()
