"""The study-sized run, the main job's unit of work: wall time of `mfh train model=mfh trainer.threads=1 --quiet`
on the default simulator (60k rows, compact, batch 1024, up to 8 epochs with early stopping), each run a fresh
process, as `mfh ablate` workers run it with one thread each.

Sections (all by default; `--sections` picks some):
- speedup: this tree against `--baseline DIR`, an earlier source tree (`git archive <commit> | tar -x -C DIR`,
  with this tree's conf/ copied over its own so that both compose the same run) run with PYTHONPATH=DIR,
  alternating so that both see the same machine load; the metrics must be identical when only speed changed.
- bf16: trainer.precision=bf16 (autocast) against fp32, alternating; on a CPU without native bf16 (engine/placement.py)
  the fp32 runs alone, and the record says "no native bf16".
- compile: trainer.compile=true in a fresh process with an empty compile cache (cold), then with that cache
  (warm), and the second of two runs in one process (a study worker that already compiled the model).
- study: `mfh ablate --study <study> --seeds <n>` in fp32 and in bf16: every metric cell side by side (mean over
  seeds) and the wall time of each; where bf16 is not native, not run.
- kernels: trainer.kernels=fused (the default: models/parts/fused.py) against eager, alternating.
- recipe: what the training recipes cost (conf/recipe/): the authors' (BatchNorm), no BatchNorm without averaging,
  and low_noise (no BatchNorm, weight averaging), alternating, on a fixed number of epochs so that every variant
  trains as many steps; weight averaging must add at most a few per cent to a run (the throughput issue).
- unit: the issue's study-sized unit of work, one variant over its seeds (`mfh train model=mfh data.rows=60000
  trainer.threads=1 seed=s`, s = 0 … `--unit-seeds`−1, each a fresh process), this tree against `--baseline DIR`,
  alternating per seed; the figure is the sum of the process wall times, and its target ≥ 3× the baseline.

Run: python -m benchmarks.bench_study_run [--baseline DIR] [--repeats 3] [--sections ...] [--study multifaceted]
[--seeds 2] [--quick]
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

import pandas as pd

from benchmarks.common import no_native_bf16, record

REPOSITORY = Path(__file__).resolve().parents[1]
STUDY_RUN = ["model=mfh", "trainer.threads=1"]
QUICK_RUN = ["data.rows=6000", "trainer.max_epochs=1"]
SECTIONS = ("speedup", "bf16", "compile", "study", "kernels", "unit", "recipe")
UNIT_TARGET = 3.0  # the target for the unit: this tree ≥ 3× faster than the baseline


def train_in_subprocess(overrides: list[str], source: Path | None = None, environment: dict | None = None) -> dict:
    """`mfh train <overrides>` in a fresh process (from `source` when given): wall seconds and its metrics.json."""
    env = {**os.environ, **(environment or {})}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    # `python -m` puts the working directory first on sys.path: run from the source tree itself, or the
    # baseline would import this tree's package (PYTHONPATH comes after the working directory).
    working_directory = source if source is not None else REPOSITORY
    with tempfile.TemporaryDirectory() as results:
        command = [sys.executable, "-m", "mfh_cli", "train", *overrides, "--quiet", "--format", "json",
                   "--results-dir", results]
        started = time.perf_counter()
        finished = subprocess.run(command, env=env, capture_output=True, text=True, cwd=working_directory)
        wall = time.perf_counter() - started
        if finished.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed: {finished.stderr.strip()[-500:]}")
        (metrics_file,) = Path(results, "runs").glob("*/metrics.json")
        return {"wall": wall, "metrics": json.loads(metrics_file.read_text())}


def summary(runs: list[dict]) -> str:
    """Median process wall time, in-run wall time and training samples/s of some runs, as table cells."""
    wall = statistics.median(run["wall"] for run in runs)
    inside = statistics.median(run["metrics"]["wall_seconds"] for run in runs)
    speed = statistics.median(run["metrics"]["train_samples_per_second"] for run in runs)
    epochs = runs[0]["metrics"]["epochs_run"]
    return f"{wall:.1f} | {inside:.1f} | {speed:,.0f} | {epochs}"


def largest_difference(first: dict, second: dict) -> float:
    """The largest absolute difference between two runs' test and validation metric values."""
    cells_of = [run["metrics"]["metrics"] for run in (first, second)]
    differences = [abs(cell["value"] - cells_of[1][split][group][behaviour]["value"])
                   for split in ("test", "validation") for group, cells in cells_of[0][split].items()
                   for behaviour, cell in cells.items() if cell["value"] is not None]
    return max(differences, default=0.0)


def alternate(variants: dict[str, tuple[list[str], Path | None, dict | None]], repeats: int
              ) -> dict[str, list[dict]]:
    """Run every variant `repeats` times, one of each per round, so that each round sees the same load."""
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for round_number in range(repeats):
        for name, (overrides, source, environment) in variants.items():
            runs[name].append(train_in_subprocess(overrides, source, environment))
            print(f"round {round_number + 1}, {name}: {runs[name][-1]['wall']:.1f} s", flush=True)
    return runs


HEADER = ["| variant | process wall s | run wall s (train + evaluate) | training samples/s | epochs |",
          "|---|---:|---:|---:|---:|"]


def speedup_lines(base: list[str], baseline: Path, repeats: int) -> list[str]:
    runs = alternate({"baseline": (base, baseline, None), "this tree": (base, None, None)}, repeats)
    before, after = (statistics.median(run["wall"] for run in runs[name]) for name in ("baseline", "this tree"))
    difference = largest_difference(runs["baseline"][0], runs["this tree"][0])
    run_ids = {run["metrics"]["run_id"] for name in runs for run in runs[name]}
    if len(run_ids) > 1:  # each tree composes its own conf/: different defaults make different runs
        raise SystemExit(f"the two trees compose different configs (run ids {', '.join(sorted(run_ids))}): "
                         "give the baseline this tree's conf/")
    return [f"### Speedup: `mfh train {' '.join(base)} --quiet`, this tree against the baseline tree "
            f"{baseline.name}", "", *HEADER,
            f"| baseline | {summary(runs['baseline'])} |", f"| this tree | {summary(runs['this tree'])} |", "",
            f"- process wall time: {before:.1f} s → {after:.1f} s ({before / after:.2f}× faster), median of "
            f"{repeats}, alternating",
            f"- largest metric difference between the two: {difference:.2g} "
            f"({'identical numbers' if difference == 0 else 'NOT identical'})", ""]


def bf16_lines(base: list[str], repeats: int) -> list[str]:
    missing = no_native_bf16()
    if missing:
        runs = alternate({"fp32": (base, None, None)}, repeats)
        return [f"### The study-sized run in fp32 (`{' '.join(base)}`)", "", *HEADER,
                f"| fp32 | {summary(runs['fp32'])} |", f"| bf16 | {missing}: not measured | | | |", ""]
    runs = alternate({"fp32": (base, None, None), "bf16": ([*base, "trainer.precision=bf16"], None, None)}, repeats)
    return [f"### bf16 autocast on the study-sized run (`{' '.join(base)}`)", "", *HEADER,
            f"| fp32 | {summary(runs['fp32'])} |", f"| bf16 | {summary(runs['bf16'])} |", "",
            f"- largest metric difference bf16 − fp32 (seed 0): {largest_difference(runs['fp32'][0], runs['bf16'][0]):.3g}",
            ""]


def kernels_lines(base: list[str], repeats: int) -> list[str]:
    runs = alternate({"eager": ([*base, "trainer.kernels=eager"], None, None),
                      "fused": ([*base, "trainer.kernels=fused"], None, None)}, repeats)
    used = {run["metrics"]["hardware"]["kernels"] for run in runs["fused"]}
    before, after = (statistics.median(run["wall"] for run in runs[name]) for name in ("eager", "fused"))
    return [f"### Fused kernels on the study-sized run (`{' '.join(base)}`), trainer.kernels=fused against eager",
            "", *HEADER, f"| eager | {summary(runs['eager'])} |", f"| fused ({', '.join(sorted(used))}) | "
            f"{summary(runs['fused'])} |", "",
            f"- process wall time: {before:.1f} s → {after:.1f} s ({before / after:.2f}× faster), median of "
            f"{repeats}, alternating",
            f"- largest metric difference fused − eager (seed 0; float rounding, then training follows its own "
            f"path, as another seed would): {largest_difference(runs['eager'][0], runs['fused'][0]):.3g}", ""]


def recipe_lines(base: list[str], repeats: int) -> list[str]:
    fixed = [*base, "trainer.patience=1000", "trainer.max_epochs=4"]  # every variant trains the same steps
    variants = {"authors": [*fixed, "recipe=authors"],
                "no BatchNorm, no averaging": [*fixed, "recipe=low_noise", "trainer.ema_decay=null"],
                "low_noise": [*fixed, "recipe=low_noise"]}
    runs = alternate({name: (overrides, None, None) for name, overrides in variants.items()}, repeats)
    wall = {name: statistics.median(run["wall"] for run in runs[name]) for name in runs}
    averaging = wall["low_noise"] / wall["no BatchNorm, no averaging"] - 1
    return [f"### Training recipes on the study-sized run (`{' '.join(fixed)}`), alternating", "", *HEADER,
            *[f"| {name} | {summary(runs[name])} |" for name in runs], "",
            f"- weight averaging (an EMA update of the flat parameters each step, the average evaluated each "
            f"epoch): {averaging:+.1%} process wall time; dropping BatchNorm: "
            f"{wall['no BatchNorm, no averaging'] / wall['authors']:.2f}× the authors' recipe's; low_noise "
            f"{wall['authors'] / wall['low_noise']:.2f}× faster than the authors' (medians of {repeats})", ""]


def unit_lines(base: list[str], baseline: Path, seeds: int) -> list[str]:
    """One variant over `seeds` seeds, each run a fresh process, in both trees: the summed wall time."""
    trees = {"baseline": baseline, "this tree": None}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for seed in range(seeds):
        for name, source in trees.items():
            runs[name].append(train_in_subprocess([*base, f"seed={seed}"], source))
            print(f"seed {seed}, {name}: {runs[name][-1]['wall']:.1f} s", flush=True)
    total = {name: sum(run["wall"] for run in runs[name]) for name in trees}
    ratio = total["baseline"] / total["this tree"]
    differences = [largest_difference(first, second) for first, second in zip(runs["baseline"], runs["this tree"])]
    return [f"### Study-sized unit: `mfh train {' '.join(base)} seed=s` for {seeds} seeds, each a fresh process, this "
            f"tree against the baseline tree {baseline.name}", "", *HEADER,
            *(f"| {name}, seed {seed} | {summary([run])} |" for name in trees for seed, run in enumerate(runs[name])),
            "", f"- the unit's wall time: {total['baseline']:.1f} s → {total['this tree']:.1f} s "
            f"({ratio:.2f}× faster; target {UNIT_TARGET:.0f}×: {'met' if ratio >= UNIT_TARGET else 'NOT met'})",
            f"- largest metric difference between the trees, per seed: "
            f"{', '.join(f'{value:.3g}' for value in differences)} (0 where only speed changed)", ""]


def second_run_in_process(overrides: list[str], cache: str) -> float:
    """Wall seconds of the second of two runs (seeds 0, 1) in one process: a worker that already compiled."""
    code = ("import sys, time, tempfile, pathlib\n"
            "from mfh_cli.config import compose\n"
            "from mfh_cli.engine.run import train\n"
            "with tempfile.TemporaryDirectory() as results:\n"
            "    for seed in (0, 1):\n"
            "        started = time.perf_counter()\n"
            "        train(compose([*sys.argv[1:], f'seed={seed}']), results_dir=pathlib.Path(results), quiet=True)\n"
            "    print(time.perf_counter() - started)\n")
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    finished = subprocess.run([sys.executable, "-c", code, *overrides], env=env, capture_output=True, text=True)
    if finished.returncode != 0:
        raise SystemExit(f"in-process pair failed: {finished.stderr.strip()[-500:]}")
    return float(finished.stdout.strip().splitlines()[-1])


def compile_lines(base: list[str], repeats: int) -> list[str]:
    compiled = [*base, "trainer.compile=true"]
    with tempfile.TemporaryDirectory() as cache:
        environment = {"TORCHINDUCTOR_CACHE_DIR": cache}
        cold = train_in_subprocess(compiled, environment=environment)
        print(f"compile, cold cache: {cold['wall']:.1f} s", flush=True)
        runs = alternate({"eager": (base, None, None), "compiled": (compiled, None, environment)}, repeats)
        second = second_run_in_process(compiled, cache)
    eager = statistics.median(run["metrics"]["wall_seconds"] for run in runs["eager"])
    return [f"### torch.compile on the study-sized run (`{' '.join(base)}`)", "", *HEADER,
            f"| eager | {summary(runs['eager'])} |", f"| compiled, empty compile cache | {summary([cold])} |",
            f"| compiled, warm compile cache | {summary(runs['compiled'])} |", "",
            f"- second run of a compiled model in the same process (seed 1 after seed 0, no compiling left): "
            f"{second:.1f} s against {eager:.1f} s run wall (train + evaluate) of an eager run",
            f"- largest metric difference compiled − eager (seed 0): "
            f"{largest_difference(runs['eager'][0], runs['compiled'][0]):.3g}", ""]


def ablate(study: str, seeds: int, extra: list[str], results: Path) -> tuple[float, pd.DataFrame]:
    """`mfh ablate --study <study> --seeds <seeds> --jobs 2 <extra>`: its wall time and runs.csv."""
    command = [sys.executable, "-m", "mfh_cli", "ablate", "--study", study, "--seeds", str(seeds), "--jobs", "2",
               "--quiet", "--results-dir", str(results), *extra]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {finished.stderr.strip()[-500:]}")
    (runs_csv,) = results.glob(f"studies/{study}/*/runs.csv")
    return time.perf_counter() - started, pd.read_csv(runs_csv)


def study_lines(study: str, seeds: int, extra: list[str]) -> list[str]:
    missing = no_native_bf16()
    if missing:
        return [f"### bf16 against fp32 on study `{study}`: not run, {missing}", ""]
    with tempfile.TemporaryDirectory() as root:
        fp32_seconds, fp32 = ablate(study, seeds, extra, Path(root, "fp32"))
        bf16_seconds, bf16 = ablate(study, seeds, [*extra, "trainer.precision=bf16"], Path(root, "bf16"))
    keys = ["variant", "split", "group", "task", "metric"]
    table = (fp32[fp32.split == "test"].groupby(keys)["value"].mean().rename("fp32").to_frame()
             .join(bf16[bf16.split == "test"].groupby(keys)["value"].mean().rename("bf16")))
    table["bf16 − fp32"] = table["bf16"] - table["fp32"]
    lines = [f"### bf16 against fp32 on study `{study}` ({seeds} seeds, same seeds, test split, mean over seeds)", "",
             f"- wall time of `mfh ablate --study {study} --seeds {seeds} --jobs 2`: fp32 {fp32_seconds:.0f} s, "
             f"bf16 {bf16_seconds:.0f} s ({fp32_seconds / bf16_seconds:.2f}×)", "",
             "| variant | group | task | metric | fp32 | bf16 | bf16 − fp32 |", "|---|---|---|---|---:|---:|---:|"]
    for (variant, _, group, task, metric), row in table.iterrows():
        lines.append(f"| {variant} | {group} | {task} | {metric} | {row['fp32']:.4f} | {row['bf16']:.4f} | "
                     f"{row['bf16 − fp32']:+.4f} |")
    lines.append(f"- largest |bf16 − fp32|: {table['bf16 − fp32'].abs().max():.4f}")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", type=Path, default=None, help="an earlier source tree to compare against")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--study", default="multifaceted")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--unit-seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny runs, one repeat; printed, not recorded")
    arguments = parser.parse_args()
    sections = arguments.sections.split(",")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
    base = [*STUDY_RUN, *(QUICK_RUN if arguments.quick else [])]
    repeats = 1 if arguments.quick else arguments.repeats
    lines: list[str] = []
    if "speedup" in sections and arguments.baseline is not None:
        lines += speedup_lines(base, arguments.baseline.resolve(), repeats)
    if "bf16" in sections:
        lines += bf16_lines(base, repeats)
    if "compile" in sections:
        lines += compile_lines(base, repeats)
    if "study" in sections:
        lines += study_lines(arguments.study, 1 if arguments.quick else arguments.seeds,
                             QUICK_RUN if arguments.quick else [])
    if "kernels" in sections:
        lines += kernels_lines(base, repeats)
    if "unit" in sections and arguments.baseline is not None:
        lines += unit_lines([*base, *([] if arguments.quick else ["data.rows=60000"])],
                            arguments.baseline.resolve(), 1 if arguments.quick else arguments.unit_seeds)
    if "recipe" in sections:
        lines += recipe_lines(base, repeats)
    record("Study-sized run: speed, bf16, torch.compile (benchmarks/bench_study_run.py)", lines, arguments.quick)


if __name__ == "__main__":
    main()
