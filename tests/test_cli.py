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
    ("trainer.precision=fp16", "trainer.precision='fp16' is not one of fp32, bf16"),
    ("trainer.optimizer=lion", "trainer.optimizer='lion' is not one of adam, adamw, sgd"),
])
def test_bad_override_is_one_line_and_exit_code_2(run_mfh, tmp_path: Path, override: str, expected: str):
    result = run_mfh("train", override)
    assert result.returncode == 2
    assert expected in result.stderr
    assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "results").glob("runs/*/metrics.json")), "a failed run left a result"


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
