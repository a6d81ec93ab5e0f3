"""Studies end to end on tiny configs: runs.csv columns, shared runs, resume after a kill, --jobs equivalence."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from mfh_cli.studies.execute import RUNS_COLUMNS, ablate
from mfh_cli.studies.plan import plan
from mfh_cli.studies.spec import load_study, study_names

TINY = ["data.rows=4000", "trainer=smoke", "trainer.progress=false"]


def test_every_shipped_study_plans():
    for name in study_names():
        study = load_study(name)
        runs = plan(study, [0], TINY)
        assert {run.variant for run in runs} == set(study.variants)
        assert len({run.run_id for run in runs}) == len(runs), f"{name}: two variants compose the same run"


def test_identical_runs_are_shared_between_studies():
    table1 = {r.variant: r.run_id for r in plan(load_study("multifaceted"), [0], TINY)}
    table3 = {r.variant: r.run_id for r in plan(load_study("heterogeneity"), [0], TINY)}
    table4 = {r.variant: r.run_id for r in plan(load_study("biasnet"), [0], TINY)}
    assert table1["mfh"] == table3["mfh"] == table4["mfh"]


def test_study_writes_tidy_runs_csv(tmp_path: Path):
    outcome, = ablate(["hierarchical"], seeds=2, overrides=TINY, results_dir=tmp_path, quiet=True)
    runs = pd.read_csv(outcome.directory / "runs.csv")
    assert list(runs.columns) == RUNS_COLUMNS
    assert set(runs["variant"]) == {"hmtl", "flat", "oracle"}
    assert set(runs["seed"]) == {0, 1} and set(runs["split"]) == {"test", "validation"}
    model_rows = runs[runs["variant"] != "oracle"]
    # 2 variants x 2 seeds x 2 splits x 3 groups x 3 behaviours, each exactly once
    assert len(model_rows) == 72
    assert not model_rows.duplicated(["variant", "seed", "split", "group", "task"]).any()
    assert set(model_rows.loc[model_rows["task"] == "cmpl", "metric"]) == {"mse"}
    described = json.loads((outcome.directory / "study.json").read_text())
    assert described["reference"] == "hmtl" and described["seeds"] == [0, 1]
    assert outcome.directory == tmp_path / "studies" / "hierarchical" / "synthetic"


def test_jobs_two_gives_the_same_numbers_as_jobs_one(tmp_path: Path):
    serial, = ablate(["hierarchical"], seeds=1, jobs=1, overrides=TINY, results_dir=tmp_path / "a", quiet=True)
    parallel, = ablate(["hierarchical"], seeds=1, jobs=2, overrides=TINY, results_dir=tmp_path / "b", quiet=True)
    one = pd.read_csv(serial.directory / "runs.csv")
    two = pd.read_csv(parallel.directory / "runs.csv")
    assert (one["run_id"] == two["run_id"]).all()
    assert (one["value"] - two["value"]).abs().max() < 1e-6


@pytest.mark.slow
def test_killed_sweep_resumes_without_losing_or_redoing_runs(mfh_path: str, tmp_path: Path):

    results = tmp_path / "results"
    args = [mfh_path, "ablate", "--study", "multifaceted", "--seeds", "3", "--quiet", *TINY,
            "data.rows=20000"]
    env = {**os.environ, "MFH_RESULTS_DIR": str(results)}
    process = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    runs = results / "runs"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(runs.glob("*/metrics.json"))) < 2:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # the hardest interruption, workers included: no cleanup code runs
    process.wait()
    finished = {path.parent.name: path.stat().st_mtime_ns for path in runs.glob("*/metrics.json")}
    assert 2 <= len(finished) < 9, "kill the sweep mid-way"
    resumed = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    after = {path.parent.name: path.stat().st_mtime_ns for path in runs.glob("*/metrics.json")}
    assert len(after) == 9
    assert all(after[run_id] == stamp for run_id, stamp in finished.items()), "a finished run was redone"
    table = pd.read_csv(results / "studies" / "multifaceted" / "synthetic" / "runs.csv")
    model_rows = table[table["variant"] != "oracle"]
    assert sorted(model_rows["run_id"].unique()) == sorted(after)
    assert not model_rows.duplicated(["variant", "seed", "split", "group", "task"]).any()


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def command_line(pid: int) -> str:
    """A process's command line ('' once it has ended)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to find the workers")
def test_workers_exit_when_the_sweep_process_is_killed_alone(mfh_path: str, tmp_path: Path):
    args = [mfh_path, "ablate", "--study", "multifaceted", "--seeds", "3", "--jobs", "2", "--quiet", *TINY,
            "data.rows=20000"]
    env = {**os.environ, "MFH_RESULTS_DIR": str(tmp_path / "results")}
    process = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline, workers = time.time() + 120, []
        while time.time() < deadline and len(workers) < 2:  # the pool's spawned workers (and its tracker)
            workers = [pid for pid in children_of(process.pid) if "spawn_main" in command_line(pid)]
            time.sleep(0.2)
        assert len(workers) == 2, "the sweep never started its two workers"
        process.send_signal(signal.SIGKILL)  # the parent alone: no cleanup code of ours runs
        process.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(alive(pid) for pid in workers):
            time.sleep(0.2)
        assert not any(alive(pid) for pid in workers), "workers outlived the sweep process"
    finally:  # whatever failed, leave nothing running: the session's group holds the parent and its workers
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.slow
def test_hydra_joblib_launcher_dispatches_the_same_runs(tmp_path: Path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    launched, = ablate(["hierarchical"], seeds=1, overrides=[*TINY, "hydra/launcher=joblib",
                                                             "hydra.launcher.n_jobs=2"],
                       results_dir=tmp_path / "a", quiet=True)
    local, = ablate(["hierarchical"], seeds=1, overrides=TINY, results_dir=tmp_path / "b", quiet=True)
    one = pd.read_csv(launched.directory / "runs.csv")
    two = pd.read_csv(local.directory / "runs.csv")
    assert (one["run_id"] == two["run_id"]).all()
    assert (one["value"] - two["value"]).abs().max() < 1e-6
    assert (tmp_path / "a" / "hydra" / "hierarchical" / "multirun.yaml").is_file()


def test_sweep_retrains_a_run_whose_metrics_do_not_read_back(tmp_path: Path, capfd):
    first, = ablate(["hierarchical"], seeds=1, overrides=TINY, results_dir=tmp_path, quiet=True)
    broken = tmp_path / "runs" / first.runs[0].run_id / "metrics.json"
    broken.write_text(broken.read_text()[:200])  # truncated, as by a full disk or a copy cut short
    capfd.readouterr()
    again, = ablate(["hierarchical"], seeds=1, overrides=TINY, results_dir=tmp_path, quiet=True)
    warning, = capfd.readouterr().err.strip().splitlines()
    assert warning.startswith(f"{broken.parent}: not a finished run (metrics.json does not read back")
    assert json.loads(broken.read_text())["run_id"] == broken.parent.name
    assert pd.read_csv(again.directory / "runs.csv").equals(pd.read_csv(first.directory / "runs.csv"))
