"""Data: the KuaiRand slice's cold load (parse + encode + write the cache, into an empty cache directory) and
warm load (from that cache), each in a fresh process, median of 3. The cache is memory-mapped, so the warm
load is also timed with a first read of every tensor, which is what a run then pays.

Run: python -m benchmarks.bench_data [--repeats 3] [--quick]
(data: MFH_DATA_DIR, else shared/data beside the repository)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import record

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"  # beside the repository, as in CI
WARM_TARGET_SECONDS = 1.0


def measure_load(data_dir: Path, cache_dir: Path) -> dict:
    """Seconds to load KuaiRand in this process (imports done before), then to read every tensor once."""
    import mfh_cli.data.kuairand  # noqa: F401  (imported by load_dataset on first use: start-up, not loading)
    from mfh_cli.config import compose
    from mfh_cli.data import Dataset, load_dataset

    cfg = compose(["data=kuairand"])
    started = time.perf_counter()
    dataset = load_dataset(cfg, data_dir=data_dir, cache_dir=cache_dir, quiet=True)
    loaded = time.perf_counter()
    for name in Dataset.TENSORS:
        tensor = getattr(dataset, name)
        if tensor is not None:
            tensor.sum()
    return {"load_s": loaded - started, "read_s": time.perf_counter() - loaded, "rows": len(dataset)}


def run_load(data_dir: Path, cache_dir: Path) -> dict:
    """`measure_load` in a fresh interpreter; adds the whole process's wall time (start-up and imports)."""
    command = [sys.executable, "-m", "benchmarks.bench_data", "--worker", "--data-dir", str(data_dir),
               "--cache-dir", str(cache_dir)]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if finished.returncode != 0:
        raise SystemExit(f"bench_data: the load worker failed:\n{finished.stderr[-2000:]}")
    return {**json.loads(finished.stdout.strip().splitlines()[-1]), "process_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MFH_DATA_DIR") or DEFAULT_DATA_DIR))
    parser.add_argument("--quick", action="store_true", help="one repeat: checks that the script runs")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one load, JSON on stdout
    parser.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        print(json.dumps(measure_load(arguments.data_dir, arguments.cache_dir)))
        return
    logs = sorted(arguments.data_dir.glob("**/log_standard_*.csv"))
    if not logs:
        print(f"bench_data: no KuaiRand log (log_standard_*.csv) under {arguments.data_dir}; set MFH_DATA_DIR or "
              "get it with `mfh data download kuairand-pure`. Nothing measured.")
        return
    repeats = 1 if arguments.quick else arguments.repeats
    cold, warm = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="mfh-bench-cache-") as cache_dir:
            cold.append(run_load(arguments.data_dir, Path(cache_dir)))
            warm.append(run_load(arguments.data_dir, Path(cache_dir)))

    def median(results: list[dict], key: str) -> float:
        return statistics.median(result[key] for result in results)

    warm_total = median(warm, "load_s") + median(warm, "read_s")
    megabytes = sum(log.stat().st_size for log in logs) / 1e6
    lines = [f"KuaiRand slice ({arguments.data_dir.name}): {cold[0]['rows']:,} rows, {megabytes:.0f} MB of logs; "
             f"median of {repeats}, each load in a fresh process.", "",
             "| load | load s | first read of every tensor s | whole process s (with start-up) |",
             "|---|---:|---:|---:|"]
    for name, results in (("cold: parse + encode + write cache", cold), ("warm: from the cache (mmap)", warm)):
        lines.append(f"| {name} | {median(results, 'load_s'):.3f} | {median(results, 'read_s'):.3f} | "
                     f"{median(results, 'process_s'):.2f} |")
    lines += ["", f"Target: warm load (load + first read) ≤ {WARM_TARGET_SECONDS:.0f} s: {warm_total:.3f} s, "
              f"{'met' if warm_total <= WARM_TARGET_SECONDS else 'NOT met'}; cold / warm = "
              f"{median(cold, 'load_s') / max(warm_total, 1e-9):.0f}×."]
    title = "Data: KuaiRand load (benchmarks/bench_data.py)"
    record(title, lines, arguments.quick)


if __name__ == "__main__":
    main()
