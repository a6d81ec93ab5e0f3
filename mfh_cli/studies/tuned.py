"""The tuned overrides `mfh tune` leaves (results/tuning/<study>/<dataset>/best.yaml) and `--tuned`, which trains
each variant with them: read without torch or Optuna, so that a sweep and its cluster jobs take them from here and
`tune.py` (the search) is imported by `mfh tune` alone."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import yaml

from mfh_cli.config import compose
from mfh_cli.errors import MfhError
from mfh_cli.studies.spec import Study

TUNING = "tuning"  # results/tuning/<study>/<dataset>/best.yaml; results/tuning/trials/<key>.journal
BEST = "best.yaml"


def best_path(results_dir: Path, study: str, dataset: str) -> Path:
    """results/tuning/<study>/<dataset>/best.yaml."""
    return Path(results_dir) / TUNING / study / dataset / BEST


def read_best(path: Path) -> dict | None:
    """best.yaml's content; None when there is none. A damaged file is an MfhError naming it."""
    if not path.is_file():
        return None
    try:
        best = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise MfhError(f"{path}: does not read back ({error}); delete it and rerun mfh tune") from None
    if not isinstance(best, dict) or not {"study", "dataset", "settings", "variants"} <= set(best):
        raise MfhError(f"{path}: not a best.yaml written by mfh tune (study, dataset, settings, variants)")
    return best


def apply_tuning(studies: Sequence[Study], overrides: Sequence[str], results_dir: Path) -> list[Study]:
    """The studies with `mfh tune`'s best overrides per variant and grid (`--tuned`), read from best.yaml; a study
    without them (or with a variant missing) is one MfhError line naming the `mfh tune` command to run."""
    tuned, missing = [], []
    for study in studies:
        dataset = str(compose([*study.overrides, *overrides]).data.name)
        path = best_path(results_dir, study.name, dataset)
        best = read_best(path)
        absent = [f"{variant} ({grid})" for variant in study.variants for grid in study.tasks
                  if not ((best or {}).get("variants", {}).get(variant) or {}).get(grid)]
        if best is None or absent:
            missing.append((study, path, absent if best is not None else []))
            continue
        settings = best["settings"]
        if list(settings.get("overrides") or []) != list(overrides):
            print(f"note: {path} was tuned with overrides [{' '.join(settings.get('overrides') or [])}], this "
                  f"sweep runs with [{' '.join(overrides)}]", file=sys.stderr)
        tuned.append(replace(study, tuned={
            "file": str(path.relative_to(results_dir)) if path.is_relative_to(results_dir) else str(path),
            "trials": settings["trials"], "space": list(settings["space"]), "sampler": settings["sampler"],
            "pruner": settings["pruner"], "objective": settings["objective"],
            "variants": {variant: {grid: best["variants"][variant][grid] for grid in study.tasks}
                         for variant in study.variants}}))
    if missing:
        names = list(dict.fromkeys((study.sweep or {}).get("study", study.name) for study, _, _ in missing))
        command = " && ".join(shlex.join(["mfh", "tune", "--study", name, *overrides]) for name in names)
        study, path, absent = missing[0]
        what = f"lacks {', '.join(absent)}" if absent else "does not exist"
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MfhError(f"--tuned: no tuned overrides for study '{study.name}': {path} {what}{more}; run `{command}` "
                       "first")
    return tuned
