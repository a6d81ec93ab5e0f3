"""The main job: every study with its default seeds, then every report and the agreement with the paper."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from mfh_cli.report import run_report
from mfh_cli.studies.execute import ablate
from mfh_cli.studies.spec import study_names


def reproduce(overrides: Sequence[str] = (), seeds: int | None = None, jobs: int = 1, data_dir: Path | None = None,
              results_dir: Path = Path("results"), quiet: bool = False, console: Console | None = None) -> float:
    """Run all studies, print their tables, the figure path and the agreement summary; returns wall seconds."""
    console = console or Console(width=max(Console().width, 140))
    started = time.perf_counter()
    outcomes = ablate(study_names(), seeds=seeds, jobs=jobs, overrides=overrides, data_dir=data_dir,
                      results_dir=results_dir, quiet=quiet)
    agreement, files = [], []
    for outcome in outcomes:
        summary = run_report(results_dir, study=outcome.study.name, dataset=outcome.dataset, fmt="table",
                             paper=True, console=console)
        agreement.extend(f"{outcome.study.name}: {line}" for line in summary.agreement)
        files.extend(summary.files)
    wall = time.perf_counter() - started
    seed_counts = sorted({len({run.seed for run in outcome.runs}) for outcome in outcomes})
    console.rule("Agreement with the paper")
    for line in agreement:
        console.print(line)
    figures = [path for path in files if path.suffix == ".png"]
    for path in figures:
        console.print(f"figure: {path}")
    console.print(f"{len(outcomes)} studies on {outcomes[0].dataset}, {'/'.join(map(str, seed_counts))} seeds "
                  f"per variant; wall time {wall / 60:.1f} min; tables in {results_dir / 'tables'}")
    return wall
