"""One run end to end on the simulator: determinism, early stopping, NaN, reuse, atomic run directories."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch

from mfh_cli.config import compose
from mfh_cli.models.parts.fused import load_kernels
from mfh_cli.engine.placement import choose_placement, hardware_record, probe_machine
from mfh_cli.engine.run import UnfinishedRun, ensure_writable, is_finished, read_finished, train
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
    assert files == ["config.yaml", "history.csv", "metrics.json", "model.pt", "predictions.npz"]
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert set(metrics["metrics"]["test"]) == {"new", "low", "high"}
    assert set(metrics["metrics"]["test"]["high"]) == {"cmpl", "finish", "skip"}
    assert metrics["metrics"]["test"]["high"]["cmpl"]["metric"] == "mse"
    assert metrics["oracle"]["test"]["high"]["finish"]["metric"] == "auc"
    assert metrics["parameters"]["total"] == metrics["parameters"]["embeddings"] + metrics["parameters"]["network"]
    # The same counts as `mfh model describe`, and the embedding table counted (it is a plain parameter).
    from mfh_cli.data import load_dataset
    from mfh_cli.models import build_model
    from mfh_cli.models.describe import summary

    cfg = compose(TINY)
    schema = load_dataset(cfg).schema
    assert metrics["parameters"] == summary(build_model(cfg, schema))["parameters"]
    assert metrics["parameters"]["embeddings"] == sum(schema.categorical.values()) * cfg.size.embedding_dim > 0
    assert metrics["loss_weights"]["method"] == "fixed"
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
    from mfh_cli.engine.loop import build_trainer

    trainer = build_trainer(cfg, load_dataset(cfg))
    trainer.model.load_state_dict(torch.load(result.run_dir / "model.pt", weights_only=True))
    assert trainer.loss_on(trainer.splits["validation"]) == pytest.approx(min(losses), abs=1e-5)


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


def test_bf16_trains_only_where_this_cpu_has_it_natively(run_mfh, tmp_path: Path):
    # The decision itself is tested on both machine classes in test_placement.py; this is the command end to end.
    result = run_mfh("train", *TINY, "trainer.precision=bf16", "--quiet", "--format", "json")
    native = probe_machine().cpu.native_bf16
    if native is None:
        assert result.returncode == 2, result.stdout
        line, = result.stderr.strip().splitlines()
        assert line.startswith("error: trainer.precision=bf16: this CPU (") and "has no native bf16" in line
        assert line.endswith("force it with trainer.allow_emulated_bf16=true")
        assert run_directories(tmp_path / "results" / "runs") == []
    else:
        assert result.returncode == 0, result.stderr
        metrics = json.loads(result.stdout)
        assert metrics["precision"] == "bf16" and metrics["hardware"]["native_bf16"] == native


def test_a_training_loss_gone_non_finite_fails_naming_step_and_task_and_writes_nothing(run_mfh, tmp_path: Path):
    # Adam at lr 1e6 without BatchNorm (the default recipe): the first step's outputs overflow.
    result = run_mfh("train", "trainer=smoke", "data.rows=2000", "trainer.lr=1e6", "--quiet")
    assert result.returncode == 1, result.stdout
    line, = result.stderr.strip().splitlines()
    assert re.fullmatch(r"error: non-finite training loss at step \d+ \(epoch \d+, task (cmpl|finish|skip)_"
                        r"(new|low|high)\): lower trainer.lr or check the labels; no run directory was written",
                        line), line
    assert run_directories(tmp_path / "results" / "runs") == []


def run_directories(runs: Path) -> list[str]:
    """The run directories under `runs` (not its .partial / .locks bookkeeping)."""
    return sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) if runs.exists() else []


def strict_json(path: Path) -> dict:
    """A JSON file read as standard JSON: NaN and Infinity are refused."""
    return json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{path} holds {name}"))


def test_diverged_run_fails_naming_split_and_task_and_writes_nothing(run_mfh, tmp_path: Path):
    # Adam at lr 1e6 under the authors' BatchNorm: the training loss stays finite but the validation loss
    # overflows to inf.
    result = run_mfh("train", "trainer=smoke", "data.rows=2000", "trainer.lr=1e6", "recipe=authors", "--quiet")
    assert result.returncode == 1, result.stdout
    line, = result.stderr.strip().splitlines()
    assert re.fullmatch(r"error: validation loss is (inf|nan) after step \d+ \(validation split, task "
                        r"(cmpl|finish|skip)_(new|low|high)\): the run diverged.*", line), line
    assert run_directories(tmp_path / "results" / "runs") == []


def test_without_a_compiler_a_run_trains_eager_and_says_why(run_mfh, tmp_path: Path):
    """A fresh kernel cache and no C++ compiler: the run falls back to the eager path, names it in its run id,
    config and metrics.json with the reason, and gives the numbers of an explicit trainer.kernels=eager run."""
    environment = {"CXX": str(tmp_path / "no-such-compiler"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    fallback = run_mfh("train", *TINY, "--quiet", "--format", "json", env=environment, check=True)
    explicit = run_mfh("train", *TINY, "trainer.kernels=eager", "--force", "--quiet", "--format", "json",
                       check=True)
    first, second = json.loads(fallback.stdout), json.loads(explicit.stdout)
    assert first["hardware"]["kernels"] == "eager"
    assert "no C++ compiler" in first["hardware"]["kernels_note"] and second["hardware"]["kernels_note"] is None
    assert first["run_id"] == second["run_id"] and first["metrics"] == second["metrics"]
    assert not (tmp_path / "cache" / "mfh" / "kernels").exists()


def test_metrics_json_is_strict_json_and_records_threads_precision_and_cpu(tmp_path: Path):
    result = train(compose([*TINY, "trainer.threads=2", "trainer.precision=auto", "trainer.device=auto"]),
                   results_dir=tmp_path, quiet=True)
    metrics = strict_json(result.run_dir / "metrics.json")
    assert metrics["threads"] == 2 and metrics["run_id"] == result.run_dir.name
    machine = probe_machine()
    expected = choose_placement("auto", "auto", False, machine)
    assert (metrics["device"], metrics["precision"]) == (expected.device, expected.precision)
    kernels = "fused" if expected.precision == "fp32" and load_kernels()[0] is not None else "eager"
    assert metrics["hardware"]["kernels"] == kernels
    assert f"kernels: {kernels}" in (result.run_dir / "config.yaml").read_text()
    assert metrics["hardware"] == {**hardware_record(expected, machine), "kernels": kernels,
                                   "kernels_note": metrics["hardware"]["kernels_note"]}
    assert metrics["hardware"]["cpu"]["model"] == machine.cpu.model
    saved = (result.run_dir / "config.yaml").read_text()
    assert f"precision: {expected.precision}" in saved and "precision: auto" not in saved
    # A run whose metrics.json holds a non-standard number is not a finished run.
    (result.run_dir / "metrics.json").write_text(json.dumps({**metrics, "wall_seconds": float("inf")}))
    with pytest.raises(UnfinishedRun, match="Infinity"):
        read_finished(result.run_dir)


@pytest.mark.parametrize("damage", ["truncate", "drop_key", "remove_model"])
def test_run_that_does_not_read_back_whole_is_trained_again(tmp_path: Path, capfd, damage: str):
    first = train(compose(TINY), results_dir=tmp_path, quiet=True)
    metrics_file = first.run_dir / "metrics.json"
    if damage == "truncate":
        metrics_file.write_text(metrics_file.read_text()[:100])
    elif damage == "drop_key":
        metrics_file.write_text(json.dumps({k: v for k, v in first.metrics.items() if k != "best_epoch"}))
    else:
        (first.run_dir / "model.pt").unlink()
    assert not is_finished(first.run_dir)
    capfd.readouterr()
    again = train(compose(TINY), results_dir=tmp_path, quiet=True)
    warning, = capfd.readouterr().err.strip().splitlines()
    assert warning.startswith(f"{first.run_dir}: not a finished run (") and warning.endswith("training it again")
    assert not again.reused and is_finished(first.run_dir)
    assert strict_json(metrics_file)["metrics"] == first.metrics["metrics"]


def test_results_dir_that_cannot_hold_runs_fails_before_training(run_mfh, tmp_path: Path):
    not_a_directory = tmp_path / "results"
    not_a_directory.write_text("a file where the results directory should be")
    with pytest.raises(RunError, match=r"results/runs: cannot write runs there .*no run was trained"):
        ensure_writable(not_a_directory)
    result = run_mfh("train", *TINY, "trainer.max_epochs=50", "trainer.patience=50")
    assert result.returncode == 1 and "cannot write runs there" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.strip().endswith("no run was trained")


@contextlib.contextmanager
def mounted_tmpfs(options: str) -> Iterator[Path]:
    """A tmpfs with mount `options` (root only): a small or read-only file system for a test.

    Mounted outside pytest's tmp_path, whose old folders pytest renames and removes while a session runs.
    """
    where = Path(tempfile.mkdtemp(prefix="mfh-test-tmpfs-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    try:
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
        yield where
    finally:
        if where.is_mount():
            subprocess.run(["umount", str(where)], check=True)
        where.rmdir()


def test_read_only_results_dir_fails_before_training():
    with mounted_tmpfs("ro,size=1m") as read_only:
        with pytest.raises(RunError, match="Read-only file system"):
            train(compose(TINY), results_dir=read_only, quiet=True)


def test_full_disk_is_one_line_and_leaves_nothing_half_written():
    # 64 KiB hold config.yaml, metrics.json and history.csv but not model.pt (torch said "unexpected pos").
    with mounted_tmpfs("size=64k") as small:
        with pytest.raises(RunError, match=r"/runs/\w+: could not write the run \(disk full\?\): No space left"):
            train(compose(TINY), results_dir=small, quiet=True)
        runs = small / "runs"
        assert run_directories(runs) == [] and list((runs / ".partial").iterdir()) == []


def test_concurrent_writers_of_one_run_leave_one_complete_run(mfh_path: str, tmp_path: Path):
    env = {**os.environ, "MFH_RESULTS_DIR": str(tmp_path / "results")}
    args = [mfh_path, "train", "trainer=smoke", "data.rows=2000", "--quiet"]
    subprocess.run(args, env=env, cwd=tmp_path, check=True, capture_output=True)  # the run exists: both swap
    writers = [subprocess.Popen([*args, "--force"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for writer in writers:
        assert writer.wait(timeout=600) == 0, writer.stderr.read()
    runs = tmp_path / "results" / "runs"
    run_id, = run_directories(runs)
    assert list((runs / ".partial").iterdir()) == []
    assert sorted(p.name for p in (runs / run_id).iterdir()) == ["config.yaml", "history.csv", "metrics.json",
                                                                "model.pt", "predictions.npz"]
    assert strict_json(runs / run_id / "metrics.json")["run_id"] == run_id


def test_a_writer_puts_its_run_in_place_only_under_the_run_lock(mfh_path: str, tmp_path: Path):
    env = {**os.environ, "MFH_RESULTS_DIR": str(tmp_path / "results")}
    args = [mfh_path, "train", "trainer=smoke", "data.rows=2000", "--quiet"]
    subprocess.run(args, env=env, cwd=tmp_path, check=True, capture_output=True)
    runs = tmp_path / "results" / "runs"
    run_id, = run_directories(runs)
    stamp = (runs / run_id / "metrics.json").stat().st_mtime_ns
    (runs / ".locks").mkdir(exist_ok=True)
    with open(runs / ".locks" / f"{run_id}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as another writer of this run would
        writer = subprocess.Popen([*args, "--force"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        written = runs / ".partial" / f"{run_id}.{writer.pid}" / "model.pt"
        while writer.poll() is None and not written.exists():  # its new run is complete, waiting to go in place
            time.sleep(0.05)
        time.sleep(1)
        assert writer.poll() is None, "the writer replaced the run without taking its lock"
        assert (runs / run_id / "metrics.json").stat().st_mtime_ns == stamp
    assert writer.wait(timeout=60) == 0, writer.stderr.read()
    assert (runs / run_id / "metrics.json").stat().st_mtime_ns != stamp
    assert list((runs / ".partial").iterdir()) == []
