"""The main job: every study with its default seeds, then every report: the controls, the verdicts, and the
direction agreement with the paper."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from rich.console import Console

from mfh_cli import available_cores
from mfh_cli.engine.placement import CpuFeatures, probe_machine
from mfh_cli.report import run_report
from mfh_cli.report.build import sweep_figure
from mfh_cli.report.verdicts import DECIDED
from mfh_cli.studies.execute import ablate
from mfh_cli.studies.plan import PlannedRun
from mfh_cli.studies.spec import study_names


def reproduce(overrides: Sequence[str] = (), seeds: int | Sequence[int] | None = None, jobs: int = 1,
              data_dir: Path | None = None, results_dir: Path = Path("results"), quiet: bool = False,
              console: Console | None = None, extra_studies: Sequence[str] = (), tuned: bool = False) -> float:
    """Run the main job's studies (and `extra_studies`), print their tables, then the control lines, each table's
    pooled verdict, the per-cell verdict lines, the figure paths and the agreement with the paper; returns wall
    seconds. `seeds` as for `ablate` (None: each study's own); `tuned`: with `mfh tune`'s best overrides per
    variant."""
    console = console or Console(width=max(Console().width, 140))
    started = time.perf_counter()
    names = study_names(main_job=True) + [name for name in extra_studies if name not in study_names(main_job=True)]
    outcomes = ablate(names, seeds=seeds, jobs=jobs, overrides=overrides, data_dir=data_dir,
                      results_dir=results_dir, quiet=quiet, tuned=tuned)
    controls, pooled, verdicts, agreement, files, decisions = [], [], [], [], [], []
    for outcome in outcomes:
        summary = run_report(results_dir, study=outcome.study.name, dataset=outcome.dataset, fmt="table",
                             paper=True, console=console)
        controls += summary.controls
        pooled += summary.pooled
        decisions += summary.decisions
        verdicts += summary.verdicts
        agreement += summary.agreement
        files += summary.files
    for name in sorted({outcome.study.sweep["study"] for outcome in outcomes if outcome.study.sweep}):
        files += sweep_figure(results_dir, name, outcomes[0].dataset)
    wall = time.perf_counter() - started
    seed_counts = sorted({len({run.seed for run in outcome.runs}) for outcome in outcomes})
    for title, lines in (("Controls: can this run see a real effect, and does it see a false one?", controls),
                         ("Each table as a whole: does the variant beat the reference over its cells? (SPEC §4)",
                          pooled),
                         ("Verdicts per cell (SPEC §4)", verdicts),
                         ("Direction agreement with the paper (secondary: read the verdicts)", agreement)):
        console.rule(title)
        for line in lines or (["no control on this dataset: the controls run on the simulator (`mfh reproduce`)"]
                              if lines is controls else []):
            console.print(line, markup=False, highlight=False)
    console.print(decided_line(decisions), markup=False, highlight=False)
    for path in sorted({path for path in files if path.suffix == ".png"}):
        console.print(f"figure: {path}")
    console.print(f"{len(outcomes)} studies on {outcomes[0].dataset}, {'/'.join(map(str, seed_counts))} seeds "
                  f"per variant; wall time {wall / 60:.1f} min; tables in {results_dir / 'tables'}")
    launcher = next((item for item in overrides if item.startswith("hydra/launcher=")), None)
    console.print(execution_line(probe_machine().cpu, [run for outcome in outcomes for run in outcome.runs], jobs,
                                 launcher), markup=False, highlight=False)
    return wall


def decided_line(decisions: list[tuple[str, pd.DataFrame]]) -> str:
    """What the main job could and could not decide, table by table: each compared variant's pooled verdict over all
    the table's cells (report/pooled.py), and for an undecided one the seeds that would give 80% power."""
    rows = [(title, row) for title, frame in decisions for row in frame.itertuples(index=False)]
    decided = [(title, row) for title, row in rows if row.verdict in DECIDED]
    parts = []
    for title, row in rows:
        table = title.split(":")[0]
        if row.verdict in DECIDED:
            parts.append(f"{table} {row.variant}: {row.verdict}")
        else:
            needed = ("more than 100,000 seeds" if math.isinf(row.seeds_needed) else
                      "seeds unknown" if math.isnan(row.seeds_needed) else f"about {row.seeds_needed:,.0f} seeds")
            parts.append(f"{table} {row.variant}: {row.verdict} ({needed} for 80% power)")
    return (f"decided {len(decided)} of {len(rows)} pooled verdicts of the paper's tables (each compared variant over "
            f"its table's cells, against the paper's pooled change): " + "; ".join(parts))


def execution_line(cpu: CpuFeatures, runs: Sequence[PlannedRun], jobs: int, launcher: str | None) -> str:
    """Where the wall time was measured: the CPU, its class and cores, the thread policy and the precision."""
    threads = "/".join(str(count) for count in sorted({run.threads for run in runs}))
    unit = "thread" if threads == "1" else "threads"
    at_once = (f"runs dispatched by {launcher}" if launcher else
               f"{jobs} run{'s' if jobs > 1 else ''} at once (--jobs {jobs})")
    precisions = "/".join(sorted({run.precision for run in runs}))
    return (f"measured on {cpu.model} ({cpu.machine_class}), {available_cores()} cores: {threads} torch {unit} per "
            f"run, {at_once}, {precisions}")
