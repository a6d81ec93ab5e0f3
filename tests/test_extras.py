"""Optional extras stay optional: the base install neither requires nor imports them, a missing one is one line
naming the install that brings it (checked with the extra really absent: a subprocess whose imports of it fail),
and installing them keeps torch at its pin."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import metadata, requires, version
from pathlib import Path

import pytest

EXTRA_MODULES = ("mlflow", "tensorboard", "ray", "submitit", "optuna", "hydra_plugins.hydra_ray_launcher",
                 "hydra_plugins.hydra_submitit_launcher")
EXTRA_DISTRIBUTIONS = ("mlflow", "tensorboard", "ray", "submitit", "optuna", "hydra-ray-launcher",
                       "hydra-submitit-launcher")
TINY = ["data.rows=4000", "trainer=smoke", "trainer.progress=false"]
# Runs `mfh ARGS` (or, with no ARGS, imports every mfh_cli module) with the modules named in argv[1] absent: their
# imports fail as an uninstalled package's do.
WITHOUT = """
import sys
blocked = tuple(sys.argv[1].split(","))

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name in blocked or name.startswith(tuple(module + "." for module in blocked)):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Absent())
if len(sys.argv) > 2:
    from mfh_cli.cli import main
    sys.argv = ["mfh", *sys.argv[2:]]
    main()
else:
    import importlib, pkgutil, mfh_cli
    for module in pkgutil.walk_packages(mfh_cli.__path__, "mfh_cli."):
        if module.name != "mfh_cli.__main__":  # it runs the CLI
            importlib.import_module(module.name)
    print(sorted(name for name in sys.modules if name.split(".")[0] in ("mlflow", "tensorboard", "ray", "optuna")))
"""


def run_without(modules: tuple[str, ...], args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "MFH_RESULTS_DIR": str(tmp_path / "results")}
    return subprocess.run([sys.executable, "-c", WITHOUT, ",".join(modules), *args], capture_output=True,
                          text=True, env=environment, cwd=tmp_path, timeout=300)


def test_the_base_install_requires_no_extra():
    base = [line for line in requires("mfh-cli") if "extra ==" not in line]
    names = {re.split(r"[ ;<>=!~\[]", line, maxsplit=1)[0].lower() for line in base}
    assert names.isdisjoint(EXTRA_DISTRIBUTIONS)
    assert {"tracking", "cluster", "tune"} <= set(metadata("mfh-cli").get_all("Provides-Extra"))


def test_every_module_imports_without_the_extras(tmp_path: Path):
    result = run_without(EXTRA_MODULES, [], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_extras_keep_torch_at_its_pin():
    pin, = (line for line in requires("mfh-cli") if line.startswith("torch") and "extra ==" not in line)
    assert version("torch").split("+")[0] == pin.split("==")[1]


@pytest.mark.parametrize(("missing", "args", "install"), [
    ("mlflow", ["train", *TINY, "tracking=mlflow"], "pip install 'mfh-cli[tracking]'"),
    ("ray", ["ablate", "--study", "hierarchical", "--seeds", "1", *TINY, "hydra/launcher=ray"],
     "pip install 'mfh-cli[cluster]'"),
    ("optuna", ["tune", "--study", "hierarchical", "--trials", "1", *TINY], "pip install 'mfh-cli[tune]'"),
])
def test_a_missing_extra_is_one_line_naming_its_install(tmp_path: Path, missing: str, args: list[str],
                                                       install: str):
    result = run_without((missing,), args, tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    # the module itself, or (where its launcher plugin is not installed either: CI leaves Ray out) the plugin
    assert "optional module '" in result.stderr and missing in result.stderr
    assert result.stderr.rstrip().endswith(install)
    runs = tmp_path / "results" / "runs"
    assert not runs.exists() or not any(runs.glob("[!.]*")), "nothing was trained"
