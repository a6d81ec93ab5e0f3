"""mfh: an experiment runner for Multi-Faceted Hierarchical multi-task recommendation."""

import os
from pathlib import Path

__version__ = "0.1.0"

_PACKAGED = Path(__file__).resolve().parent / "conf"
# The shipped YAML configs. Installed: mfh_cli/conf inside the package; from a source checkout: conf/ at the
# repository top. Here, not in config.py, so that the CLI's help can list them without importing Hydra.
CONF_DIR = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[1] / "conf"


def config_names(group: str) -> list[str]:
    """The names a config group offers (conf/<group>/*.yaml), sorted: `model` gives biasnet, cgc, flat, ..."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, a container's or SLURM's cpuset), not every
    core of the machine, which os.cpu_count() gives and which would oversubscribe a pinned job."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity API
        return os.cpu_count() or 1
