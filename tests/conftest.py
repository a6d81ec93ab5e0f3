"""Shared fixtures: the installed `mfh` as a real subprocess, the real KuaiRand slice, isolated result dirs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`-n auto`, the default addopts) give each worker its own share of the cores.

    Every run resolves `trainer.threads=null` to the cores it may run on (mfh_cli.available_cores), so pinning a
    worker makes it and the `mfh` subprocesses it starts use its share only; unpinned, N workers each running
    all-core torch would oversubscribe the machine, which stalls OpenMP's spinning threads several-fold."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if not worker:
        # Build the fused training kernel (models/parts/fused.py) once, before any worker or `mfh` subprocess
        # would build it inside a test: the first build on a machine takes about a minute.
        from mfh_cli.models.parts.fused import load_kernels
        load_kernels()
    if not worker or workers < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= workers:
        os.sched_setaffinity(0, cores[int(worker.removeprefix("gw")) % workers::workers])


def mfh_executable() -> str:
    """The `mfh` console script of the interpreter running the tests (the installed package)."""
    found = shutil.which("mfh", path=str(Path(sys.executable).parent)) or shutil.which("mfh")
    if found is None:
        pytest.fail("the `mfh` console script is not installed: run `pip install .` first")
    return found


@pytest.fixture
def mfh_path() -> str:
    """Path of the installed `mfh` console script (for tests that manage the process themselves)."""
    return mfh_executable()


@pytest.fixture
def run_mfh(tmp_path: Path):
    """Run `mfh ARGS...` in a subprocess with results under tmp_path; returns CompletedProcess (text)."""

    def run(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 600,
            check: bool = False) -> subprocess.CompletedProcess:
        environment = {**os.environ, "MFH_RESULTS_DIR": str(tmp_path / "results"), **(env or {})}
        result = subprocess.run([mfh_executable(), *args], capture_output=True, text=True, env=environment,
                                cwd=cwd or tmp_path, timeout=timeout)
        if check and result.returncode != 0:
            pytest.fail(f"mfh {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    return run


@pytest.fixture(scope="session")
def kuairand_dir() -> Path:
    """The real KuaiRand-Pure slice: MFH_DATA_DIR (the dataset folder or its parent); skipped when unset."""
    root = os.environ.get("MFH_DATA_DIR")
    if not root:
        pytest.skip("MFH_DATA_DIR is unset: set it to the folder holding kuairand-pure/ to run real-data tests")
    path = Path(root)
    if not list(path.glob("log_standard_*.csv")):
        path = path / "kuairand-pure"
    if not list(path.glob("log_standard_*.csv")):
        pytest.fail(f"MFH_DATA_DIR={root} holds no log_standard_*.csv (nor does its kuairand-pure/)")
    return path
