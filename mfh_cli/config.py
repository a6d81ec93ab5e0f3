"""Compose the Hydra config tree (shipped in the package) and resolve where data and results live."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.initialize import get_gh_backup, restore_gh_from_backup
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mfh_cli import CONF_DIR, available_cores
from mfh_cli.config_schema import check_config
from mfh_cli.errors import ConfigError, Interrupted
from mfh_cli.tasks import facet_trees, joint_tree

# The model files' trees over the run's facets (conf/model/mfh.yaml, flat.yaml): resolved at compose time, so a
# run's config (and its id) holds the trees themselves, e.g. [behaviour/group, group/behaviour].
OmegaConf.register_new_resolver("facet_trees", facet_trees, replace=True)
OmegaConf.register_new_resolver("joint_tree", joint_tree, replace=True)

# Keys that change how a run is executed but not what it computes: left out of the run id (`tracking` says where
# a run is logged besides its run directory). trainer.threads is not one of them: the thread count changes float
# reduction order, so the run id holds the count actually used (and trainer.device / trainer.precision the ones
# actually used: engine/placement.py resolves them first).
EXECUTION_ONLY_KEYS = ("trainer.progress", "trainer.allow_emulated_bf16", "tracking")
# Keys added after runs were made, at the value that reproduces those runs: at that value a key stays out of the run
# id, so the runs made before it existed are found again (`data.duplicates=keep`: duplicate impressions kept, as
# every loader did before data/validate.py's policy; the default `drop` names new runs; the training recipe's keys,
# engine/loop.py, at the values of the training every run had before them).
LEGACY_VALUES = {"data.duplicates": "keep", "trainer.selection": "best", "trainer.ema_decay": None,
                 "trainer.precise_bn_batches": 0}
# The fused kernels' numerics (models/parts/relu_batch_norm.cpp): part of a fused run's id, so that a run trained by
# an earlier kernel is not reused as this one's. Raise it when a change to the kernels changes their floats.
# 2: the gates' softmax moved into the fused mixing (2026-12-03).
FUSED_KERNELS_VERSION = 2


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> DictConfig:
    """Compose `conf/<config_name>.yaml` with Hydra overrides; any problem becomes one ConfigError line."""
    overrides = list(overrides)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"bad override '{item}': expected key=value (e.g. data=kuairand seed=3)")
        if is_hydra_override(item):
            raise ConfigError(f"override '{item}' is not accepted: the only Hydra overrides are "
                              "hydra/launcher=<name> and hydra.launcher.<key>=<value>, on mfh ablate and "
                              "mfh reproduce (+hydra.launcher.<key>=<value> adds a key)")
    # Inside a running Hydra app (a launcher job) Hydra is initialised already: set it aside, then restore it.
    outer = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base=None, config_dir=str(CONF_DIR)):
            cfg = hydra_compose(config_name=config_name, overrides=overrides)
        cfg = resolved(cfg)
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        _reraise_interrupt(error)
        message = " ".join(str(error).split()).split(" Config search path")[0]
        raise ConfigError(f"bad config override: {message}") from None
    except Exception as error:  # e.g. Hydra's own UnboundLocalError when the signal lands in its file reading
        _reraise_interrupt(error)
        raise
    finally:
        restore_gh_from_backup(outer)
    check_config(cfg)
    return cfg


def resolved(cfg: DictConfig) -> DictConfig:
    """`cfg` with every interpolation resolved, struct mode kept. Rebuilt from its resolved values rather than
    resolved in place: OmegaConf.resolve cannot put a list (the `facet_trees` resolver's) where a string was."""
    values = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    OmegaConf.set_struct(values, OmegaConf.is_struct(cfg))
    return values


def _reraise_interrupt(error: BaseException) -> None:
    """Raise the Interrupted that Hydra wrapped, if any: OmegaConf turns an exception raised anywhere inside its
    node code, a signal handler's included, into its own, and Hydra then into an empty composition error; a
    Ctrl-C during composition must still stop the command as an interrupt, not read as a bad override."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, Interrupted):
            raise cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__


def is_hydra_override(item: str) -> bool:
    """An override of Hydra's own config (`hydra.x=`, `hydra/x=`, any `+`/`~` prefix) rather than of a run's.

    A run's config never holds Hydra's: `mfh ablate` takes its launcher overrides out before composing
    (studies/launch.py is_launcher_override), so any that reach compose are refused rather than ignored."""
    return item.lstrip("+~").startswith(("hydra.", "hydra/"))


def resolved_threads(threads: int | None) -> int:
    """The torch thread count a run uses: trainer.threads, else all available cores shared by this machine's
    ranks."""
    if threads:
        return int(threads)
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("WORLD_SIZE") or 1)
    return max(1, available_cores() // local_ranks)


def to_container(cfg: DictConfig) -> dict:
    """A plain, resolved dict of a config."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def config_hash(cfg: DictConfig, length: int = 12) -> str:
    """A short stable hash of everything in the config that affects results (the run id), threads resolved."""
    container = to_container(cfg)
    container["trainer"]["threads"] = resolved_threads(container["trainer"].get("threads"))
    if container["trainer"].get("kernels") == "fused":
        container["trainer"]["kernels"] = f"fused-{FUSED_KERNELS_VERSION}"
    for dotted in EXECUTION_ONLY_KEYS:
        _pop(container, dotted)
    for dotted, legacy in LEGACY_VALUES.items():
        _pop(container, dotted, only=(legacy,))
    text = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _pop(container: dict, dotted: str, only: tuple = ()) -> None:
    """Remove the key `dotted` (a.b.c) from a nested dict where present (and, given `only` = (value,), where it
    holds that value)."""
    node = container
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.get(key, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict) and leaf in node and (not only or node[leaf] == only[0]):
        del node[leaf]


def recipe_of(cfg: DictConfig) -> str:
    """Which training recipe (conf/recipe/<name>.yaml) made a run: the name of the recipe whose every value the
    config holds (the default recipe first), else 'custom (key=value, …)' naming where it departs from the default.
    Tables and study.json say it, so that every table names the training behind it."""
    recipes = {path.stem: _flat(OmegaConf.to_container(OmegaConf.load(path)))
               for path in sorted((CONF_DIR / "recipe").glob("*.yaml"))}
    default = default_recipe()
    values = to_container(cfg)

    def value_of(dotted: str) -> object:
        node = values
        for key in dotted.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        return node

    for name in sorted(recipes, key=lambda name: name != default):
        if all(value_of(key) == value for key, value in recipes[name].items()):
            return name
    departures = [f"{key}={value_of(key)}" for key, value in recipes[default].items() if value_of(key) != value]
    return f"custom ({default} but {', '.join(departures)})"


def default_recipe() -> str:
    """The recipe conf/config.yaml composes by default."""
    defaults = OmegaConf.load(CONF_DIR / "config.yaml").defaults
    return next(str(entry["recipe"]) for entry in defaults if isinstance(entry, DictConfig) and "recipe" in entry)


def _flat(values: dict, prefix: str = "") -> dict[str, object]:
    """{'a.b': value} for every leaf of a nested dict."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def results_dir(option: Path | None = None) -> Path:
    """`--results-dir`, else `MFH_RESULTS_DIR`, else ./results."""
    return Path(option or os.environ.get("MFH_RESULTS_DIR") or "results")


def data_dir(option: Path | None = None, configured: str | None = None) -> Path:
    """`--data-dir`, else `data.dir` in the config, else `MFH_DATA_DIR`, else ./data."""
    return Path(option or configured or os.environ.get("MFH_DATA_DIR") or "data")
