"""mfh: an experiment runner for Multi-Faceted Hierarchical multi-task recommendation."""

from pathlib import Path

__version__ = "0.1.0"

_PACKAGED = Path(__file__).resolve().parent / "conf"
# The shipped YAML configs. Installed: mfh_cli/conf inside the package; from a source checkout: conf/ at the
# repository top. Here, not in config.py, so that the CLI's help can list them without importing Hydra.
CONF_DIR = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[1] / "conf"


def config_names(group: str) -> list[str]:
    """The names a config group offers (conf/<group>/*.yaml), sorted: `model` gives biasnet, cgc, flat, ..."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))
