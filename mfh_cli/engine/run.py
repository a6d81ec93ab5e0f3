"""One run = one model on one dataset with one seed → `results/runs/<run_id>/`, written atomically."""

from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

import mfh_cli
from mfh_cli.config import config_hash, to_container
from mfh_cli.data import Dataset, load_dataset
from mfh_cli.engine.distributed import Context, init_from_environment, shutdown
from mfh_cli.engine.loop import Split, Trainer, prepare_splits
from mfh_cli.engine.metrics import group_metrics
from mfh_cli.errors import ConfigError
from mfh_cli.models import build_model

MALLOC_TRIM_THRESHOLD, MALLOC_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
PARTIAL = ".partial"  # runs/.partial/<run_id>.<pid>: a run being written; renamed into place when complete
_DATASETS: dict[str, Dataset] = {}  # in-process memo: a sweep loads each dataset once


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    reused: bool = False


def train(cfg: DictConfig, data_dir: Path | None = None, results_dir: Path = Path("results"),
          force: bool = False, quiet: bool = False) -> RunResult:
    """Train `cfg.model` on `cfg.data` with `cfg.seed`; reuse a finished identical run unless `force`."""
    run_id = config_hash(cfg)
    runs = results_dir / "runs"
    final = runs / run_id
    if (final / "metrics.json").is_file() and not force:
        return RunResult(final, json.loads((final / "metrics.json").read_text()), reused=True)
    device = resolve_device(str(cfg.trainer.device))
    context = init_from_environment(device)
    set_threads(cfg.trainer.threads, context)
    keep_freed_memory()
    dataset = dataset_for(cfg, data_dir, results_dir / "cache", quiet)
    behaviours = list(cfg.tasks.behaviours)
    missing = [b for b in behaviours if b not in dataset.schema.behaviours]
    if missing:
        raise ConfigError(f"tasks.behaviours: {', '.join(missing)} not in dataset '{cfg.data.name}' "
                          f"(it has {', '.join(dataset.schema.behaviours)})")

    torch.manual_seed(int(cfg.seed))  # model initialisation; data order has its own generator
    model = build_model(cfg, dataset.schema).to(device)
    splits = prepare_splits(dataset, behaviours, device)
    weights = task_weights(cfg, model.groups, behaviours).to(device)
    runnable = torch.compile(model) if cfg.trainer.compile else model
    trainer = Trainer(runnable, splits, cfg.trainer, weights, int(cfg.seed), context,
                      show_progress=not quiet and bool(cfg.trainer.progress))
    started = time.perf_counter()
    fit = trainer.fit()
    metrics = {
        "run_id": run_id, "model": str(cfg.model.name), "dataset": str(cfg.data.name),
        "tasks": str(cfg.tasks.name), "seed": int(cfg.seed),
        "metrics": {split: evaluate(trainer, splits[split]) for split in ("test", "validation")},
        "oracle": oracle_metrics(trainer, splits),
        "best_epoch": fit.best_epoch, "epochs_run": fit.epochs_run,
        "validation_losses": [round(loss, 6) for loss in fit.validation_losses],
        "wall_seconds": round(time.perf_counter() - started, 3),
        "train_samples_per_second": round(fit.samples / max(fit.train_seconds, 1e-9), 1),
        "parameters": count_parameters(model), "world_size": context.world,
        "versions": {"mfh": mfh_cli.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    if context.is_main:
        write_run_directory(final, cfg, metrics, fit.history, model)
    shutdown(context)
    return RunResult(final, metrics)


def resolve_device(name: str) -> torch.device:
    """cpu, cuda, or auto (cuda when present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but no CUDA device is available (use trainer.device=auto)")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"trainer.device='{name}': expected cpu, cuda or auto")
    return torch.device(name)


def set_threads(threads: int | None, context: Context) -> None:
    """trainer.threads, or all cores shared between the ranks of this machine."""
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", context.world))
    torch.set_num_threads(int(threads) if threads else max(1, (os.cpu_count() or 1) // local_ranks))


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


def task_weights(cfg: DictConfig, groups: list[str], behaviours: list[str]) -> torch.Tensor:
    """[G, T] loss weights (SPEC §3): trainer.task_weights maps `<behaviour>_<group>` or `<behaviour>` → weight."""
    configured = dict(cfg.trainer.get("task_weights") or {})
    known = {f"{b}_{g}" for b in behaviours for g in groups} | set(behaviours)
    unknown = sorted(set(configured) - known)
    if unknown:
        raise ConfigError(f"trainer.task_weights: unknown task(s) {', '.join(unknown)}")
    return torch.tensor([[float(configured.get(f"{b}_{g}", configured.get(b, 1.0))) for b in behaviours]
                         for g in groups])


def evaluate(trainer: Trainer, split: Split) -> dict:
    """Per-group, per-behaviour metrics of the trained model on one split."""
    return group_metrics(trainer.predict(split), split.labels, split.mask, split.group, trainer.behaviours,
                         trainer.kinds, trainer.groups)


def oracle_metrics(trainer: Trainer, splits: dict[str, Split]) -> dict | None:
    """The simulator's true expectations scored like a model: an upper-bound row."""
    if splits["test"].oracle is None:
        return None
    return {name: group_metrics(splits[name].oracle, splits[name].labels, splits[name].mask, splits[name].group,
                                trainer.behaviours, trainer.kinds, trainer.groups)
            for name in ("test", "validation")}


def count_parameters(model: torch.nn.Module) -> dict:
    """Embedding parameters apart from the network's."""
    embeddings = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding)
                     for p in m.parameters(recurse=False))
    total = sum(p.numel() for p in model.parameters())
    return {"embeddings": embeddings, "network": total - embeddings, "total": total}


def write_run_directory(final: Path, cfg: DictConfig, metrics: dict, history: list[dict],
                        model: torch.nn.Module) -> None:
    """Write everything into runs/.partial/ and rename it into place, so no half-written run is ever visible."""
    partial_root = final.parent / PARTIAL
    partial_root.mkdir(parents=True, exist_ok=True)
    sweep_stale(partial_root)
    temporary = partial_root / f"{final.name}.{os.getpid()}"
    try:
        temporary.mkdir()
        OmegaConf.save(cfg, temporary / "config.yaml", resolve=True)
        (temporary / "metrics.json").write_text(json.dumps(metrics, indent=1))
        pd.DataFrame(history, columns=["step", "epoch", "split", "group", "task", "loss"]).to_csv(
            temporary / "history.csv", index=False)
        torch.save(model.state_dict(), temporary / "model.pt")
        if final.exists():  # --force: swap the old run out only once the new one is complete
            retired = partial_root / f"{final.name}.{os.getpid()}.old"
            final.rename(retired)
            temporary.rename(final)
            shutil.rmtree(retired)
        else:
            temporary.rename(final)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


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
