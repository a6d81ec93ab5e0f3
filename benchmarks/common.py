"""Shared helpers for the benchmark scripts: machine facts, medians, and appending to results.md."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.md"


def machine() -> str:
    """One line naming the CPU, cores and torch build this was measured on."""
    import torch

    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads, "
            f"{torch.backends.cpu.get_cpu_capability()})")


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


def append_results(title: str, lines: list[str]) -> None:
    """Append a dated section to benchmarks/results.md and echo it."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([f"## {title} ({stamp})", f"Machine: {machine()}", "", *lines, "", ""])
    print(text)
    with RESULTS.open("a") as handle:
        handle.write(text)


def record(title: str, lines: list[str], quick: bool) -> None:
    """Append to results.md, or only print when `--quick` (a check that the script runs is not a result)."""
    if quick:
        print("\n".join([f"## {title} [--quick, not recorded]", *lines]))
    else:
        append_results(title, lines)
