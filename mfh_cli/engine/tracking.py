"""Experiment tracking (`tracking=mlflow|tensorboard`): a trained run, logged after its run directory is in place.

Each backend logs the same things: the resolved config as parameters (`tracking` itself left out, as from the run
id), the validation loss per epoch (`loss/validation`, step = epoch) and history.csv's rows
(`loss/<split>/<group>/<task>`, step = training step), every test and validation cell's metrics
(`<split>/<group>/<behaviour>/<metric>`) and the run's summary numbers; MLflow also keeps the run directory's
files as artifacts (TensorBoard has no artifact store: it gets the run directory's path as text). One experiment
per study (the planner sets `tracking.experiment`), `train` for `mfh train`.

A run is logged only once it is finished, so a failed run leaves nothing in the tracker; a logging failure marks
the MLflow run FAILED (a TensorBoard run is written aside and moved into place whole) and is one stderr line: the
run directory, the record that counts, is already in place. `prepare` runs before any training: a missing extra
or an unreachable tracking server stops the command before it spends time on runs.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mfh_cli.config import to_container
from mfh_cli.errors import MfhError
from mfh_cli.extras import require

MLFLOW_DIR = "mlflow"  # <results>/mlflow/: the local store (mlflow.db) and its artifacts
TENSORBOARD_DIR = "tensorboard"  # <results>/tensorboard/<experiment>/<run_name>-<run_id>/
TRAIN_EXPERIMENT = "train"  # the experiment of `mfh train` runs
SQLITE = "sqlite:///"  # an SQLite store's URI: this prefix, then the database file's path


def prepare(cfg: DictConfig, results_dir: Path) -> None:
    """Check, before any training, that the configured tracker can take runs: its extra imports, and MLflow's
    store opens and holds the experiment (created here, once, before a sweep's workers write to it)."""
    if cfg.tracking.name == "mlflow":
        experiment_id(mlflow_client(cfg, results_dir), cfg, results_dir)
    elif cfg.tracking.name == "tensorboard":
        require("tensorboard", "tracking=tensorboard", "tracking")


def record(cfg: DictConfig, run_dir: Path, metrics: dict, history: list[dict], results_dir: Path) -> None:
    """Log finished run `run_dir` (its metrics.json content and history rows) to the configured tracker; a failure
    is one stderr line, the run itself stays finished."""
    if cfg.tracking.name == "none":
        return
    try:
        if cfg.tracking.name == "mlflow":
            record_mlflow(cfg, run_dir, metrics, history, results_dir)
        else:
            record_tensorboard(cfg, run_dir, metrics, history, results_dir)
    except Exception as error:  # noqa: BLE001 - any tracker failure: say so, keep the finished run
        print(f"tracking={cfg.tracking.name}: run {metrics['run_id']} was not logged ({type(error).__name__}: "
              f"{' '.join(str(error).split())[:300]}); the run directory {run_dir} is complete", file=sys.stderr)


def experiment_name(cfg: DictConfig) -> str:
    """The run's experiment: `tracking.experiment` (a study's name, set by its planner), else `train`."""
    return str(cfg.tracking.experiment or TRAIN_EXPERIMENT)


def run_name(cfg: DictConfig, metrics: dict) -> str:
    """The run's name in the tracker: `tracking.run_name` (a study's `<variant>-seed<seed>-<grid>`), else
    `<model>-seed<seed>-<tasks>`."""
    return str(cfg.tracking.run_name or f"{metrics['model']}-seed{metrics['seed']}-{metrics['tasks']}")


def parameters(cfg: DictConfig) -> dict[str, str | int | float | bool]:
    """The resolved config as flat `section.key` → value (lists, null and empty sections as JSON text),
    `tracking` left out."""
    container = to_container(cfg)
    container.pop("tracking", None)
    return dict(_flatten(container, ""))


def _flatten(node: object, prefix: str) -> Iterator[tuple[str, str | int | float | bool]]:
    """(dotted key, value) of every leaf under `node`; a leaf that is no scalar becomes JSON text."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), node if isinstance(node, str | int | float | bool) else json.dumps(node)


def as_text(value: str | int | float | bool) -> str:
    """A parameter as MLflow keeps it: text, numbers and booleans written as JSON writes them."""
    return value if isinstance(value, str) else json.dumps(value)


def curves(metrics: dict, history: list[dict]) -> Iterator[tuple[str, float, int]]:
    """(name, value, step) of every curve point: the validation loss per epoch (from 1), then history's rows."""
    for epoch, loss in enumerate(metrics["validation_losses"], start=1):
        yield "loss/validation", float(loss), epoch
    for row in history:
        yield f"loss/{row['split']}/{row['group']}/{row['task']}", float(row["loss"]), int(row["step"])


def final_values(metrics: dict) -> dict[str, float]:
    """Every computed cell metric of the test and validation splits, and the run's summary numbers."""
    values = {f"{split}/{group}/{behaviour}/{name}": float(entry["value"])
              for split in ("test", "validation") for group, cells in metrics["metrics"][split].items()
              for behaviour, cell in cells.items() for name, entry in cell.get("values", {}).items()
              if entry.get("value") is not None}
    values.update({key: float(metrics[key]) for key in ("best_epoch", "epochs_run", "wall_seconds",
                                                         "train_samples_per_second")})
    values["loss/best_validation"] = min(metrics["validation_losses"], default=float("nan"))
    return values


def mlflow_client(cfg: DictConfig, results_dir: Path):
    """An MlflowClient on `tracking.uri`, else MLFLOW_TRACKING_URI, else the local store under `results_dir`."""
    mlflow = require("mlflow", "tracking=mlflow", "tracking")
    uri = cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        (results_dir / MLFLOW_DIR).mkdir(parents=True, exist_ok=True)
        uri = local_store_uri(results_dir)
    return mlflow.MlflowClient(tracking_uri=uri)


def local_store_uri(results_dir: Path) -> str:
    """The default store: SQLite at <results>/mlflow/mlflow.db (MLflow's own default backend since 3.7)."""
    return f"{SQLITE}{results_dir.resolve() / MLFLOW_DIR / 'mlflow.db'}"


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a local SQLite store (`<its folder>/artifacts`), not in
    MLflow's default ./mlruns of whatever directory the command ran in; a server's or a file store's own place
    otherwise (None)."""
    if not uri.startswith(SQLITE):
        return None
    return (Path(uri.removeprefix(SQLITE)).resolve().parent / "artifacts").as_uri()


def experiment_id(client, cfg: DictConfig, results_dir: Path) -> str:
    """The id of the run's experiment, created when missing; an unreachable store is one MfhError line."""
    from mlflow.exceptions import MlflowException

    name = experiment_name(cfg)
    try:
        existing = client.get_experiment_by_name(name)
        if existing is not None:
            return existing.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri))
        except MlflowException:  # another process created it meanwhile
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id
    except MlflowException as error:
        raise MfhError(f"tracking=mlflow: the store {client.tracking_uri} does not take experiment '{name}': "
                       f"{' '.join(str(error).split())[:300]}") from None


def record_mlflow(cfg: DictConfig, run_dir: Path, metrics: dict, history: list[dict], results_dir: Path) -> None:
    """One MLflow run: parameters, curves, final metrics, tags, the run directory as artifacts; FINISHED only when
    all of it is logged, FAILED otherwise."""
    from mlflow.entities import Metric, Param, RunTag

    client = mlflow_client(cfg, results_dir)
    tags = {"mfh.run_id": metrics["run_id"], "mfh.run_dir": str(run_dir.resolve()), "mfh.model": metrics["model"],
            "mfh.dataset": metrics["dataset"], "mfh.tasks": metrics["tasks"], "mfh.seed": str(metrics["seed"])}
    run = client.create_run(experiment_id(client, cfg, results_dir), run_name=run_name(cfg, metrics), tags=tags)
    run_id, now = run.info.run_id, int(time.time() * 1000)
    try:
        points = [Metric(name, value, now, step) for name, value, step in curves(metrics, history)]
        points += [Metric(name, value, now, 0) for name, value in final_values(metrics).items()]
        client.log_batch(run_id, metrics=points,
                         params=[Param(key, as_text(value)) for key, value in parameters(cfg).items()],
                         tags=[RunTag(key, value) for key, value in tags.items()])
        client.log_artifacts(run_id, str(run_dir))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


def record_tensorboard(cfg: DictConfig, run_dir: Path, metrics: dict, history: list[dict],
                       results_dir: Path) -> None:
    """One TensorBoard run directory, <log_dir>/<experiment>/<run_name>-<run_id>/: written aside, then moved into
    place (replacing the record of an earlier training of the same run, as --force replaces its directory)."""
    require("tensorboard", "tracking=tensorboard", "tracking")
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    root = Path(cfg.tracking.log_dir) if cfg.tracking.log_dir else results_dir / TENSORBOARD_DIR
    final = root / experiment_name(cfg) / f"{run_name(cfg, metrics)}-{metrics['run_id']}"
    partial = final.with_name(f".{final.name}.{os.getpid()}.partial")
    try:
        with SummaryWriter(log_dir=str(partial)) as writer:
            writer.add_text("config", "```\n" + OmegaConf.to_yaml(cfg, resolve=True) + "```")
            writer.add_text("run_directory", str(run_dir.resolve()))
            for name, value, step in curves(metrics, history):
                writer.add_scalar(name, value, step)
            values = final_values(metrics)
            for name, value in values.items():
                writer.add_scalar(name, value, metrics["best_epoch"])
            summaries = hparams(parameters(cfg), {"loss/best_validation": values["loss/best_validation"]})
            for summary in summaries:
                writer.file_writer.add_summary(summary)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
