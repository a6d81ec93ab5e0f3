"""One run = one model on one dataset with one seed → `results/runs/<run_id>/`, written atomically."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

import mfh_cli
from mfh_cli.config import config_hash, resolved_threads, to_container
from mfh_cli.data import Dataset, load_dataset
from mfh_cli.engine import tracking
from mfh_cli.engine.distributed import init_from_environment, shutdown
from mfh_cli.engine.loop import Split, Trainer, build_trainer
from mfh_cli.engine.metrics import group_metrics
from mfh_cli.engine.placement import hardware_record, probe_machine, resolve_placement
from mfh_cli.errors import RunError
from mfh_cli.models import MultiTaskModel
from mfh_cli.predictions import TestRows, write_predictions
from mfh_cli.tasks import HISTORY_COLUMNS

MALLOC_TRIM_THRESHOLD, MALLOC_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
AT_FDCWD, RENAME_EXCHANGE = -100, 2  # renameat2's arguments (fcntl.h, linux/fs.h)
PARTIAL = ".partial"  # runs/.partial/<run_id>.<pid>: a run being written; renamed into place when complete
LOCKS = ".locks"  # runs/.locks/<run_id>.lock: held while a run directory is put in place
RUN_FILES = ("config.yaml", "metrics.json", "history.csv", "model.pt")
# Keys a finished run's metrics.json must hold. device, precision and hardware are written too but not required:
# runs written before they existed stay finished (their config.yaml holds the device and precision).
METRICS_KEYS = frozenset({"run_id", "model", "dataset", "tasks", "seed", "threads", "metrics", "oracle",
                          "best_epoch", "epochs_run", "validation_losses", "wall_seconds",
                          "train_samples_per_second", "parameters", "world_size", "versions"})
_DATASETS: dict[str, Dataset] = {}  # in-process memo: a sweep loads each dataset once


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    reused: bool = False


class UnfinishedRun(Exception):
    """A run directory that does not read back whole; the message says what is wrong with it."""


def read_finished(run_dir: Path) -> dict | None:
    """The metrics of the finished run in `run_dir`; None when there is no such directory.

    Finished means: every run file present and metrics.json strict JSON (no NaN/Infinity) with every key and
    this run's id. Anything less raises UnfinishedRun: the run is to be trained again.
    """
    if not run_dir.exists():
        return None
    missing = [name for name in RUN_FILES if not (run_dir / name).is_file()]
    if missing:
        raise UnfinishedRun(f"{', '.join(missing)} missing")
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(), parse_constant=_refuse_constant)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UnfinishedRun(f"metrics.json does not read back: {error}") from None
    absent = sorted(METRICS_KEYS - set(metrics)) if isinstance(metrics, dict) else ["every key"]
    if absent:
        raise UnfinishedRun(f"metrics.json lacks {', '.join(absent)}")
    if metrics["run_id"] != run_dir.name:
        raise UnfinishedRun(f"metrics.json belongs to run {metrics['run_id']}")
    if not (isinstance(metrics["metrics"], dict) and {"test", "validation"} <= metrics["metrics"].keys()):
        raise UnfinishedRun("metrics.json lacks the test or validation metrics")
    return metrics


def is_finished(run_dir: Path) -> bool:
    """Whether `run_dir` holds a finished run (read_finished decides)."""
    try:
        return read_finished(run_dir) is not None
    except UnfinishedRun:
        return False


def _refuse_constant(name: str) -> None:
    raise ValueError(f"non-standard JSON number {name}")


def ensure_writable(results_dir: Path) -> None:
    """Fail before any training when no run can be written under `results_dir` (read-only, not a directory)."""
    runs = results_dir / "runs"
    try:
        runs.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=runs):
            pass
    except OSError as error:
        raise RunError(f"{runs}: cannot write runs there ({error.strerror or error}); no run was trained") from None


def train(cfg: DictConfig, data_dir: Path | None = None, results_dir: Path = Path("results"),
          force: bool = False, quiet: bool = False) -> RunResult:
    """Train `cfg.model` on `cfg.data` with `cfg.seed`; reuse a finished identical run unless `force`.

    The device and precision are resolved first (engine/placement.py), so the run id names what is used. A trained
    run is logged to `cfg.tracking` once its directory is in place (engine/tracking.py); a reused one is not
    logged again."""
    cfg, placement = resolve_placement(cfg)
    run_id = config_hash(cfg)
    final = results_dir / "runs" / run_id
    if not force:
        try:
            finished = read_finished(final)
        except UnfinishedRun as problem:
            print(f"{final}: not a finished run ({problem}): training it again", file=sys.stderr)
        else:
            if finished is not None:
                return RunResult(final, finished, reused=True)
    ensure_writable(results_dir)
    tracking.prepare(cfg, results_dir)  # a missing extra or an unreachable tracker stops before training
    device = torch.device(placement.device)
    context = init_from_environment(device)
    threads = resolved_threads(cfg.trainer.threads)
    torch.set_num_threads(threads)
    keep_freed_memory()
    dataset = dataset_for(cfg, data_dir, results_dir / "cache", quiet)
    trainer = build_trainer(cfg, dataset, device, context, show_progress=not quiet and bool(cfg.trainer.progress))
    model, splits = trainer.base_model, trainer.splits
    started = time.perf_counter()
    fit = trainer.fit()
    test_outputs = trainer.predict(splits["test"])  # scored here and kept for the noise budget (predictions.py)
    metrics = {
        "run_id": run_id, "model": str(cfg.model.name), "dataset": str(cfg.data.name),
        "tasks": str(cfg.tasks.name), "seed": int(cfg.seed), "threads": threads,
        "device": placement.device, "precision": placement.precision,
        "hardware": hardware_record(placement, probe_machine()),
        "metrics": {"test": evaluate(trainer, splits["test"], "test", test_outputs),
                    "validation": evaluate(trainer, splits["validation"], "validation")},
        "oracle": oracle_metrics(trainer, splits),
        "best_epoch": fit.best_epoch, "epochs_run": fit.epochs_run,
        "validation_losses": [round(loss, 6) for loss in fit.validation_losses],
        "wall_seconds": round(time.perf_counter() - started, 3),
        "train_samples_per_second": round(fit.samples / max(fit.train_seconds, 1e-9), 1),
        "parameters": count_parameters(model), "loss_weights": trainer.weighting.record(),
        "world_size": context.world,
        "versions": {"mfh": mfh_cli.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    if context.is_main:
        test = splits["test"]
        rows = TestRows(test.labels.cpu().numpy(), test.mask.cpu().numpy(), test.cell.cpu().numpy(),
                        test.user.cpu().numpy(), tuple(trainer.behaviours), tuple(trainer.cells))
        write_run_directory(final, cfg, metrics, fit.history, model,
                            lambda directory: write_predictions(directory, test_outputs.cpu().numpy(), rows,
                                                                results_dir))
        tracking.record(cfg, final, metrics, fit.history, results_dir)
    shutdown(context)
    return RunResult(final, metrics)


def keep_freed_memory() -> None:
    """Have glibc keep freed memory for reuse instead of handing it back to the system (no-op elsewhere).

    By default every tensor above ~128 kB-32 MB is a fresh mmap and every page of it faults on first touch:
    evaluating 16384 rows spent half its time in page faults. Setting the variables MALLOC_MMAP_MAX_=0
    MALLOC_TRIM_THRESHOLD_=<large> before the process starts does the same.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(MALLOC_MMAP_MAX, 0)  # large blocks come from the heap, whose freed memory is reused
    libc.mallopt(MALLOC_TRIM_THRESHOLD, 1 << 30)  # and the heap gives memory back only above 1 GiB free


def dataset_for(cfg: DictConfig, data_dir: Path | None, cache_dir: Path, quiet: bool) -> Dataset:
    """Load the dataset once per process (keyed by the data config and directory)."""
    key = json.dumps([to_container(cfg.data), str(data_dir)], sort_keys=True)
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset(cfg, data_dir=data_dir, cache_dir=cache_dir, quiet=quiet)
    return _DATASETS[key]


def evaluate(trainer: Trainer, split: Split, name: str, predictions: torch.Tensor | None = None) -> dict:
    """Per-cell (user group; × scenario on a three-facet grid), per-behaviour metrics of the trained model on split
    `name` (its `predictions` [N, T] when already made); a non-finite output is a RunError."""
    predictions = trainer.predict(split) if predictions is None else predictions
    if not torch.isfinite(predictions[split.mask]).all():
        raise RunError(f"non-finite {name} predictions ({name} split, {trainer.first_non_finite(predictions, split)}"
                       "): the run diverged; lower trainer.lr; no run directory was written")
    return group_metrics(predictions, split.labels, split.mask, split.cell, trainer.behaviours, trainer.kinds,
                         trainer.cells, split.user, name)


def oracle_metrics(trainer: Trainer, splits: dict[str, Split]) -> dict | None:
    """The simulator's true expectations scored like a model: an upper-bound row. The metrics read logits for
    binary behaviours, so the expected probabilities become logits first, in float64: strictly increasing on
    distinct float32 probabilities, so the ranks (AUC, gAUC) are the probabilities' own."""
    if splits["test"].oracle is None:
        return None
    return {name: group_metrics(oracle_scores(splits[name].oracle, trainer.kinds), splits[name].labels,
                                splits[name].mask, splits[name].cell, trainer.behaviours, trainer.kinds,
                                trainer.cells, splits[name].user, name)
            for name in ("test", "validation")}


def oracle_scores(oracle: torch.Tensor, kinds: list[str]) -> torch.Tensor:
    """[N, T] float64: the oracle's expectation for regression columns, its logit for binary ones (±inf at 0, 1)."""
    expected = oracle.detach().cpu().double()
    binary = torch.tensor([kind == "binary" for kind in kinds])
    return torch.where(binary, torch.log(expected) - torch.log1p(-expected), expected)


def count_parameters(model: MultiTaskModel) -> dict:
    """Embedding parameters apart from the network's: the counts `mfh model describe` prints (one function)."""
    return model.parameter_counts()


def write_run_directory(final: Path, cfg: DictConfig, metrics: dict, history: list[dict],
                        model: torch.nn.Module, write_more: Callable[[Path], None] | None = None) -> None:
    """Write everything into runs/.partial/ (and what `write_more` writes into that directory: the predictions),
    then swap it into place under the run's lock: no half-written run is ever visible, and a write that fails
    (disk full) is one RunError line with nothing left behind."""
    partial_root = final.parent / PARTIAL
    temporary = partial_root / f"{final.name}.{os.getpid()}"
    try:
        partial_root.mkdir(parents=True, exist_ok=True)
        sweep_stale(partial_root)
        temporary.mkdir()
        OmegaConf.save(cfg, temporary / "config.yaml", resolve=True)
        (temporary / "metrics.json").write_text(json.dumps(metrics, indent=1, allow_nan=False))
        pd.DataFrame(history, columns=list(HISTORY_COLUMNS)).to_csv(
            temporary / "history.csv", index=False)
        # Serialised in memory first: a failed file write is then an OSError, not torch's "unexpected pos".
        weights = io.BytesIO()
        torch.save(model.state_dict(), weights)
        (temporary / "model.pt").write_bytes(weights.getbuffer())
        if write_more is not None:
            write_more(temporary)
        with run_lock(final):
            swap_into_place(temporary, final)
    except OSError as error:
        raise RunError(f"{final}: could not write the run (disk full?): {error.strerror or error}") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


@contextlib.contextmanager
def run_lock(final: Path) -> Iterator[None]:
    """Hold runs/.locks/<run_id>.lock exclusively: one process at a time replaces a run directory."""
    locks = final.parent / LOCKS
    locks.mkdir(exist_ok=True)
    with open(locks / f"{final.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def swap_into_place(new: Path, final: Path) -> None:
    """Move directory `new` to `final`; an existing `final` (--force) ends up at `new`, for the caller to remove.

    Where the file system can (Linux renameat2), the two are exchanged in one step, so a reader never finds the
    run missing; elsewhere the old run is moved aside for a moment.
    """
    if not final.exists():
        new.rename(final)
    elif not _exchange(new, final):
        aside = new.with_name(f"{new.name}.old")
        final.rename(aside)
        new.rename(final)
        aside.rename(new)


def _exchange(first: Path, second: Path) -> bool:
    """Atomically exchange two paths (renameat2 RENAME_EXCHANGE); False where the system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def sweep_stale(partial_root: Path) -> None:
    """Remove partial run directories left by processes that no longer exist (killed mid-write)."""
    for entry in partial_root.iterdir():
        pid = entry.name.split(".")[1] if entry.name.count(".") >= 1 else ""
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def metrics_frame(metrics: dict, split: str = "test") -> pd.DataFrame:
    """Rows = user groups, columns = `<behaviour> <metric>`; a cell that could not be computed is NaN."""
    cells = metrics["metrics"][split]
    rows = []
    for group, behaviours in cells.items():
        row = {"group": group}
        for behaviour, cell in behaviours.items():
            row[f"{behaviour} {cell['metric']}"] = cell["value"] if cell["value"] is not None else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
