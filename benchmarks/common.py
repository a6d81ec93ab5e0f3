"""Shared helpers for the benchmark scripts: machine facts (CPU model, class and features), medians, and
appending to results.md."""

from __future__ import annotations

import datetime
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mfh_cli import available_cores
from mfh_cli.engine.placement import missing_cpu_bf16, probe_machine

RESULTS = Path(__file__).resolve().parent / "results.md"


def machine() -> str:
    """One line naming the CPU with its features (AVX2, AVX-512, AVX512_BF16, AMX) and machine class, the cores,
    the GPU if any, and the torch build and threads this was measured on."""
    found = probe_machine()
    gpu = f", GPU {found.cuda.name}" if found.cuda is not None else ""
    return (f"{found.cpu.describe()}, {available_cores()} cores{gpu}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()} kernels); "
            f"class: {found.cpu.machine_class}")


def no_native_bf16() -> str | None:
    """Why this CPU computes bf16 only emulated ('this CPU (…) has no native bf16, …'), None where it is native."""
    cpu = probe_machine().cpu
    return None if cpu.native_bf16 else missing_cpu_bf16(cpu)


def median_seconds(function: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of `function` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def load() -> str:
    """The 1-minute load average at the end, this benchmark's own threads included: above the cores, something else
    was running too and the figures understate the machine."""
    return f"load average {os.getloadavg()[0]:.1f} over the last minute on {os.cpu_count()} cores, this run included"


def append_results(title: str, lines: list[str]) -> None:
    """Append a dated section to benchmarks/results.md and echo it."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([f"## {title} ({stamp})", f"Machine: {machine()}; {load()}", "", *lines, "", ""])
    print(text)
    with RESULTS.open("a") as handle:
        handle.write(text)


def record(title: str, lines: list[str], quick: bool) -> None:
    """Append to results.md, or only print when `--quick` (a check that the script runs is not a result)."""
    if quick:
        print("\n".join([f"## {title} [--quick, not recorded]", f"Machine: {machine()}; {load()}", *lines]))
    else:
        append_results(title, lines)
