"""torchrun data parallelism: 2 CPU processes (gloo) equal 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# BatchNorm off: with it on, each rank normalises with its own half-batch statistics (as DDP without
# SyncBatchNorm), so the two runs differ by more than float noise.
CONFIG = ["data.rows=6000", "trainer=smoke", "trainer.max_epochs=2", "model.dense.batch_norm=none",
          "trainer.threads=1", "--quiet", "--format", "json"]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path: Path, mfh_path: str):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun ships with torch"
    env = {**os.environ, "MFH_RESULTS_DIR": str(tmp_path / "one")}
    single = subprocess.run([mfh_path, "train", *CONFIG], capture_output=True, text=True, env=env, timeout=600)
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "MFH_RESULTS_DIR": str(tmp_path / "two")}
    double = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "mfh_cli", "train",
                             *CONFIG], capture_output=True, text=True, env=env, timeout=600)
    assert double.returncode == 0, double.stderr
    one, two = json.loads(single.stdout), json.loads(double.stdout)
    assert one["world_size"] == 1 and two["world_size"] == 2
    for group, cells in one["metrics"]["test"].items():
        for behaviour, cell in cells.items():
            # Same global batches and summed gradients: equal up to float reduction order.
            assert two["metrics"]["test"][group][behaviour]["value"] == pytest.approx(cell["value"], abs=2e-4)
    assert [p.name for p in (tmp_path / "two" / "runs").iterdir() if not p.name.startswith(".")] == [one["run_id"]]
