"""The command line: parse options, compose the config, call one function. No ML here.

Every command that builds a config takes trailing Hydra overrides (`data=kuairand model=hmtl seed=3`). Help is
plain text; each command's ends with examples, every one of them run by tests/test_cli.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from mfh_cli import __version__, available_cores, config_names
from mfh_cli.errors import ConfigError, Interrupted, MfhError

# Commands that compose a config take `key=value` overrides as their last arguments (anything unknown, even
# `--x`, reaches compose, which says what is wrong with it).
WITH_OVERRIDES = {"context_settings": {"ignore_unknown_options": True}}
Overrides = Annotated[Optional[list[str]], typer.Argument(
    metavar="KEY=VALUE", show_default=False, help="Config overrides: data=kuairand model=hmtl size=paper seed=2 "
                                                  "trainer.max_epochs=3 ...")]


def examples(*lines: str) -> str:
    """A help epilog: the command's examples, one command line each (a `# comment` may follow). tests/test_cli.py
    runs every one of them."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Multi-Faceted Hierarchical multi-task learning: train, ablate, report. Commands that build "
                       "a config take trailing key=value overrides (data=kuairand model=hmtl seed=2).",
                  epilog=examples("mfh reproduce                    # the main job: controls, Tables 1-4, Figure 1",
                                  "mfh train model=hmtl seed=2      # one run of one model",
                                  "mfh report --format markdown     # the tables again, from the result files"))
data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Describe, validate and download datasets.")
model_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Inspect models.")
app.add_typer(data_app, name="data")
app.add_typer(model_app, name="model")

DataDir = Annotated[Optional[Path], typer.Option("--data-dir", envvar="MFH_DATA_DIR", metavar="DIR",
                                                 help="Where datasets live (default ./data).")]
ResultsDir = Annotated[Optional[Path], typer.Option("--results-dir", envvar="MFH_RESULTS_DIR", metavar="DIR",
                                                    help="Output root (default ./results).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or progress lines.")]


def format_option(*choices: str) -> typer.models.OptionInfo:
    """The --format option of a command that prints in `choices` (the first is the default)."""
    return typer.Option("--format", "-f", metavar="FORMAT", help=" | ".join(choices))


MODELS = ", ".join(config_names("model"))


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"mfh {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = None) -> None:
    """`mfh`'s own options, given before a command (--version)."""


def _check_format(fmt: str, allowed: tuple[str, ...]) -> str:
    if fmt not in allowed:
        raise MfhError(f"unknown --format '{fmt}': choose one of {', '.join(allowed)}")
    return fmt


def _paths(data_dir: Path | None, results_dir: Path | None):
    from mfh_cli.config import results_dir as resolve_results

    return data_dir, resolve_results(results_dir)


@data_app.command("describe", **WITH_OVERRIDES, epilog=examples(
    "mfh data describe synthetic data.rows=20000     # the simulator at 20,000 rows",
    "mfh data describe kuairand --format json        # the KuaiRand slice in ./data"))
def data_describe(name: Annotated[str, typer.Argument(
                      metavar="NAME", help=f"The dataset: {', '.join(config_names('data'))}.")],
                  overrides: Overrides = None,
                  data_dir: DataDir = None, results_dir: ResultsDir = None,
                  fmt: Annotated[str, format_option("table", "csv", "json")] = "table", quiet: Quiet = False) -> None:
    """Rows and users per group (and scenario) and split, label rate (or mean) per behaviour and group (and
    scenario), masked labels."""
    from mfh_cli.config import compose
    from mfh_cli.data import load_dataset
    from mfh_cli.data.describe import describe_frame
    from mfh_cli.report.render import emit

    _check_format(fmt, ("table", "csv", "json"))
    cfg = compose([f"data={name}", *(overrides or [])])
    data_dir, results_dir = _paths(data_dir, results_dir)
    dataset = load_dataset(cfg, data_dir=data_dir, cache_dir=results_dir / "cache", quiet=quiet)
    frame = describe_frame(dataset)
    users = int(frame["users_with_rows"].iloc[-1])  # the `all` row
    if fmt == "table":  # one column per group reads better on a terminal than 16 columns
        frame = frame.set_index("group").T.rename_axis(columns=None).reset_index(names="statistic")
    emit(frame, fmt, title=f"{name}: {len(dataset):,} rows by {users:,} users (users with rows)",
         notes=dataset.schema.notes)


@data_app.command("validate", epilog=examples(
    "mfh data validate data/kuairand-pure                 # every log and table of the slice",
    "mfh data validate data/kuairand-pure/log_standard_4_25_to_5_08_pure.csv"))
def data_validate(path: Annotated[Path, typer.Argument(metavar="PATH", help="A KuaiRand log CSV or directory, or "
                                                       "your own log.")],
                  mapping: Annotated[Optional[Path], typer.Option("--mapping", metavar="FILE",
                                                                  help="YAML column mapping of "
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


@data_app.command("download", epilog=examples(
    "mfh data download kuairand-pure                 # into ./data; a no-op when it is there",
    "mfh data download kuairand-pure --dest data     # the same, the target named"))
def data_download(name: Annotated[str, typer.Argument(metavar="NAME", help="kuairand-pure | kuairand-1k")],
                  dest: Annotated[Optional[Path], typer.Option("--dest", metavar="DIR", help="Target directory "
                                                               "(default: the data dir).")] = None,
                  url: Annotated[Optional[str], typer.Option("--url", metavar="URL", help="Archive URL (default: the "
                                                             "official Zenodo record).")] = None,
                  data_dir: DataDir = None, quiet: Quiet = False) -> None:
    """Download and extract an official KuaiRand archive (atomic, resumable, a no-op when present)."""
    from mfh_cli.config import data_dir as resolve_data
    from mfh_cli.data.download import download

    target = download(name, dest or resolve_data(data_dir), url=url, quiet=quiet)
    typer.echo(str(target))


@model_app.command("describe", **WITH_OVERRIDES, help=f"The model (model=NAME: {MODELS}) as a tree with the "
                   "parameter count of every component.", epilog=examples(
                       "mfh model describe model=mfh size=paper      # the appendix sizes",
                       "mfh model describe model=ple --format json"))
def model_describe(overrides: Overrides = None,
                   input_dim: Annotated[Optional[int], typer.Option("--input-dim", metavar="N",
                                                                    help="Input width instead of "
                                                                    "the data-derived one.")] = None,
                   data_dir: DataDir = None, results_dir: ResultsDir = None,
                   fmt: Annotated[str, format_option("table", "json")] = "table") -> None:
    from mfh_cli.config import compose
    from mfh_cli.models.describe import describe_model

    _check_format(fmt, ("table", "json"))
    cfg = compose(overrides or [])
    data_dir, results_dir = _paths(data_dir, results_dir)
    typer.echo(describe_model(cfg, input_dim=input_dim, data_dir=data_dir, cache_dir=results_dir / "cache",
                              fmt=fmt))


@app.command("train", **WITH_OVERRIDES, short_help="Train one model on one dataset with one seed.",
             help=f"Train one model (model=NAME: {MODELS}; default mfh) on one dataset (data=NAME: "
                  f"{', '.join(config_names('data'))}) with one seed (seed=N); print test metrics per user group "
                  "and task. A finished identical run is reused.", epilog=examples(
                 "mfh train model=hmtl seed=2                         # the simulator, one tree, seed 2",
                 "mfh train data=kuairand model=ple tasks=interactive --format json"))
def train_command(overrides: Overrides = None, data_dir: DataDir = None, results_dir: ResultsDir = None,
                  force: Annotated[bool, typer.Option("--force", help="Retrain even if this exact run "
                                                      "is finished.")] = False,
                  fmt: Annotated[str, format_option("table", "json")] = "table", quiet: Quiet = False) -> None:
    import json
    import os

    from mfh_cli.config import compose

    _check_format(fmt, ("table", "json"))
    cfg = compose(overrides or [])
    data_dir, results_dir = _paths(data_dir, results_dir)
    from mfh_cli.engine.run import metrics_frame, train  # torch: after a bad override has been told in a second
    from mfh_cli.report.render import emit
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


Seeds = Annotated[Optional[str], typer.Option("--seeds", metavar="N|A-B|A,B,…", help="Seeds per variant: a count "
                                              "(5: seeds 0-4), a range (100-104) or a list (0,3,7); default: the "
                                              "study's own count.")]


def _seeds(text: str | None) -> list[int] | None:
    from mfh_cli.studies.plan import parse_seeds

    return None if text is None else parse_seeds(text)
Jobs = Annotated[int, typer.Option("--jobs", "-j", min=1, metavar="N", help="Runs trained at once, one thread each "
                                                                        "(default: one per core).")]


_CORES = available_cores()
Tuned = Annotated[bool, typer.Option("--tuned", help="Train each variant with its best overrides from mfh tune "
                                                     "(results/tuning/<study>/<dataset>/best.yaml).")]


def _studies(study: str) -> list[str]:
    from mfh_cli.studies.spec import study_names

    return study_names(main_job=True) if study == "all" else [study]


@app.command("ablate", **WITH_OVERRIDES, short_help="Run a study: its variants x seeds, then its table.",
             epilog=examples(
    "mfh ablate --study hierarchical --seeds 5          # Table 2: hmtl against flat",
    "mfh ablate --study biasnet data=kuairand --jobs 2  # Table 4 on the KuaiRand slice",
    "mfh ablate --study all                             # every study of the main job",
    "mfh ablate --study hierarchical --tuned            # with each variant's best lr and weight decay (mfh tune)"))
def ablate_command(study: Annotated[str, typer.Option("--study", "-s", metavar="NAME", help=(
                       f"One of {', '.join(config_names('study'))}; or all (the main job's studies)."))],
                   overrides: Overrides = None, seeds: Seeds = None, jobs: Jobs = _CORES, data_dir: DataDir = None,
                   results_dir: ResultsDir = None, quiet: Quiet = False,
                   until_decided: Annotated[bool, typer.Option(
                       "--until-decided", help="Add seeds in rounds until every selected cell is decided, with "
                                               "anytime-valid intervals (one study).")] = False,
                   budget: Annotated[str, typer.Option("--budget", metavar="DURATION", help="With --until-decided: "
                                                       "time for all rounds of this study, resumed invocations "
                                                       "included (90s, 10m, 8h, 1h30m).")] = "1h",
                   max_seeds: Annotated[int, typer.Option("--max-seeds", min=1, metavar="N", help="With "
                                                          "--until-decided: the most seeds per variant.")] = 50,
                   cells: Annotated[Optional[str], typer.Option("--cells", metavar="PATTERNS", help="With "
                                                                "--until-decided: the cells to decide, "
                                                                "variant/group/task patterns (comma-separated, e.g. "
                                                                "'hmtl/*/*,flat/new/*'; default all).")] = None,
                   dry_run: Annotated[bool, typer.Option("--dry-run", help="With --until-decided: estimate what "
                                                         "each budget would decide from the seeds run so far; "
                                                         "train nothing.")] = False,
                   decide: Annotated[str, typer.Option("--decide", metavar="cells|table", help="With "
                                                       "--until-decided: stop when every selected cell is decided "
                                                       "(cells), or each variant's pooled verdict over the table's "
                                                       "cells (table).")] = "cells",
                   tuned: Tuned = False) -> None:
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
            plan_budget(study, budget, max_seeds, cells, jobs, overrides or [], results_dir, console, decide, tuned)
        else:
            run_until_decided(study, budget, max_seeds, cells, jobs, overrides or [], data_dir, results_dir, quiet,
                              console, decide, tuned, _seeds(seeds))
        return
    outcomes = ablate(_studies(study), seeds=_seeds(seeds), jobs=jobs, overrides=overrides or [], data_dir=data_dir,
                      results_dir=results_dir, quiet=quiet, tuned=tuned)
    for outcome in outcomes:
        run_report(results_dir, study=outcome.study.name, dataset=outcome.dataset, fmt="table", paper=True)
        typer.echo(f"runs: {outcome.directory / 'runs.csv'}")
    for name, dataset in sorted({(outcome.study.sweep["study"], outcome.dataset) for outcome in outcomes
                                 if outcome.study.sweep}):
        typer.echo(f"figure: {sweep_figure(results_dir, name, dataset)[0]}")


@app.command("tune", **WITH_OVERRIDES, short_help="Search each variant's learning rate and weight decay on "
                                                  "validation.", epilog=examples(
    "mfh tune --study hierarchical --trials 8           # hmtl and flat, 8 trials each",
    "mfh tune --study multifaceted --sampler-seed 1     # 8 trials each (conf/tuning.yaml), another sampler seed"))
def tune_command(study: Annotated[str, typer.Option("--study", "-s", metavar="NAME", help=(
                     f"One of {', '.join(config_names('study'))}; or all (the main job's studies)."))],
                 overrides: Overrides = None,
                 trials: Annotated[Optional[int], typer.Option("--trials", min=1, metavar="N", help="Trials per "
                                                               "variant (default 8, conf/tuning.yaml).")] = None,
                 sampler_seed: Annotated[Optional[int], typer.Option("--sampler-seed", metavar="N", help="Seed of "
                                                                     "the TPE sampler (default 0).")] = None,
                 jobs: Jobs = _CORES, data_dir: DataDir = None, results_dir: ResultsDir = None,
                 quiet: Quiet = False) -> None:
    """Per variant of a study, search trainer.lr and trainer.weight_decay (and the study's tune: keys) on the
    validation split with Optuna (TPE, median pruning); write the best overrides to
    results/tuning/<study>/<dataset>/best.yaml for mfh ablate --tuned. Resumable; test rows are never used."""
    from mfh_cli.studies.tune import tuning_lines, tune

    data_dir, results_dir = _paths(data_dir, results_dir)
    outcomes = tune(_studies(study), trials=trials, sampler_seed=sampler_seed, jobs=jobs, overrides=overrides or [],
                    data_dir=data_dir, results_dir=results_dir, quiet=quiet)
    for outcome in outcomes:
        for line in tuning_lines(outcome):
            typer.echo(line)


@app.command("report", short_help="Tables and Figure 1 from finished studies.", epilog=examples(
    "mfh report                                     # every study found, in the terminal",
    "mfh report --study hierarchical --format latex",
    "mfh report --format csv --output tables        # one CSV file per study",
    "mfh report --metric gauc                       # binary tasks in per-user AUC (mfh_cli/tasks.py)"))
def report_command(study: Annotated[str, typer.Option("--study", "-s", metavar="NAME",
                                                      help="A study, or all.")] = "all",
                   dataset: Annotated[Optional[str], typer.Option("--dataset", metavar="NAME", help="Only this "
                                                                  "dataset's results (default: every one found).")]
                   = None,
                   fmt: Annotated[str, format_option("table", "csv", "markdown", "latex")] = "table",
                   paper: Annotated[bool, typer.Option("--paper/--no-paper", help="The paper's numbers beside "
                                                       "ours.")] = True,
                   output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="DIR", help="Write each "
                                                                  "study's table in --format to DIR/<study>.<csv|md|"
                                                                  "tex> instead of printing it.")] = None,
                   metric: Annotated[Optional[str], typer.Option("--metric", "-m", metavar="NAME", help="The "
                                                                 "metric shown for the tasks of its kind, from the "
                                                                 "registry in mfh_cli/tasks.py (e.g. gauc, logloss); "
                                                                 "default: AUC for binary, MSE for regression.")]
                   = None,
                   results_dir: ResultsDir = None) -> None:
    """Tables from finished studies: mean and 95% interval over seeds, change vs reference, verdicts, the paper
    beside; written to results/tables (and Figure 1 to results/figures) and printed."""
    from mfh_cli.report import run_report

    _check_format(fmt, ("table", "csv", "markdown", "latex"))
    _, results_dir = _paths(None, results_dir)
    run_report(results_dir, study=None if study == "all" else study, dataset=dataset, fmt=fmt, paper=paper,
               output=output, metric=metric)


@app.command("reproduce", **WITH_OVERRIDES, short_help="The main job: every study, table and verdict.",
             epilog=examples(
    "mfh reproduce                        # the simulator's default world: 45 runs, 10-20 min on 2 cores",
    "mfh reproduce --seeds 5 --jobs 2     # five seeds per variant, two runs at a time"))
def reproduce_command(overrides: Overrides = None, seeds: Seeds = None, jobs: Jobs = _CORES, data_dir: DataDir = None,
                      results_dir: ResultsDir = None, quiet: Quiet = False,
                      with_studies: Annotated[Optional[list[str]], typer.Option(
                          "--with", metavar="STUDY", help="A study outside the main job to run too (e.g. "
                                                          "mechanism, sota); repeatable.")] = None,
                      tuned: Tuned = False) -> None:
    """The main job: the controls, every study of the paper (and ours) with default seeds, every report, the
    verdicts and the agreement."""
    from mfh_cli.reproduce import reproduce

    data_dir, results_dir = _paths(data_dir, results_dir)
    reproduce(overrides or [], seeds=_seeds(seeds), jobs=jobs, data_dir=data_dir, results_dir=results_dir, quiet=quiet,
              extra_studies=with_studies or [], tuned=tuned)


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
