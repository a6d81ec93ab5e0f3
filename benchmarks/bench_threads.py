"""Threads under contention: does OMP_WAIT_POLICY=PASSIVE stop a 2-thread training from collapsing when another
process is busy on the other core, and what does it cost on an idle machine?

Each measurement is a fresh process (the policy is read when torch's OpenMP starts) training mfh compact with the
engine's `Trainer.train_step` (batch 1024, simulator rows) and reporting its median step time. Scenarios, per
policy: alone with 2 threads; two such processes at once (2 + 2 threads on the cores, what `mfh train` twice or
a run beside a test suite gives); alone with 1 thread; two 1-thread processes at once (how studies run with
--jobs 2). Rounds alternate the policies so both see the same machine load.

Run: python -m benchmarks.bench_threads [--rounds 3] [--steps 25] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks.common import record

POLICIES = {"default": None, "PASSIVE": "PASSIVE"}
SCENARIOS = [("alone, 2 threads", 2, 1), ("two processes, 2 threads each", 2, 2), ("alone, 1 thread", 1, 1),
             ("two processes, 1 thread each", 1, 2)]
WARMUP_STEPS = 3


def worker(threads: int, steps: int, rows: int) -> None:
    """Train `steps` steps of mfh compact in this process; print the step times (seconds) as JSON."""
    import torch

    from mfh_cli.config import compose
    from mfh_cli.data.synthetic import simulate
    from mfh_cli.engine.loop import build_trainer
    from mfh_cli.engine.run import keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(threads)
    cfg = compose(["model=mfh", f"data.rows={rows}"])
    dataset = simulate(cfg.data)
    trainer = build_trainer(cfg, dataset)
    train, batch = trainer.splits["train"], int(cfg.trainer.batch_size)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    seconds = []
    for step in range(WARMUP_STEPS + steps):
        start = step * batch % (len(train) - batch)
        rows_of_batch = train.rows(order[start:start + batch])
        began = time.perf_counter()
        trainer.train_step(rows_of_batch, epoch=1)
        if step >= WARMUP_STEPS:
            seconds.append(time.perf_counter() - began)
    print(json.dumps(seconds))


def run_scenario(policy: str | None, threads: int, processes: int, steps: int, rows: int) -> float:
    """Median step seconds over `processes` simultaneous workers with OMP_WAIT_POLICY=`policy` (None: unset)."""
    environment = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if policy is not None:
        environment["OMP_WAIT_POLICY"] = policy
    command = [sys.executable, "-m", "benchmarks.bench_threads", "--worker", "--threads", str(threads),
               "--steps", str(steps), "--rows", str(rows)]
    workers = [subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, text=True)
               for _ in range(processes)]
    times = []
    for process in workers:
        output, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"worker failed with exit code {process.returncode}")
        times.extend(json.loads(output.strip().splitlines()[-1]))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--quick", action="store_true", help="one round of a few steps; printed, not recorded")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        worker(arguments.threads, arguments.steps, arguments.rows)
        return
    rounds, steps = (1, 4) if arguments.quick else (arguments.rounds, arguments.steps)
    medians: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for name, threads, processes in SCENARIOS:
            for policy_name, policy in POLICIES.items():
                seconds = run_scenario(policy, threads, processes, steps, arguments.rows)
                medians.setdefault((name, policy_name), []).append(seconds)
                print(f"{name}, {policy_name}: {seconds * 1e3:.1f} ms/step", flush=True)
    lines = [f"mfh compact, batch 1024, median step time over each process's {steps} steps, median of {rounds} "
             "rounds (policies alternating); each process is fresh, so the policy applies from its start.", "",
             "| scenario | default policy ms/step | OMP_WAIT_POLICY=PASSIVE ms/step | PASSIVE / default |",
             "|---|---:|---:|---:|"]
    for name, _, _ in SCENARIOS:
        default = statistics.median(medians[(name, "default")]) * 1e3
        passive = statistics.median(medians[(name, "PASSIVE")]) * 1e3
        lines.append(f"| {name} | {default:.1f} | {passive:.1f} | {passive / default:.2f} |")
    record("Threads under contention: OMP_WAIT_POLICY (benchmarks/bench_threads.py)", lines, arguments.quick)


if __name__ == "__main__":
    main()
