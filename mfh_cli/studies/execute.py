"""Run a study's planned runs (in-process, or in worker processes), skip finished ones, write runs.csv."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mfh_cli.config import compose, recipe_of
from mfh_cli.engine import tracking
from mfh_cli.engine.run import ensure_writable, is_finished, train
from mfh_cli.errors import Interrupted, MfhError, RunError
from mfh_cli.files import write_text_atomically
from mfh_cli.studies.launch import is_launcher_override, launch
from mfh_cli.studies.plan import PlannedRun, plan, refuse_seed_overrides, runnable_studies
from mfh_cli.studies.pool import init_worker, stop_workers
from mfh_cli.studies.spec import Study, load_study
from mfh_cli.studies.tuned import apply_tuning
from mfh_cli.tasks import RUNS_COLUMNS, kind_of, metrics_of


@dataclass
class StudyOutcome:
    study: Study
    dataset: str
    directory: Path  # results/studies/<study>/<dataset>
    runs: list[PlannedRun]


def ablate(names: Sequence[str], seeds: int | Sequence[int] | None = None, jobs: int = 1,
           overrides: Sequence[str] = (), data_dir: Path | None = None, results_dir: Path = Path("results"),
           quiet: bool = False, force: bool = False, sequential: dict | None = None,
           tuned: bool = False) -> list[StudyOutcome]:
    """Plan every named study, train the runs not yet finished (shared runs once), write each runs.csv.
    `sequential` (from `mfh ablate --until-decided`) says how the seeds were chosen; study.json records it.
    `tuned`: every variant trains with `mfh tune`'s best overrides (studies/tuned.py), recorded in study.json too.

    `seeds`: a count (seeds 0 … n−1), the seeds themselves (`mfh ablate --seeds 100-104`), or None (each study's
    own count); a `seed=` override is refused, never dropped.

    SIGINT / SIGTERM (`Interrupted`) stops the sweep within one run's time, keeps the finished runs and re-raises
    saying how many of the sweep's runs are done."""
    launcher = [item for item in overrides if is_launcher_override(item)]
    overrides = [item for item in overrides if not is_launcher_override(item)]
    refuse_seed_overrides(overrides, "mfh ablate")
    studies = runnable_studies([expanded for name in names for expanded in load_study(name).expand()], overrides)
    if tuned:
        studies = apply_tuning(studies, overrides, results_dir)
    planned = {study.name: plan(study, seed_list(seeds, study.seeds), overrides) for study in studies}
    unique = {run.run_id: run for runs in planned.values() for run in runs}
    ensure_writable(results_dir)  # after planning (a bad config writes nothing), before any training
    pending = [run for run in unique.values() if force or not run_finished(results_dir, run.run_id)]
    for study in studies:  # the tracker's extra and store, checked (and each study's experiment made) up front
        first = next((run for run in pending if run.study == study.name), None)
        if first is not None:
            tracking.prepare(first.config(), results_dir)
    failures: list[tuple[PlannedRun, str]] = []
    try:
        if launcher:  # Hydra's launcher plugins dispatch the runs (see studies/launch.py)
            waiting = {run.run_id for run in pending}
            for study in studies:
                mine = [run for run in planned[study.name] if run.run_id in waiting]
                launch(study.name, planned[study.name], mine, seed_list(seeds, study.seeds), overrides, launcher,
                       data_dir, results_dir, tuned)
                waiting -= {run.run_id for run in mine}
        else:
            failures = execute(pending, jobs, data_dir, results_dir, quiet, force)
    except Interrupted as interrupted:
        done = sum(run_finished(results_dir, run_id) for run_id in unique)
        raise Interrupted(interrupted.signum, f"interrupted: {done} of {len(unique)} runs done, rerun to "
                                              f"resume") from None
    if failures:
        lines = "; ".join(f"{run.variant} seed {run.seed} ({run.grid}): {message}" for run, message in failures)
        raise MfhError(f"{len(failures)} run(s) failed, runs.csv not written (rerun to retry them): {lines}")
    outcomes = []
    for study in studies:
        runs = planned[study.name]
        directory = results_dir / "studies" / study.name / runs[0].dataset
        write_study_files(study, runs, directory, results_dir, sorted({run.seed for run in runs}), sequential)
        outcomes.append(StudyOutcome(study, runs[0].dataset, directory, runs))
    return outcomes


def seed_list(seeds: int | Sequence[int] | None, default: int) -> list[int]:
    """The seeds a study trains: `seeds` itself when a list, 0 … seeds−1 for a count, 0 … default−1 for None."""
    if seeds is None:
        return list(range(default))
    return list(range(seeds)) if isinstance(seeds, int) else list(seeds)


def execute(pending: list[PlannedRun], jobs: int, data_dir: Path | None, results_dir: Path, quiet: bool,
            force: bool) -> list[tuple[PlannedRun, str]]:
    """Train `pending` runs, `jobs` at a time with the cores split between them; returns the failures."""
    failures: list[tuple[PlannedRun, str]] = []
    if not pending:
        return failures
    with SweepProgress(len(pending), quiet) as progress:

        def done(run: PlannedRun, outcome: tuple[str | None, float]) -> None:
            error, seconds = outcome
            if error:
                failures.append((run, error))
            progress.finished(run, seconds, error)

        if jobs <= 1:
            for run in pending:
                done(run, train_one(run.overrides, data_dir, results_dir, force))
        else:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"),
                                     initializer=init_worker, initargs=(os.getpid(),)) as pool:
                try:
                    futures = {pool.submit(train_one, run.overrides, data_dir, results_dir, force): run
                               for run in pending}
                    for future in as_completed(futures):
                        done(futures[future], future.result())
                except Interrupted:
                    stop_workers(pool)
                    raise
    return failures


class SweepProgress:
    """A sweep's progress on stderr: a live bar on a terminal; elsewhere (a log: CI, nohup, a cluster job) one plain
    line per finished run, `[12/48] multifaceted: hmtl seed 2 (play)  41 s`; nothing when quiet."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.count, self.quiet = total, 0, quiet
        console = Console(stderr=True)
        self.bar = None if quiet or not console.is_terminal else Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)

    def __enter__(self) -> SweepProgress:
        if self.bar:
            self.bar.__enter__()
            self.task = self.bar.add_task("runs", total=self.total)
        return self

    def __exit__(self, *exc) -> None:
        if self.bar:
            self.bar.__exit__(*exc)

    def finished(self, run: PlannedRun, seconds: float, error: str | None) -> None:
        """Count one finished (or failed) run."""
        self.count += 1
        label = f"{run.study}: {run.variant} seed {run.seed} ({run.grid})"
        if self.bar:
            self.bar.update(self.task, advance=1, description=label)
        elif not self.quiet:
            outcome = f"failed: {error}" if error else f"{seconds:.0f} s"
            print(f"[{self.count}/{self.total}] {label}  {outcome}", file=sys.stderr, flush=True)


def run_finished(results_dir: Path, run_id: str) -> bool:
    """Whether the run's directory holds a finished run (engine/run.py read_finished decides)."""
    return is_finished(results_dir / "runs" / run_id)


def train_one(overrides: Sequence[str], data_dir: Path | None, results_dir: Path,
              force: bool) -> tuple[str | None, float]:
    """Train one planned run (also the worker-process entry); returns the error message of a failed run (None
    otherwise) and the run's wall seconds. The planned overrides carry the sweep's one thread per run
    (studies/plan.py)."""
    started = time.perf_counter()
    cfg = compose(overrides)
    try:
        train(cfg, data_dir=data_dir, results_dir=results_dir, force=force, quiet=True)
    except RunError as error:
        return str(error), time.perf_counter() - started
    return None, time.perf_counter() - started


def write_study_files(study: Study, runs: list[PlannedRun], directory: Path, results_dir: Path,
                      seeds: list[int], sequential: dict | None = None) -> None:
    """runs.csv (one row per variant, seed, split, group, task, metric; the oracle as its own variant) + study.json
    (with `sequential` when the seeds were added until decided: a fixed-seed sweep drops it)."""
    rows = []
    for run in runs:
        metrics = json.loads((results_dir / "runs" / run.run_id / "metrics.json").read_text())
        rows.extend(metric_rows(run, run.variant, metrics["metrics"]))
        if run.variant == study.reference and metrics.get("oracle"):
            rows.extend(metric_rows(run, "oracle", metrics["oracle"]))
    directory.mkdir(parents=True, exist_ok=True)
    write_file(directory / "runs.csv", pd.DataFrame(rows, columns=list(RUNS_COLUMNS)).to_csv(index=False))
    first_runs = {run.variant: run for run in reversed(runs)}  # each variant's first run (its recipe is the seeds')
    recipes = {variant: recipe_of(first_runs[variant].config()) for variant in study.variants if variant in first_runs}
    write_study_json(directory, {**study.describe(runs[0].dataset, seeds), "sequential": sequential,
                                 "recipes": recipes})


def write_study_json(directory: Path, info: dict) -> None:
    write_file(directory / "study.json", json.dumps(info, indent=1))


def metric_rows(run: PlannedRun, variant: str, metrics: dict) -> list[dict]:
    """One runs.csv row per split, group, task and registered metric of the task's kind."""
    return [{"study": run.study, "variant": variant, "seed": run.seed, "dataset": run.dataset, "split": split,
             "group": group, "task": behaviour, "metric": name, "value": value, "run_id": run.run_id}
            for split in ("test", "validation") for group, cells in metrics[split].items()
            for behaviour, cell in cells.items() for name, value in cell_values(cell).items()]


def cell_values(cell: dict) -> dict[str, float | None]:
    """{metric: value} of a metrics.json cell for every registered metric of its kind. A cell written before a
    metric existed (only its primary `metric`/`value`) gets None for the others: the report says why."""
    recorded = cell.get("values") or {cell["metric"]: {"value": cell["value"]}}
    return {entry.name: (recorded.get(entry.name) or {}).get("value") for entry in metrics_of(kind_of(cell["metric"]))}


def write_file(path: Path, text: str) -> None:
    """Write `path` atomically (mfh_cli/files.py): readers never see half a file. A failed write leaves neither the
    temporary nor a changed `path`, and names `path`."""
    try:
        write_text_atomically(path, text)
    except OSError as error:
        raise MfhError(f"{path}: cannot write ({error.strerror or error})") from None
