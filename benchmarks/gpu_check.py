"""GPU check, prepared for a session that has a CUDA GPU: does the device path train the same model as the CPU?

1. Forward: the same initial mfh on the same 4,096 test rows, eval mode, on the CPU and on the GPU in fp32: the
   outputs agree within 1e-4 (absolute and relative; float rounding of a few hundred-wide sums, no TF32).
2. Training: the study-sized run (`model=mfh trainer.threads=1`, the default simulator) on the CPU with seeds 0
   and 1, and on the GPU in fp32 and with trainer.precision=auto (bf16 where the GPU has it natively), seed 0.
   Rounding differences grow through training into run-to-run noise, so the stated tolerance is that noise: the
   largest |GPU fp32 − CPU fp32| over the test metric cells is at most the largest |seed 1 − seed 0| on the CPU.
   The bf16 run is reported beside it, not judged.
3. Records each run's training samples/s and the device's name in benchmarks/results.md.

Exits 1 with one line when there is no CUDA device (a CPU build of torch included), 1 when a check fails.
Run: python -m benchmarks.gpu_check [--rows N] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import record
from mfh_cli.config import compose
from mfh_cli.data import load_dataset
from mfh_cli.engine.loop import prepare_splits
from mfh_cli.engine.placement import probe_machine
from mfh_cli.engine.run import train
from mfh_cli.models import build_model

STUDY_RUN = ["model=mfh", "trainer.threads=1", "trainer.progress=false"]
QUICK_RUN = ["data.rows=6000", "trainer.max_epochs=1"]
FORWARD_TOLERANCE = 1e-4
FORWARD_ROWS = 4096


def no_cuda_reason() -> str | None:
    """Why this process cannot use a CUDA device, None when it can."""
    if torch.version.cuda is None:
        return f"no CUDA device: torch {torch.__version__} is a CPU build (install a CUDA build of the same version)"
    if probe_machine().cuda is None:
        return f"no CUDA device: torch {torch.__version__} (CUDA {torch.version.cuda}) finds none"
    return None


def forward_difference(overrides: list[str]) -> float:
    """Largest |GPU − CPU| of the initial model's fp32 outputs on the same test rows, eval mode."""
    cfg = compose(overrides)
    dataset = load_dataset(cfg, quiet=True)
    torch.manual_seed(int(cfg.seed))
    model = build_model(cfg, dataset.schema).eval()
    test = prepare_splits(dataset, list(cfg.tasks.behaviours), torch.device("cpu"))["test"]
    rows = test.rows(slice(0, FORWARD_ROWS))
    with torch.no_grad():
        on_cpu = model(rows.categorical, rows.dense, rows.cell)
        model.cuda()
        on_gpu = model(rows.categorical.cuda(), rows.dense.cuda(), rows.cell.cuda()).cpu()
    scale = on_cpu.abs().clamp(min=1.0)
    return float(((on_gpu - on_cpu).abs() / scale).max())


def test_cells(metrics: dict) -> dict[tuple[str, str], float]:
    return {(group, behaviour): cell["value"] for group, cells in metrics["metrics"]["test"].items()
            for behaviour, cell in cells.items() if cell["value"] is not None}


def largest_difference(first: dict, second: dict) -> float:
    a, b = test_cells(first), test_cells(second)
    return max(abs(a[key] - b[key]) for key in a.keys() & b.keys())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=None, help="simulator rows (default: the study's own)")
    parser.add_argument("--quick", action="store_true", help="tiny runs: checks that the script runs, not recorded")
    arguments = parser.parse_args()
    reason = no_cuda_reason()
    if reason is not None:
        print(f"gpu_check: {reason}; nothing checked", file=sys.stderr)
        raise SystemExit(1)
    base = [*STUDY_RUN, *(QUICK_RUN if arguments.quick else []),
            *([f"data.rows={arguments.rows}"] if arguments.rows else [])]
    forward = forward_difference(base)
    runs = {}
    with tempfile.TemporaryDirectory() as results:
        for name, overrides in (("cpu fp32, seed 0", ["trainer.device=cpu"]),
                                ("cpu fp32, seed 1", ["trainer.device=cpu", "seed=1"]),
                                ("cuda fp32, seed 0", ["trainer.device=cuda"]),
                                ("cuda auto, seed 0", ["trainer.device=cuda", "trainer.precision=auto"])):
            runs[name] = train(compose([*base, *overrides]), results_dir=Path(results), quiet=True).metrics
            print(f"{name}: {runs[name]['train_samples_per_second']:,.0f} training samples/s", flush=True)
    reference = runs["cpu fp32, seed 0"]
    noise = largest_difference(reference, runs["cpu fp32, seed 1"])
    gpu_fp32 = largest_difference(reference, runs["cuda fp32, seed 0"])
    gpu_auto = largest_difference(reference, runs["cuda auto, seed 0"])
    forward_ok, training_ok = forward <= FORWARD_TOLERANCE, gpu_fp32 <= noise
    gpu = probe_machine().cuda
    lines = [f"`{' '.join(base)}` on {gpu.name} (compute capability {gpu.capability[0]}.{gpu.capability[1]}) "
             "against this machine's CPU.", "",
             "| run | precision | training samples/s | wall s | best epoch | largest test-cell difference to cpu "
             "fp32 seed 0 |", "|---|---|---:|---:|---:|---:|"]
    for name, metrics in runs.items():
        difference = "—" if metrics is reference else f"{largest_difference(reference, metrics):.4f}"
        lines.append(f"| {name} | {metrics['precision']} | {metrics['train_samples_per_second']:,.0f} | "
                     f"{metrics['wall_seconds']:.1f} | {metrics['best_epoch']} | {difference} |")
    lines += ["",
              f"- forward, initial model, {FORWARD_ROWS} test rows, fp32: largest relative |GPU − CPU| {forward:.2e} "
              f"(tolerance {FORWARD_TOLERANCE:.0e}): {'pass' if forward_ok else 'FAIL'}",
              f"- trained, fp32: largest |GPU − CPU| {gpu_fp32:.4f} against the CPU's seed-to-seed {noise:.4f}: "
              f"{'pass' if training_ok else 'FAIL'}",
              f"- trained, precision auto ({runs['cuda auto, seed 0']['precision']} on this GPU): largest |GPU − CPU "
              f"fp32| {gpu_auto:.4f} (reported, not judged)"]
    record("GPU check: the study-sized run on CUDA against the CPU (benchmarks/gpu_check.py)", lines, arguments.quick)
    if not (forward_ok and training_ok):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
