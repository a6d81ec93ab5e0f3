"""One run end to end on the simulator: determinism, early stopping, NaN, reuse, atomic run directories."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from mfh_cli.config import compose
from mfh_cli.engine.run import train
from mfh_cli.errors import RunError

TINY = ["data.rows=6000", "trainer=smoke", "trainer.batch_size=256", "trainer.progress=false"]


def test_same_seed_same_numbers(tmp_path: Path):
    cfg = compose([*TINY, "trainer.max_epochs=2"])
    first = train(cfg, results_dir=tmp_path / "a", quiet=True)
    second = train(cfg, results_dir=tmp_path / "b", quiet=True)
    assert first.metrics["metrics"] == second.metrics["metrics"]
    other_seed = train(compose([*TINY, "trainer.max_epochs=2", "seed=1"]), results_dir=tmp_path / "a", quiet=True)
    assert other_seed.metrics["metrics"] != first.metrics["metrics"]


def test_run_directory_is_complete(tmp_path: Path):
    result = train(compose(TINY), results_dir=tmp_path, quiet=True)
    files = sorted(path.name for path in result.run_dir.iterdir())
    assert files == ["config.yaml", "history.csv", "metrics.json", "model.pt"]
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert set(metrics["metrics"]["test"]) == {"new", "low", "high"}
    assert set(metrics["metrics"]["test"]["high"]) == {"cmpl", "finish", "skip"}
    assert metrics["metrics"]["test"]["high"]["cmpl"]["metric"] == "mse"
    assert metrics["oracle"]["test"]["high"]["finish"]["metric"] == "auc"
    assert metrics["parameters"]["total"] == metrics["parameters"]["embeddings"] + metrics["parameters"]["network"]
    history = pd.read_csv(result.run_dir / "history.csv")
    assert set(history["split"]) == {"train", "test"}
    assert history["step"].min() == 5  # trainer/smoke.yaml: history_every 5
    state = torch.load(result.run_dir / "model.pt", weights_only=True)
    assert all(isinstance(value, torch.Tensor) for value in state.values())
    assert not (tmp_path / "runs" / ".partial").exists() or not any((tmp_path / "runs" / ".partial").iterdir())


def test_early_stopping_restores_the_best_epoch(tmp_path: Path):
    # A large learning rate makes the validation loss rise after a few epochs.
    cfg = compose([*TINY, "trainer.max_epochs=8", "trainer.patience=2", "trainer.lr=0.03"])
    result = train(cfg, results_dir=tmp_path, quiet=True)
    losses = result.metrics["validation_losses"]
    assert result.metrics["best_epoch"] == losses.index(min(losses)) + 1
    assert result.metrics["epochs_run"] == len(losses)
    if result.metrics["epochs_run"] < 8:  # stopped early: exactly `patience` epochs without improvement
        assert result.metrics["epochs_run"] - result.metrics["best_epoch"] == 2
    # The weights on disk are the best epoch's: their validation loss is the minimum.
    from mfh_cli.data import load_dataset
    from mfh_cli.engine.loop import Trainer, prepare_splits
    from mfh_cli.engine.run import task_weights
    from mfh_cli.models import build_model

    dataset = load_dataset(cfg)
    model = build_model(cfg, dataset.schema)
    model.load_state_dict(torch.load(result.run_dir / "model.pt", weights_only=True))
    splits = prepare_splits(dataset, list(cfg.tasks.behaviours), torch.device("cpu"))
    trainer = Trainer(model, splits, cfg.trainer, task_weights(cfg, model.groups, model.behaviours), 0)
    assert trainer.loss_on(splits["validation"]) == pytest.approx(min(losses), abs=1e-5)


def test_nan_stops_with_step_and_task_and_no_run_directory(tmp_path: Path):
    with pytest.raises(RunError, match=r"step 3 .*task (cmpl|finish|skip)_(new|low|high)"):
        train(compose([*TINY, "trainer.nan_at_step=3"]), results_dir=tmp_path, quiet=True)
    assert not any((tmp_path / "runs").glob("[!.]*")) if (tmp_path / "runs").exists() else True


def test_finished_run_is_reused_unless_forced(tmp_path: Path):
    cfg = compose(TINY)
    first = train(cfg, results_dir=tmp_path, quiet=True)
    stamp = (first.run_dir / "metrics.json").stat().st_mtime_ns
    again = train(cfg, results_dir=tmp_path, quiet=True)
    assert again.reused and (first.run_dir / "metrics.json").stat().st_mtime_ns == stamp
    forced = train(cfg, results_dir=tmp_path, force=True, quiet=True)
    assert not forced.reused and (first.run_dir / "metrics.json").stat().st_mtime_ns != stamp
    assert forced.metrics["metrics"] == first.metrics["metrics"]


def test_bad_behaviour_for_dataset_is_a_config_error(tmp_path: Path):
    from mfh_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="task_weights"):
        train(compose([*TINY, "trainer.task_weights={nosuch_new: 2}"]), results_dir=tmp_path, quiet=True)


@pytest.mark.slow
def test_interrupted_run_leaves_nothing_and_rerun_completes(run_mfh, mfh_path: str, tmp_path: Path):
    args = [mfh_path, "train", "data.rows=200000", "trainer.max_epochs=50", "trainer.patience=50"]
    env = {**os.environ, "MFH_RESULTS_DIR": str(tmp_path / "results")}
    process = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(8)
    assert process.poll() is None, "the run finished before it could be interrupted"
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert process.returncode != 0
    runs = tmp_path / "results" / "runs"
    assert not runs.exists() or [p.name for p in runs.iterdir() if not p.name.startswith(".")] == []
    finished = run_mfh("train", *TINY, check=True)
    assert "run directory:" in finished.stdout
    assert len([p for p in runs.iterdir() if not p.name.startswith(".")]) == 1
