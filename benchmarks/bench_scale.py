"""Scale: the simulator at 1e5, 1e6 and 1e7 rows, each size in a fresh process: generation time, one training
epoch of mfh compact (the engine's Trainer, no early stopping, no history), evaluation of the validation and
test splits, and the process's peak RSS. Checks that time grows linearly in rows (time per row at the largest
size within 10% of the next one) and that peak RSS stays within the arrays + the model + 1 GiB.

Run: python -m benchmarks.bench_scale [--sizes 100000,1000000,10000000] [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import record
from mfh_cli.config import compose
from mfh_cli.data import Dataset
from mfh_cli.data.synthetic import simulate
from mfh_cli.engine.loop import build_trainer
from mfh_cli.engine.run import evaluate, keep_freed_memory

GIB = 1 << 30
LINEAR_TOLERANCE = 0.10
# Bytes per parameter while training with Adam: the value, its gradient and Adam's two moment estimates (fp32).
TRAINING_BYTES_PER_PARAMETER = 4 * 4


def peak_rss_bytes() -> int:
    """This process's peak resident set so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def swapped_bytes() -> int:
    """This process's memory swapped out now (VmSwap), 0 where /proc is missing."""
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.exists() else []:
        if line.startswith("VmSwap:"):
            return int(line.split()[1]) * 1024
    return 0


def dataset_bytes(dataset: Dataset) -> int:
    return sum(getattr(dataset, name).nbytes for name in Dataset.TENSORS if getattr(dataset, name) is not None)


def measure_size(rows: int, threads: int) -> dict:
    """Generate, train one epoch and evaluate at `rows` rows in this process: seconds and bytes."""
    keep_freed_memory()  # as `mfh train` does
    torch.set_num_threads(threads)
    cfg = compose([f"data.rows={rows}", "model=mfh", "size=compact", "trainer.max_epochs=1",
                   "trainer.progress=false"])
    baseline = peak_rss_bytes()
    started = time.perf_counter()
    dataset = simulate(cfg.data)
    generate_seconds = time.perf_counter() - started
    trainer = build_trainer(cfg, dataset)
    splits = trainer.splits
    fit = trainer.fit()
    started = time.perf_counter()
    for split in ("validation", "test"):
        evaluate(trainer, splits[split], split)
    evaluate_seconds = time.perf_counter() - started
    return {"rows": rows, "generate_s": generate_seconds, "train_s": fit.train_seconds, "train_rows": fit.samples,
            "evaluate_s": evaluate_seconds, "evaluate_rows": len(splits["validation"]) + len(splits["test"]),
            "baseline_rss": baseline, "peak_rss": peak_rss_bytes(), "swap": swapped_bytes(),
            "arrays": dataset_bytes(dataset),
            "model": TRAINING_BYTES_PER_PARAMETER * sum(p.numel() for p in trainer.model.parameters())}


def run_size(rows: int, threads: int) -> dict:
    """`measure_size` in a fresh interpreter, so that its peak RSS is this size's alone."""
    command = [sys.executable, "-m", "benchmarks.bench_scale", "--worker", str(rows), "--threads", str(threads)]
    finished = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if finished.returncode != 0:
        raise SystemExit(f"bench_scale: the {rows:,}-row worker failed:\n{finished.stderr[-2000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def per_row_change(larger: dict, smaller: dict, seconds: str, count: str) -> float:
    """Relative change of time per row from `smaller` to `larger` (0 = perfectly linear)."""
    return (larger[seconds] / larger[count]) / (smaller[seconds] / smaller[count]) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000,10000000", help="simulator rows, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1e4 and 1e5 rows: checks that the script runs")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # one size, JSON on stdout
    arguments = parser.parse_args()
    if arguments.worker is not None:
        print(json.dumps(measure_size(arguments.worker, arguments.threads)))
        return
    sizes = [10_000, 100_000] if arguments.quick else [int(size) for size in arguments.sizes.split(",")]
    lines = [f"Simulator, mfh compact, one epoch (batch {compose([]).trainer.batch_size}), {arguments.threads} "
             "threads, each size in a fresh process. Memory budget = arrays (the generated dataset) + model "
             "(parameters, gradients, Adam moments) + 1 GiB; the process itself (python, torch) is inside the GiB.",
             "", "| rows | generate s | train epoch s | µs per training row | evaluate s (val + test) | "
             "peak RSS GiB | budget GiB | within budget | swapped |", "|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    results = []
    for rows in sizes:
        result = run_size(rows, arguments.threads)
        results.append(result)
        budget = result["arrays"] + result["model"] + GIB
        lines.append(f"| {rows:,} | {result['generate_s']:.2f} | {result['train_s']:.2f} | "
                     f"{1e6 * result['train_s'] / result['train_rows']:.1f} | {result['evaluate_s']:.2f} | "
                     f"{result['peak_rss'] / GIB:.2f} | {budget / GIB:.2f} | "
                     f"{'yes' if result['peak_rss'] <= budget else '**no**'} | {result['swap'] / GIB:.2f} |")
        print(lines[-1], flush=True)
    larger, smaller = results[-1], results[-2]
    train_change = per_row_change(larger, smaller, "train_s", "train_rows")
    lines += ["", f"Linearity, {larger['rows']:,} vs {smaller['rows']:,} rows, change of time per row: training "
              f"{train_change:+.1%} (target within ±{LINEAR_TOLERANCE:.0%}: "
              f"{'met' if abs(train_change) <= LINEAR_TOLERANCE else 'NOT met'}), generation "
              f"{per_row_change(larger, smaller, 'generate_s', 'rows'):+.1%}, evaluation "
              f"{per_row_change(larger, smaller, 'evaluate_s', 'evaluate_rows'):+.1%}.",
              f"Process before any data: {larger['baseline_rss'] / GIB:.2f} GiB peak RSS."]
    title = "Scale: simulator rows (benchmarks/bench_scale.py)"
    record(title, lines, arguments.quick)


if __name__ == "__main__":
    main()
