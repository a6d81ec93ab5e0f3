"""Every shipped config file composes; overrides land; the run id ignores execution-only keys."""

from __future__ import annotations

import pytest

from mfh_cli.config import CONF_DIR, compose, config_hash
from mfh_cli.errors import ConfigError

GROUPS = ["data", "tasks", "model", "size", "trainer"]


@pytest.mark.parametrize("group, option", [(group, path.stem) for group in GROUPS
                                           for path in sorted((CONF_DIR / group).glob("*.yaml"))])
def test_every_config_file_composes(group: str, option: str):
    cfg = compose([f"{group}={option}"])
    assert cfg[group] is not None
    if group == "model":
        assert cfg.model.name == option


def test_overrides_land_and_later_ones_win():
    cfg = compose(["data.rows=1234", "trainer.lr=0.5", "seed=3", "seed=4"])
    assert (cfg.data.rows, cfg.trainer.lr, cfg.seed) == (1234, 0.5, 4)


def test_run_id_ignores_threads_and_progress_but_not_results_keys():
    base = config_hash(compose([]))
    assert config_hash(compose(["trainer.threads=7", "trainer.progress=false"])) == base
    assert config_hash(compose(["seed=1"])) != base
    assert config_hash(compose(["model=hmtl"])) != base


def test_unknown_key_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="trainer.nosuch"):
        compose(["trainer.nosuch=1"])
