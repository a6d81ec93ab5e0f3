"""The cluster path: Hydra's Ray launcher against a real Ray head on 127.0.0.1 (started here, stopped after) and
submitit's local launcher each give the runs.csv of the same study run in-process."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from mfh_cli.studies.execute import ablate

TINY = ["data.rows=4000", "trainer=smoke", "trainer.progress=false"]
STUDY = "hierarchical"  # two variants: two runs at one seed


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """runs.csv of the study trained in this process: what every launcher must reproduce."""
    outcome, = ablate([STUDY], seeds=1, overrides=TINY, results_dir=tmp_path_factory.mktemp("in_process"),
                      quiet=True)
    return pd.read_csv(outcome.directory / "runs.csv")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ray_head() -> Iterator[tuple[str, Path]]:
    """A Ray head on 127.0.0.1 in its own process group (its address, its session folder); the whole group is
    ended afterwards, whatever the test did."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    assert ray, "the ray command of this interpreter's environment"
    folder = Path(tempfile.mkdtemp(prefix="mfh-ray-", dir="/tmp"))  # Ray's socket paths must stay short
    port = free_port()
    command = [ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
               "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={folder}",
               f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}"]
    head = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its daemons stay in this process group after it returns
    try:
        _, error = head.communicate(timeout=120)
        assert head.returncode == 0, error[-2000:]
        yield f"127.0.0.1:{port}", folder
    finally:
        for signum, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):  # some of Ray's daemons linger on TERM
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, signum)
            deadline = time.monotonic() + grace
            while running_in(folder) and time.monotonic() < deadline:
                time.sleep(0.2)
        assert not running_in(folder), "Ray's processes outlived the test"
        shutil.rmtree(folder, ignore_errors=True)


def running_in(folder: Path) -> list[int]:
    """The processes whose command line names `folder` (the head's session folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and str(folder).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_ray_launcher_on_a_running_head_gives_the_in_process_results(ray_head, tmp_path: Path,
                                                                     in_process: pd.DataFrame):
    address, folder = ray_head
    launched, = ablate([STUDY], seeds=1, overrides=[*TINY, "hydra/launcher=ray",
                                                    f"hydra.launcher.ray.init.address={address}"],
                       results_dir=tmp_path, quiet=True)
    pd.testing.assert_frame_equal(pd.read_csv(launched.directory / "runs.csv"), in_process)
    worker_logs = "".join(path.read_text(errors="replace") for path in folder.glob("session_*/logs/worker-*.out"))
    trained_there = set(re.findall(r"run directory: \S+/runs/([0-9a-f]{12})", worker_logs))
    assert trained_there == set(in_process.run_id), "both runs were trained by the head's workers"


@pytest.mark.slow
def test_submitit_local_launcher_gives_the_in_process_results(tmp_path: Path, in_process: pd.DataFrame):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    launched, = ablate([STUDY], seeds=1, overrides=[*TINY, "hydra/launcher=submitit_local",
                                                    "hydra.launcher.timeout_min=10"],
                       results_dir=tmp_path, quiet=True)
    pd.testing.assert_frame_equal(pd.read_csv(launched.directory / "runs.csv"), in_process)
    assert list((tmp_path / "hydra" / STUDY / ".submitit").glob("*/*_result.pkl")), "submitit ran the jobs"


def test_the_documented_slurm_command_has_the_launchers_keys():
    """Without a SLURM cluster: the cluster guide's submitit_slurm overrides compose into the launcher's own config."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    guide = (Path(__file__).resolve().parents[2] / "docs" / "guides" / "clusters.md").read_text()
    line, = (line for line in guide.splitlines() if line.startswith("mfh ablate") and "submitit_slurm" in line)
    launcher = [item for item in line.split() if item.startswith(("hydra/", "hydra."))]
    shown = subprocess.run([sys.executable, "-m", "mfh_cli.studies.launch", *launcher,
                            "study=multifaceted", "index=0", "--cfg", "hydra", "--package", "hydra.launcher"],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    for item in launcher[1:]:
        key, value = item.removeprefix("hydra.launcher.").split("=", 1)
        assert re.search(rf"^\s*{key}: {value}$", shown.stdout, re.MULTILINE), (key, shown.stdout)
    assert "SlurmLauncher" in shown.stdout
