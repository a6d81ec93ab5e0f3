"""The command line: parse options, compose the config, call one function. No ML here.

Every command takes trailing Hydra overrides (`data=kuairand model=hmtl seed=3`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from mfh_cli.errors import ConfigError, Interrupted, MfhError

OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Multi-Faceted Hierarchical multi-task learning: train, ablate, report.")
data_app = typer.Typer(no_args_is_help=True, help="Describe, validate and download datasets.")
model_app = typer.Typer(no_args_is_help=True, help="Inspect models.")
app.add_typer(data_app, name="data")
app.add_typer(model_app, name="model")

DataDir = Annotated[Optional[Path], typer.Option("--data-dir", envvar="MFH_DATA_DIR",
                                                 help="Where datasets live (default ./data).")]
ResultsDir = Annotated[Optional[Path], typer.Option("--results-dir", envvar="MFH_RESULTS_DIR",
                                                    help="Output root (default ./results).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Format = Annotated[str, typer.Option("--format", "-f", help="table | csv | json (markdown, latex for reports).")]


def _check_format(fmt: str, allowed: tuple[str, ...]) -> str:
    if fmt not in allowed:
        raise MfhError(f"unknown --format '{fmt}': choose one of {', '.join(allowed)}")
    return fmt


def _paths(data_dir: Path | None, results_dir: Path | None):
    from mfh_cli.config import results_dir as resolve_results

    return data_dir, resolve_results(results_dir)


@data_app.command("describe", context_settings=OVERRIDES)
def data_describe(ctx: typer.Context, name: Annotated[str, typer.Argument(help="synthetic | kuairand | table")],
                  data_dir: DataDir = None, results_dir: ResultsDir = None, fmt: Format = "table",
                  quiet: Quiet = False) -> None:
    """Rows and users per group and split, label rate (or mean) per behaviour and group, masked labels."""
    from mfh_cli.config import compose
    from mfh_cli.data import load_dataset
    from mfh_cli.data.describe import describe_frame
    from mfh_cli.report.render import emit

    _check_format(fmt, ("table", "csv", "json"))
    cfg = compose([f"data={name}", *ctx.args])
    data_dir, results_dir = _paths(data_dir, results_dir)
    dataset = load_dataset(cfg, data_dir=data_dir, cache_dir=results_dir / "cache", quiet=quiet)
    frame = describe_frame(dataset)
    users = int(frame["users_with_rows"].iloc[-1])  # the `all` row
    if fmt == "table":  # one column per group reads better on a terminal than 16 columns
        frame = frame.set_index("group").T.rename_axis(columns=None).reset_index(names="statistic")
    emit(frame, fmt, title=f"{name}: {len(dataset):,} rows by {users:,} users (users with rows)", notes=dataset.schema.notes)


@data_app.command("validate")
def data_validate(path: Annotated[Path, typer.Argument(help="A KuaiRand log CSV or directory, or your own log.")],
                  mapping: Annotated[Optional[Path], typer.Option("--mapping", help="YAML column mapping of "
                                                                  "your own log (see conf/data/table.yaml).")] = None
                  ) -> None:
    """Check a log before training: columns, types, NaN, ranges, duplicates, empty groups and splits."""
    from mfh_cli.data.validate import validate

    problems = validate(path, mapping)
    for problem in problems:
        typer.echo(str(problem), err=problem.level == "error")
    errors = sum(problem.level == "error" for problem in problems)
    typer.echo(f"{path}: {errors} error(s), {len(problems) - errors} warning(s)")
    raise typer.Exit(1 if errors else 0)


@data_app.command("download")
def data_download(name: Annotated[str, typer.Argument(help="kuairand-pure | kuairand-1k")],
                  dest: Annotated[Optional[Path], typer.Option("--dest", help="Target directory "
                                                               "(default: the data dir).")] = None,
                  url: Annotated[Optional[str], typer.Option("--url", help="Archive URL (default: the "
                                                             "official Zenodo record).")] = None,
                  data_dir: DataDir = None, quiet: Quiet = False) -> None:
    """Download and extract an official KuaiRand archive (atomic, resumable, a no-op when present)."""
    from mfh_cli.config import data_dir as resolve_data
    from mfh_cli.data.download import download

    target = download(name, dest or resolve_data(data_dir), url=url, quiet=quiet)
    typer.echo(str(target))


@model_app.command("describe", context_settings=OVERRIDES)
def model_describe(ctx: typer.Context,
                   input_dim: Annotated[Optional[int], typer.Option("--input-dim", help="Input width instead of "
                                                                    "the data-derived one.")] = None,
                   data_dir: DataDir = None, results_dir: ResultsDir = None, fmt: Format = "table") -> None:
    """The model as a tree with the parameter count of every component."""
    from mfh_cli.config import compose
    from mfh_cli.models.describe import describe_model

    _check_format(fmt, ("table", "json"))
    cfg = compose(ctx.args)
    data_dir, results_dir = _paths(data_dir, results_dir)
    typer.echo(describe_model(cfg, input_dim=input_dim, data_dir=data_dir, cache_dir=results_dir / "cache",
                              fmt=fmt))


@app.command("train", context_settings=OVERRIDES)
def train_command(ctx: typer.Context, data_dir: DataDir = None, results_dir: ResultsDir = None,
                  force: Annotated[bool, typer.Option("--force", help="Retrain even if this exact run "
                                                      "is finished.")] = False,
                  fmt: Format = "table", quiet: Quiet = False) -> None:
    """Train one model on one dataset with one seed; print test metrics per user group and task."""
    import json
    import os

    from mfh_cli.config import compose
    from mfh_cli.engine.run import metrics_frame, train
    from mfh_cli.report.render import emit

    _check_format(fmt, ("table", "json"))
    cfg = compose(ctx.args)
    data_dir, results_dir = _paths(data_dir, results_dir)
    result = train(cfg, data_dir=data_dir, results_dir=results_dir, force=force, quiet=quiet)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 speaks
        return
    if fmt == "json":
        typer.echo(json.dumps(result.metrics, indent=1))
        return
    metrics = result.metrics
    title = (f"{metrics['model']} on {metrics['dataset']} ({metrics['tasks']}), seed {metrics['seed']}: test "
             f"metrics (MSE lower is better, AUC higher)")
    emit(metrics_frame(metrics), "table", title=title)
    missing = [f"{group}/{behaviour}: {cell['reason']}" for group, cells in metrics["metrics"]["test"].items()
               for behaviour, cell in cells.items() if cell["value"] is None]
    for line in missing:
        typer.echo(f"not computed: {line}")
    state = "reused finished run" if result.reused else (
        f"best epoch {metrics['best_epoch']} of {metrics['epochs_run']}, {metrics['wall_seconds']:.1f} s, "
        f"{metrics['train_samples_per_second']:,.0f} training samples/s")
    typer.echo(f"run directory: {result.run_dir} ({state})")


Seeds = Annotated[Optional[int], typer.Option("--seeds", min=1, help="Seeds per variant (default: the "
                                                                  "study's own).")]
Jobs = Annotated[int, typer.Option("--jobs", "-j", min=1, help="Runs trained at once, one thread each "
                                                            "(default: one per core).")]


_CORES = os.cpu_count() or 1


def _studies(study: str) -> list[str]:
    from mfh_cli.studies.spec import study_names

    return study_names(main_job=True) if study == "all" else [study]


@app.command("ablate", context_settings=OVERRIDES)
def ablate_command(ctx: typer.Context,
                   study: Annotated[str, typer.Option("--study", "-s", help="A study in conf/study, or all "
                                                      "(the main job's studies).")],
                   seeds: Seeds = None, jobs: Jobs = _CORES, data_dir: DataDir = None, results_dir: ResultsDir = None,
                   quiet: Quiet = False,
                   until_decided: Annotated[bool, typer.Option(
                       "--until-decided", help="Add seeds in rounds until every selected cell is decided, with "
                                               "anytime-valid intervals (one study).")] = False,
                   budget: Annotated[str, typer.Option("--budget", help="With --until-decided: time for all rounds "
                                                       "of this study, resumed invocations included (90s, 10m, "
                                                       "8h, 1h30m).")] = "1h",
                   max_seeds: Annotated[int, typer.Option("--max-seeds", min=1, help="With --until-decided: the "
                                                          "most seeds per variant.")] = 50,
                   cells: Annotated[Optional[str], typer.Option("--cells", help="With --until-decided: the cells "
                                                                "to decide, variant/group/task patterns "
                                                                "(comma-separated, e.g. 'hmtl/*/*,flat/new/*'; "
                                                                "default all).")] = None,
                   dry_run: Annotated[bool, typer.Option("--dry-run", help="With --until-decided: estimate what "
                                                         "each budget would decide from the seeds run so far; "
                                                         "train nothing.")] = False) -> None:
    """Run a study (variants x seeds), skipping finished runs; write runs.csv and print its table.

    Ctrl-C or SIGTERM stops it within one run's time, keeping finished runs (exit 130 or 143): rerun to resume."""
    from mfh_cli.report import run_report
    from mfh_cli.report.build import sweep_figure
    from mfh_cli.studies.execute import ablate

    data_dir, results_dir = _paths(data_dir, results_dir)
    if until_decided or dry_run:
        from rich.console import Console

        from mfh_cli.seeds_on_demand import plan_budget, until_decided as run_until_decided

        if not until_decided:
            raise ConfigError("--dry-run plans an --until-decided sweep: give both")
        console = Console(width=max(Console().width, 140))
        if dry_run:
            plan_budget(study, budget, max_seeds, cells, jobs, ctx.args, results_dir, console)
        else:
            run_until_decided(study, budget, max_seeds, cells, jobs, ctx.args, data_dir, results_dir, quiet,
                              console)
        return
    outcomes = ablate(_studies(study), seeds=seeds, jobs=jobs, overrides=ctx.args, data_dir=data_dir,
                      results_dir=results_dir, quiet=quiet)
    for outcome in outcomes:
        run_report(results_dir, study=outcome.study.name, dataset=outcome.dataset, fmt="table", paper=True)
        typer.echo(f"runs: {outcome.directory / 'runs.csv'}")
    for name, dataset in sorted({(outcome.study.sweep["study"], outcome.dataset) for outcome in outcomes
                                 if outcome.study.sweep}):
        typer.echo(f"figure: {sweep_figure(results_dir, name, dataset)[0]}")


@app.command("report")
def report_command(study: Annotated[str, typer.Option("--study", "-s", help="A study, or all.")] = "all",
                   dataset: Annotated[Optional[str], typer.Option("--dataset", help="Only this dataset's "
                                                                  "results (default: every one found).")] = None,
                   fmt: Annotated[str, typer.Option("--format", "-f", help="table | csv | markdown | latex")]
                   = "table",
                   paper: Annotated[bool, typer.Option("--paper/--no-paper", help="The paper's numbers beside "
                                                       "ours.")] = True,
                   results_dir: ResultsDir = None) -> None:
    """Tables from finished studies: mean ± 95% interval over seeds, change vs reference, the paper beside."""
    from mfh_cli.report import run_report

    _check_format(fmt, ("table", "csv", "markdown", "latex"))
    _, results_dir = _paths(None, results_dir)
    run_report(results_dir, study=None if study == "all" else study, dataset=dataset, fmt=fmt, paper=paper)


@app.command("reproduce", context_settings=OVERRIDES)
def reproduce_command(ctx: typer.Context, seeds: Seeds = None, jobs: Jobs = _CORES, data_dir: DataDir = None,
                      results_dir: ResultsDir = None, quiet: Quiet = False,
                      with_studies: Annotated[Optional[list[str]], typer.Option(
                          "--with", help="A study outside the main job to run too (e.g. mechanism); "
                                         "repeatable.")] = None) -> None:
    """The main job: the controls, every study of the paper (and ours) with default seeds, every report, the
    verdicts and the agreement."""
    from mfh_cli.reproduce import reproduce

    data_dir, results_dir = _paths(data_dir, results_dir)
    reproduce(ctx.args, seeds=seeds, jobs=jobs, data_dir=data_dir, results_dir=results_dir, quiet=quiet,
              extra_studies=with_studies or [])


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def main() -> None:
    """Console entry point: user errors become one line on stderr and their exit code; SIGINT and SIGTERM stop
    the command like Ctrl-C (no half-written results) and exit 130 and 143."""
    import signal

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        app()
    except MfhError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except Interrupted as interrupted:
        typer.echo(str(interrupted), err=True)
        sys.exit(interrupted.exit_code)
