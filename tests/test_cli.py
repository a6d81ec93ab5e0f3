"""The installed `mfh` as a user runs it: config errors, train on the simulator and on KuaiRand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY = ["data.rows=5000", "trainer=smoke"]


@pytest.mark.parametrize("override, expected", [
    ("nosuchkey=3", "nosuchkey"),
    ("model=nosuchmodel", "nosuchmodel"),
    ("seed", "key=value"),
    ("trainer.precision=fp16", "trainer.precision: must be 'fp32' or 'bf16' (got 'fp16')"),
    ("trainer.optimizer=lion", "trainer.optimizer: must be 'adam', 'adamw' or 'sgd' (got 'lion')"),
    ("trainer.lr=abc", "trainer.lr: must be a valid number (got 'abc')"),
    ("trainer.batch_size=0", "trainer.batch_size: must be greater than or equal to 2 (got 0)"),
    ("trainer.batch_size=-5", "trainer.batch_size: must be greater than or equal to 2 (got -5)"),
    ("trainer.eval_batch_size=0", "trainer.eval_batch_size: must be greater than or equal to 1 (got 0)"),
    ("trainer.max_epochs=0", "trainer.max_epochs: must be greater than or equal to 1 (got 0)"),
    ("size.embedding_dim=0", "size.embedding_dim: must be greater than or equal to 1 (got 0)"),
    ("data.validation_fraction=0", "data.validation_fraction must leave at least one validation row"),
    ("+hydra.callbacks.x._target_=builtins.print", "override '+hydra.callbacks.x._target_=builtins.print' is "
                                                   "not accepted"),
    ("hydra/launcher=joblib", "hydra/launcher=<name> and hydra.launcher.<key>=<value>, on mfh ablate"),
])
def test_bad_override_is_one_line_and_exit_code_2(run_mfh, tmp_path: Path, override: str, expected: str):
    result = run_mfh("train", override)
    assert result.returncode == 2
    assert expected in result.stderr
    assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results" / "runs").exists(), "a refused config wrote into the results"


def test_ablate_refuses_hydra_overrides_other_than_the_launchers(run_mfh, tmp_path: Path):
    # The launcher used to instantiate `hydra.callbacks` given to `mfh ablate`: now refused before any run.
    result = run_mfh("ablate", "--study", "hierarchical", "--seeds", "1", *TINY,
                     "+hydra.callbacks.x._target_=builtins.print", "hydra/launcher=joblib")
    assert result.returncode == 2, result.stderr
    assert "'+hydra.callbacks.x._target_=builtins.print' is not accepted" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results" / "runs").exists() and not (tmp_path / "results" / "hydra").exists()


def test_train_prints_metrics_per_group_and_writes_the_run(run_mfh, tmp_path: Path):
    result = run_mfh("train", *TINY, "--quiet", check=True)
    for column in ("cmpl mse", "finish auc", "skip auc"):
        assert column in result.stdout
    for group in ("new", "low", "high"):
        assert group in result.stdout
    run_dir = Path(result.stdout.split("run directory: ")[1].split(" (")[0])
    assert (run_dir / "metrics.json").is_file() and run_dir.parent.parent == tmp_path / "results"
    again = run_mfh("train", *TINY, "--quiet", "--format", "json", check=True)
    metrics = json.loads(again.stdout)
    assert metrics["run_id"] == run_dir.name
    assert metrics == json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_train_on_kuairand_reports_all_nine_tasks(run_mfh, kuairand_dir: Path):
    result = run_mfh("train", "data=kuairand", "trainer=smoke", "trainer.batch_size=2048", "--quiet",
                     "--format", "json", "--data-dir", str(kuairand_dir), check=True)
    metrics = json.loads(result.stdout)
    test = metrics["metrics"]["test"]
    assert set(test) == {"new", "low", "high"}
    for group in test.values():
        assert set(group) == {"cmpl", "finish", "skip"}
        assert all(cell["value"] is not None for cell in group.values())
    assert 0.5 < test["high"]["finish"]["value"] < 1.0
