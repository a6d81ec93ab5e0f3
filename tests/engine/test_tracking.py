"""Tracking end to end on tiny runs: a real local MLflow store and a real TensorBoard event file, read back with
their own readers (MlflowClient, EventAccumulator) and compared with the run directory's files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import DictConfig

from mfh_cli.config import compose, config_hash
from mfh_cli.engine.placement import resolve_placement
from mfh_cli.engine.run import RUN_FILES, RunResult, train
from mfh_cli.errors import ConfigError, RunError
from mfh_cli.predictions import PREDICTIONS_FILE
from mfh_cli.studies.execute import ablate

# Two epochs: two validation-loss points; trainer=smoke records history every 5 steps.
TINY = ["data.rows=4000", "trainer=smoke", "trainer.max_epochs=2", "trainer.patience=5", "trainer.progress=false"]


def test_tracking_is_not_part_of_the_run_id():
    untracked, _ = resolve_placement(compose(TINY))
    tracked, _ = resolve_placement(compose([*TINY, "tracking=mlflow", "tracking.experiment=somewhere"]))
    assert config_hash(tracked) == config_hash(untracked)


@pytest.mark.parametrize(("override", "message"), [
    ("tracking.uri=3", "tracking.uri: must be a valid string"),
    ("+tracking.port=5000", "tracking.port: unknown key"),
])
def test_tracking_values_are_checked_when_composed(override: str, message: str):
    with pytest.raises(ConfigError, match=message):
        compose([*TINY, "tracking=mlflow", override])


def cell_values(metrics: dict, split: str) -> dict[str, float]:
    """`<split>/<group>/<behaviour>/<metric>` → value, straight from metrics.json."""
    return {f"{split}/{group}/{behaviour}/{name}": entry["value"]
            for group, cells in metrics["metrics"][split].items() for behaviour, cell in cells.items()
            for name, entry in cell["values"].items() if entry["value"] is not None}


@dataclass
class TrackedRun:
    """One tiny run trained twice with tracking=mlflow into the default local store under `results`."""

    results: Path
    store: str  # the store's URI, as MLFLOW_TRACKING_URI would give it
    cfg: DictConfig
    first: RunResult
    again: RunResult


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory) -> TrackedRun:
    """Shared by the MLflow tests: a fresh SQLite store costs seconds of migrations, so they reuse this one."""
    pytest.importorskip("mlflow")
    results = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        cfg = compose([*TINY, "tracking=mlflow"])
        first = train(cfg, results_dir=results, quiet=True)
        again = train(cfg, results_dir=results, quiet=True)
    return TrackedRun(results, f"sqlite:///{results / 'mlflow' / 'mlflow.db'}", cfg, first, again)


@pytest.mark.slow
def test_mlflow_reads_back_the_run_as_its_directory_holds_it(tracked_run: TrackedRun):
    import mlflow

    client = mlflow.MlflowClient(tracked_run.store)
    experiment = client.get_experiment_by_name("train")
    runs = client.search_runs([experiment.experiment_id])
    assert tracked_run.again.reused and len(runs) == 1, "a reused run is not logged twice"
    run, run_dir, cfg = runs[0], tracked_run.first.run_dir, tracked_run.cfg
    assert run.info.status == "FINISHED" and run.info.run_name == "mfh-seed0-play"
    assert run.data.tags["mfh.run_id"] == run_dir.name
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.params["trainer.lr"] == str(cfg.trainer.lr)
    assert run.data.params["data.rows"] == "4000" and run.data.params["model.name"] == "mfh"
    assert json.loads(run.data.params["size.branch_mlp"]) == list(cfg.size.branch_mlp)
    assert not any(key.startswith("tracking.") for key in run.data.params)
    expected = {**cell_values(saved, "test"), **cell_values(saved, "validation")}
    assert any(key.endswith("/gauc") for key in expected)
    assert {key: run.data.metrics[key] for key in expected} == pytest.approx(expected, rel=1e-12)
    losses = client.get_metric_history(run.info.run_id, "loss/validation")
    assert [(point.step, point.value) for point in losses] == list(enumerate(saved["validation_losses"], start=1))
    history = pd.read_csv(run_dir / "history.csv")
    curve = history[(history.split == "train") & (history.group == "new") & (history.task == "cmpl")]
    assert len(curve) >= 2
    logged = sorted((point.step, point.value) for point in
                    client.get_metric_history(run.info.run_id, "loss/train/new/cmpl"))
    assert [step for step, _ in logged] == list(curve.step)
    assert [value for _, value in logged] == pytest.approx(list(curve.loss), rel=1e-12)
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(tracked_run.results / "mlflow")
    logged = sorted(item.path for item in client.list_artifacts(run.info.run_id))
    assert logged == sorted([*RUN_FILES, PREDICTIONS_FILE])
    assert (artifacts / "metrics.json").read_text() == (run_dir / "metrics.json").read_text()


@pytest.mark.slow
def test_a_study_is_one_mlflow_experiment_at_the_tracking_uri(tracked_run: TrackedRun, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracked_run.store)  # as a server's address: not the local default
    outcome, = ablate(["hierarchical"], seeds=1, overrides=[*TINY, "trainer.max_epochs=1", "tracking=mlflow"],
                      results_dir=tmp_path, quiet=True)
    assert not (tmp_path / "mlflow").exists() and not (Path.cwd() / "mlruns").exists()
    client = mlflow.MlflowClient(tracked_run.store)
    runs = client.search_runs([client.get_experiment_by_name("hierarchical").experiment_id])
    assert sorted(run.info.run_name for run in runs) == ["flat-seed0-play", "hmtl-seed0-play"]
    assert {run.info.status for run in runs} == {"FINISHED"}
    table = pd.read_csv(outcome.directory / "runs.csv").dropna(subset=["value"])
    for run in runs:
        rows = table[(table.run_id == run.data.tags["mfh.run_id"]) & (table.variant != "oracle")]
        logged = [run.data.metrics[f"{row.split}/{row.group}/{row.task}/{row.metric}"] for row in rows.itertuples()]
        assert len(logged) == len(rows) > 0
        assert logged == pytest.approx(list(rows.value), rel=1e-9)
        artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
        assert artifacts.is_relative_to(tracked_run.results / "mlflow" / "artifacts"), "beside the SQLite store"
        assert (artifacts / "model.pt").is_file()


@pytest.mark.slow
def test_a_failed_run_leaves_no_mlflow_run(tracked_run: TrackedRun, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracked_run.store)
    with pytest.raises(RunError, match="step 3"):
        train(compose([*TINY, "tracking=mlflow", "tracking.experiment=failing", "trainer.nan_at_step=3"]),
              results_dir=tmp_path, quiet=True)
    client = mlflow.MlflowClient(tracked_run.store)
    experiment = client.get_experiment_by_name("failing")  # made before training: a bad store stops it early
    assert client.search_runs([experiment.experiment_id]) == []


@pytest.mark.slow
def test_tensorboard_event_file_reads_back(tmp_path: Path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    result = train(compose([*TINY, "tracking=tensorboard", "tracking.experiment=tb"]), results_dir=tmp_path,
                   quiet=True)
    experiment = tmp_path / "tensorboard" / "tb"
    written, = experiment.iterdir()
    assert written.name == f"mfh-seed0-play-{result.run_dir.name}"
    events = EventAccumulator(str(written), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    losses = events.Scalars("loss/validation")
    assert [event.step for event in losses] == [1, 2]
    assert [event.value for event in losses] == pytest.approx(saved["validation_losses"], rel=1e-6)
    expected = cell_values(saved, "test")
    assert {key: events.Scalars(key)[0].value for key in expected} == pytest.approx(expected, rel=1e-6)
    tensors = events.Tags()["tensors"]
    assert "config/text_summary" in tensors and "run_directory/text_summary" in tensors
    config_text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "lr: " + str(compose(TINY).trainer.lr) in config_text
    start, = (content for tag, content in events.PluginTagToContent("hparams").items() if "session_start" in tag)
    hparams = HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["trainer.lr"].number_value == pytest.approx(compose(TINY).trainer.lr)
    assert hparams["model.name"].string_value == "mfh"
