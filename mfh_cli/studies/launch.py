"""Scale-out through Hydra's launcher plugins (joblib, submitit, ray), not a launcher of our own.

`mfh ablate --study S hydra/launcher=joblib [hydra.launcher.n_jobs=4]` starts this Hydra app in multirun mode
with one job per pending run (`index=i,j,...`); each job re-plans the study (deterministic) and trains its run
in a fresh `mfh train` process. Finished runs land in the shared results directory, so `mfh ablate` collects
them exactly as if it had trained them itself. On a cluster (submitit_slurm, ray) the results directory must be
on a file system every node sees.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from mfh_cli.errors import MfhError
from mfh_cli.extras import require
from mfh_cli.studies.plan import PlannedRun, plan
from mfh_cli.studies.spec import load_expanded
from mfh_cli.studies.tuned import apply_tuning


# The modules each of Hydra's launchers needs (the `cluster` extra; joblib's is also in `test`).
LAUNCHER_MODULES = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher",),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "submitit"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "submitit"),
    "ray": ("hydra_plugins.hydra_ray_launcher", "ray"),
}
RAY_ADDRESS, RAY_OBJECT_STORE = "hydra.launcher.ray.init.address", "hydra.launcher.ray.init.object_store_memory"


@dataclass
class LaunchJob:
    """One job of the sweep: the study, which of its planned runs, and where results go."""

    study: str = MISSING
    index: int = MISSING
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # the sweep's seeds (mfh ablate --seeds)
    overrides: list[str] = field(default_factory=list)
    results_dir: str = "results"
    data_dir: str | None = None
    tuned: bool = False  # `mfh ablate --tuned`: the variants train with best.yaml's overrides (studies/tune.py)


ConfigStore.instance().store(name="launch", node=LaunchJob)


@hydra.main(version_base=None, config_name="launch")
def job(cfg: DictConfig) -> None:
    """Train planned run `cfg.index` of `cfg.study` in a fresh process (any launcher can run this)."""
    study = load_expanded(cfg.study)
    if cfg.tuned:
        study, = apply_tuning([study], list(cfg.overrides), Path(cfg.results_dir))
    run = plan(study, [int(seed) for seed in cfg.seeds], list(cfg.overrides))[cfg.index]
    # run.overrides hold the sweep's thread count (studies/plan.py), so the run id is the one planned.
    command = [sys.executable, "-m", "mfh_cli", "train", *run.overrides, "--quiet", "--results-dir",
               cfg.results_dir]
    if cfg.data_dir:
        command += ["--data-dir", cfg.data_dir]
    subprocess.run(command, check=True)


def is_launcher_override(item: str) -> bool:
    """The documented overrides for Hydra's launcher: hydra/launcher=<name>, hydra.launcher.<key>=<value>, and
    +hydra.launcher.<key>=<value>, which adds a key to an open part of the launcher's config (Ray's `init` and
    `remote` options, e.g. `+hydra.launcher.ray.remote.num_cpus=1`).

    Any other Hydra override (callbacks, other `+hydra...`, the launcher's `_target_`) goes on to compose, which
    refuses it.
    """
    key = item.removeprefix("+")
    if key.startswith("hydra.launcher._target_"):
        return False
    return item.startswith("hydra/launcher=") or key.startswith("hydra.launcher.")


def launcher_overrides(launcher: Sequence[str]) -> list[str]:
    """The launcher overrides as Hydra is given them, after checking that the named launcher's plugin (the
    `cluster` extra) imports: a missing one is one line naming the install.

    hydra-ray-launcher 1.2.2 always passes `object_store_memory` to `ray.init`, which Ray refuses when it connects
    to a running cluster (`hydra.launcher.ray.init.address=HOST:PORT`); it is set to null there unless given."""
    chosen = [item.split("=", 1)[1] for item in launcher if item.startswith("hydra/launcher=")]
    for name in chosen:
        for module in LAUNCHER_MODULES.get(name, ()):
            require(module, f"hydra/launcher={name}", "cluster")
    overrides = list(launcher)
    keys = {item.lstrip("+").split("=", 1)[0] for item in launcher}
    if "ray" in chosen and RAY_ADDRESS in keys and RAY_OBJECT_STORE not in keys:
        overrides.append(f"+{RAY_OBJECT_STORE}=null")
    return overrides


def launch(study: str, runs: list[PlannedRun], pending: list[PlannedRun], seeds: Sequence[int],
           overrides: Sequence[str], launcher: Sequence[str], data_dir: Path | None, results_dir: Path,
           tuned: bool = False) -> None:
    """Dispatch `pending` runs of one study through the Hydra launcher named in `launcher` overrides."""
    if not pending:
        return
    indices = ",".join(str(runs.index(run)) for run in pending)
    quoted = ",".join('"' + item.replace('"', '\\"') + '"' for item in overrides)
    command = [sys.executable, "-m", "mfh_cli.studies.launch", "--multirun", *launcher_overrides(launcher),
               f"study={study}", f"seeds=[{','.join(map(str, seeds))}]", f"overrides=[{quoted}]", f"index={indices}",
               f"results_dir={results_dir.resolve()}", f"tuned={str(tuned).lower()}",
               f"hydra.sweep.dir={(results_dir / 'hydra' / study).resolve()}"]
    if data_dir is not None:
        command.append(f"data_dir={Path(data_dir).resolve()}")
    finished = subprocess.run(command)
    if finished.returncode != 0:
        raise MfhError(f"the Hydra launcher ({' '.join(launcher)}) exited with {finished.returncode}; finished "
                       "runs are kept: rerun the same command to retry the rest")


if __name__ == "__main__":
    job()
