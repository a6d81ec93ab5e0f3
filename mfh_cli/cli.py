"""The command line: parse options, compose the config, call one function. No ML here.

Every command takes trailing Hydra overrides (`data=kuairand model=hmtl seed=3`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from mfh_cli.errors import MfhError

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
    emit(describe_frame(dataset), fmt, title=f"{name}: {len(dataset):,} rows", notes=dataset.schema.notes)


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


def main() -> None:
    """Console entry point: user errors become one line on stderr and their exit code."""
    try:
        app()
    except MfhError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
