"""Studies end to end on tiny configs: runs.csv columns, shared runs, resume after a kill, --jobs equivalence."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import resource
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from mfh_cli.errors import ConfigError, MfhError
from mfh_cli.studies.execute import ablate, cell_values, write_file
from mfh_cli.studies.plan import runnable_studies
from mfh_cli.studies.plan import plan
from mfh_cli.studies.spec import load_study, study_names
from mfh_cli.tasks import RUNS_COLUMNS, metrics_of

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
    assert tuple(runs.columns) == RUNS_COLUMNS
    assert set(runs["variant"]) == {"hmtl", "flat", "oracle"}
    assert set(runs["seed"]) == {0, 1} and set(runs["split"]) == {"test", "validation"}
    model_rows = runs[runs["variant"] != "oracle"]
    # 2 variants x 2 seeds x 2 splits x 3 groups x (cmpl: each regression metric, finish and skip: each binary one)
    per_cell = len(metrics_of("regression")) + 2 * len(metrics_of("binary"))
    assert len(model_rows) == 2 * 2 * 2 * 3 * per_cell
    assert not model_rows.duplicated(["variant", "seed", "split", "group", "task", "metric"]).any()
    assert set(model_rows.loc[model_rows["task"] == "cmpl", "metric"]) == {entry.name for entry in
                                                                           metrics_of("regression")}
    assert set(model_rows.loc[model_rows["task"] == "finish", "metric"]) == {"auc", "logloss", "gauc",
                                                                             "gauc_unweighted"}
    oracle_rows = runs[runs["variant"] == "oracle"]
    assert set(oracle_rows["metric"]) == set(model_rows["metric"])
    assert oracle_rows.loc[oracle_rows["metric"].isin(["mse", "logloss"]), "value"].notna().all()
    described = json.loads((outcome.directory / "study.json").read_text())
    assert described["reference"] == "hmtl" and described["seeds"] == [0, 1]
    assert outcome.directory == tmp_path / "studies" / "hierarchical" / "synthetic"


def test_a_seed_gives_the_same_bits_alone_in_a_sweep_and_with_two_jobs(tmp_path: Path):
    """The execution path does not move a number: every run of a sweep with --jobs 1 and with --jobs 2 (worker
    processes), and each run trained alone by `train`, give bit-identical metrics (fused kernels included: the
    default, which the tiny config keeps)."""
    from mfh_cli.engine.run import train

    serial, = ablate(["hierarchical"], seeds=1, jobs=1, overrides=TINY, results_dir=tmp_path / "a", quiet=True)
    parallel, = ablate(["hierarchical"], seeds=1, jobs=2, overrides=TINY, results_dir=tmp_path / "b", quiet=True)
    one = pd.read_csv(serial.directory / "runs.csv")
    two = pd.read_csv(parallel.directory / "runs.csv")
    assert (one["run_id"] == two["run_id"]).all()
    assert one["value"].equals(two["value"])
    for run in serial.runs:
        alone = train(run.config(), results_dir=tmp_path / "alone", quiet=True)
        assert alone.run_dir.name == run.run_id
        in_sweep = json.loads((tmp_path / "a" / "runs" / run.run_id / "metrics.json").read_text())
        assert alone.metrics["metrics"] == in_sweep["metrics"]


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
    assert not model_rows.duplicated(["variant", "seed", "split", "group", "task", "metric"]).any()


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


def finished_runs(results: Path) -> set[str]:
    """Run directories in place (runs/.partial/ holds the ones being written); each must be complete."""
    runs = results / "runs"
    found = {path.name for path in runs.iterdir() if not path.name.startswith(".")} if runs.exists() else set()
    assert all((runs / run_id / "metrics.json").is_file() for run_id in found), "a half-written run is visible"
    return found


def sweep(mfh_path: str, results: Path, *args: str) -> subprocess.Popen:
    """`mfh ablate` on the hierarchical study (tiny runs) in its own session, results under `results`."""
    command = [mfh_path, "ablate", "--study", "hierarchical", "--quiet", *args, "trainer=smoke", "data.rows=2000",
               "trainer.progress=false"]
    return subprocess.Popen(command, env={**os.environ, "MFH_RESULTS_DIR": str(results)}, cwd=results.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "jobs", "whole_group"), [
    (signal.SIGTERM, "2", False),  # `kill -TERM <pid>`: the sweep's process alone
    (signal.SIGINT, "2", True),  # Ctrl-C in a terminal: the whole foreground process group, workers included
    (signal.SIGINT, "1", False),  # in-process runs
])
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to find the workers")
def test_signal_stops_the_sweep_keeping_finished_runs(mfh_path: str, tmp_path: Path, signum: int, jobs: str,
                                                      whole_group: bool):
    results = tmp_path / "results"
    process = sweep(mfh_path, results, "--seeds", "6", "--jobs", jobs)  # 12 runs
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not list((results / "runs").glob("*/metrics.json")):
            time.sleep(0.1)
        workers = [pid for pid in children_of(process.pid) if "spawn_main" in command_line(pid)]
        (os.killpg if whole_group else os.kill)(process.pid, signum)
        signalled = time.time()
        _, stderr = process.communicate(timeout=120)
        stopped_after = time.time() - signalled
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 128 + signum, stderr
    message = re.fullmatch(r"interrupted: (\d+) of 12 runs done, rerun to resume", stderr.strip())
    assert message, stderr
    done = finished_runs(results)
    assert len(done) == int(message.group(1)) < 12, "the queued runs were trained before exiting"
    assert stopped_after < 30
    assert not any(alive(pid) for pid in workers), "a worker outlived the sweep"
    assert not (results / "studies").exists() or not list((results / "studies").rglob("*runs.csv*"))


@pytest.mark.slow
def test_sweep_killed_at_random_points_resumes_to_the_same_runs_csv(mfh_path: str, tmp_path: Path):
    """Fault injection: SIGKILL, then SIGTERM, at three seeded random moments each, each time rerunning the sweep
    on what the last one left; the finished runs.csv equals an uninterrupted sweep's byte for byte."""
    reference = tmp_path / "reference" / "results"
    reference.parent.mkdir()
    uninterrupted = sweep(mfh_path, reference, "--seeds", "2", "--jobs", "1")
    assert uninterrupted.wait(timeout=300) == 0, uninterrupted.stderr.read()
    expected = (reference / "studies" / "hierarchical" / "synthetic" / "runs.csv").read_bytes()

    results = tmp_path / "killed" / "results"
    results.parent.mkdir()
    delays = random.Random(20261130)
    for signum in [signal.SIGKILL] * 3 + [signal.SIGTERM] * 3:
        process = sweep(mfh_path, results, "--seeds", "2", "--jobs", "1")
        time.sleep(delays.uniform(1.5, 8.0))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        process.wait(timeout=120)
        if signum == signal.SIGTERM and process.returncode == 143:  # a bare "interrupted" while still planning
            assert re.fullmatch(r"interrupted(: \d of 4 runs done, rerun to resume)?", process.stderr.read().strip())
        elif signum == signal.SIGTERM:  # it had ended, or the signal came while Python started or shut down
            assert process.returncode in (0, -signal.SIGTERM)
        finished_runs(results)
    resumed = sweep(mfh_path, results, "--seeds", "2", "--jobs", "1")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert (results / "studies" / "hierarchical" / "synthetic" / "runs.csv").read_bytes() == expected


@pytest.mark.parametrize("where", ["under a file", "read-only"])
def test_unwritable_results_dir_fails_before_training(run_mfh, tmp_path: Path, where: str):
    if where == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        results = tmp_path / "locked"
        results.mkdir(mode=0o555)
    else:
        (tmp_path / "file").write_text("")
        results = tmp_path / "file" / "results"
    result = run_mfh("ablate", "--study", "hierarchical", "--seeds", "1", "--jobs", "1", "--results-dir",
                     str(results), *TINY)
    assert result.returncode == 1
    assert re.fullmatch(rf"error: {re.escape(str(results / 'runs'))}: cannot write runs there \(.+\); no run was "
                        r"trained", result.stderr.strip()), result.stderr


def test_failed_write_names_the_file_and_leaves_no_temporary(tmp_path: Path):
    (tmp_path / "runs.csv").mkdir()  # the rename onto it fails after the temporary is written
    with pytest.raises(MfhError, match=rf"^{re.escape(str(tmp_path / 'runs.csv'))}: cannot write \(.+\)$"):
        write_file(tmp_path / "runs.csv", "study,variant\n")
    assert [path.name for path in tmp_path.iterdir()] == ["runs.csv"]

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (10, hard))  # a full disk, for this process
    try:
        with pytest.raises(MfhError, match=r"study.json: cannot write \(File too large\)"):
            write_file(tmp_path / "study.json", "x" * 100)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert [path.name for path in tmp_path.iterdir()] == ["runs.csv"]


def test_a_sweep_without_a_terminal_prints_one_line_per_finished_run(run_mfh):
    # run_mfh's pipes are no terminal (as in CI, nohup or a cluster job): no live bar, one plain line per run.
    result = run_mfh("ablate", "--study", "hierarchical", "--seeds", "2", "--jobs", "2", "trainer=smoke",
                     "data.rows=2000", check=True)
    lines = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert len(lines) == 4, result.stderr
    for count, line in enumerate(lines, start=1):
        assert re.fullmatch(rf"\[{count}/4\] hierarchical: (hmtl|flat) seed [01] \(play\)  \d+ s", line), line
    assert {re.search(r": (\w+ seed \d)", line).group(1) for line in lines} == {
        "hmtl seed 0", "hmtl seed 1", "flat seed 0", "flat seed 1"}
    # --quiet silences them: test_signal_stops_the_sweep_keeping_finished_runs reads a quiet sweep's whole stderr.


def test_a_study_bound_to_the_simulator_is_skipped_on_other_data_or_refused_alone(tmp_path: Path, capsys):
    kuairand = ["data=kuairand"]
    assert [study.name for study in runnable_studies([load_study("controls"), load_study("biasnet")], kuairand)] \
        == ["biasnet"]
    assert "skipped: study 'controls' runs on data=synthetic only" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="runs on data=synthetic only"):
        ablate(["controls"], seeds=1, overrides=kuairand, results_dir=tmp_path, quiet=True)
    assert not (tmp_path / "runs").exists()
    assert [study.name for study in runnable_studies([load_study("controls")], ["trainer=smoke"])] == ["controls"]


def test_a_cell_written_before_a_metric_existed_gives_it_no_value():
    old = {"metric": "auc", "value": 0.7, "rows": 10, "positives": 3, "reason": None}
    assert cell_values(old) == {"auc": 0.7, "logloss": None, "gauc": None, "gauc_unweighted": None}
    new = {**old, "values": {"auc": {"value": 0.7, "reason": None}, "logloss": {"value": 0.5, "reason": None},
                             "gauc": {"value": None, "reason": "no user", "users": 0, "users_skipped": 3},
                             "gauc_unweighted": {"value": None, "reason": "no user"}}}
    assert cell_values(new) == {"auc": 0.7, "logloss": 0.5, "gauc": None, "gauc_unweighted": None}
