"""Expand a study into runs: variants × task grids × seeds, each a composed config with its run id."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from omegaconf import DictConfig

from mfh_cli.config import compose, config_hash, resolved_threads
from mfh_cli.engine.placement import resolve_placement
from mfh_cli.errors import ConfigError
from mfh_cli.studies.spec import Study


@dataclass(frozen=True)
class PlannedRun:
    """One run of a study: which variant, grid and seed, the overrides that make it, its run id, and the torch
    threads and precision it trains with on this machine."""

    study: str
    variant: str
    grid: str
    seed: int
    overrides: tuple[str, ...]
    run_id: str
    dataset: str
    threads: int
    precision: str

    def config(self) -> DictConfig:
        return compose(self.overrides)


# Every run of a sweep uses one thread, so its numbers do not depend on --jobs or the launcher; it is part of the
# overrides (and so of the planned run id) unless the user's own trainer.threads override wins.
SWEEP_THREADS = 1


def run_overrides(study: Study, variant: str, grid: str, seed: int, user: Sequence[str], dataset: str = ""
                  ) -> list[str]:
    """The sweep's thread count, the run's names for a tracker (one experiment per study; not part of the run id),
    study-wide overrides, those of the study for `dataset`, the user's, the variant's, its tuned ones (`--tuned`:
    `mfh tune`'s best for this variant and grid), grid and seed (later ones win); a variant with a seed offset
    trains seed `seed + offset` (recorded as seed `seed`, its pair)."""
    tuned = (study.tuned or {}).get("variants", {}).get(variant, {}).get(grid, {}).get("overrides", [])
    return [f"trainer.threads={SWEEP_THREADS}", f"tracking.experiment={study.name}",
            f"tracking.run_name={variant}-seed{seed}-{grid}", *study.overrides,
            *study.data_overrides.get(dataset, []), *user, *study.variants[variant], *tuned, f"tasks={grid}",
            f"seed={seed + study.seed_offsets.get(variant, 0)}"]


def parse_seeds(text: str) -> list[int]:
    """`--seeds`: a count (`5`: seeds 0-4), a range (`100-104`) or a list (`0,3,7`); a ConfigError line otherwise."""
    text = text.strip()
    try:
        if re.fullmatch(r"\d+", text):
            count = int(text)
            if count < 1:
                raise ValueError
            return list(range(count))
        match = re.fullmatch(r"(\d+)-(\d+)", text)
        if match:
            first, last = int(match[1]), int(match[2])
            if last < first:
                raise ValueError
            return list(range(first, last + 1))
        seeds = [int(item) for item in text.split(",")]
    except ValueError:
        seeds = []
    if len(seeds) < 1 or len(set(seeds)) != len(seeds) or any(seed < 0 for seed in seeds):
        raise ConfigError(f"--seeds '{text}': give a count (5), a range (100-104) or a list of distinct seeds "
                          f"(0,3,7)")
    return seeds


def refuse_seed_overrides(overrides: Sequence[str], where: str) -> None:
    """A `seed=` override would be dropped by a study (every run's seed is the study's): refused in one line."""
    for item in overrides:
        if item.lstrip("+~").split("=", 1)[0] == "seed":
            raise ConfigError(f"{where}: '{item}' is not accepted: a study trains its own seeds; choose them with "
                              f"--seeds (a count, a range 100-104 or a list 0,3,7), or give a variant an independent "
                              f"stream with the study key seed_offsets")


def study_dataset(study: Study, user: Sequence[str]) -> str:
    """The dataset the study's runs read, for its per-dataset overrides (`data_overrides`); "" when it has none."""
    return str(compose([*study.overrides, *user]).data.name) if study.data_overrides else ""


def plan(study: Study, seeds: Sequence[int], user: Sequence[str] = ()) -> list[PlannedRun]:
    """Every run of `study`, in a stable order (grid, seed, variant) so a sweep fills in seeds evenly; a device or
    precision this machine cannot honour is refused here, before any run is trained."""
    runs = []
    dataset = study_dataset(study, user)
    for grid in study.tasks:
        for seed in seeds:
            for variant in study.variants:
                overrides = tuple(run_overrides(study, variant, grid, seed, user, dataset))
                cfg, _ = resolve_placement(compose(overrides))  # as engine/run.py train hashes it
                runs.append(PlannedRun(study.name, variant, grid, seed, overrides, config_hash(cfg),
                                       str(cfg.data.name), resolved_threads(cfg.trainer.threads),
                                       str(cfg.trainer.precision)))
    _refuse_coinciding_runs(study, runs)
    return runs


def _refuse_coinciding_runs(study: Study, runs: list[PlannedRun]) -> None:
    """Two planned runs of one study that are the same run (a variant's offset seed meeting another variant's seed,
    as the controls' seeds + 1000 would with seeds up to 1000) would pair a run with itself: refused."""
    seen: dict[str, PlannedRun] = {}
    for run in runs:
        other = seen.setdefault(run.run_id, run)
        if other is not run:
            raise ConfigError(f"study {study.name}: {run.variant} seed {run.seed} and {other.variant} seed "
                              f"{other.seed} would be the same run ({run.run_id}: the study's seed_offsets meet "
                              f"its seeds); choose seeds that stay apart from the offset ones")


def runnable_studies(studies: list[Study], overrides: Sequence[str]) -> list[Study]:
    """The studies that mean something on the dataset the overrides select: a study bound to another dataset
    (`only_on`, e.g. the controls on the simulator) is left out with one stderr line, or refused when it is the
    only one asked for."""
    datasets = {study.name: str(compose([*study.overrides, *overrides]).data.name) for study in studies}
    kept = [study for study in studies if study.only_on in (None, datasets[study.name])]
    for study in studies:
        if study not in kept:
            message = (f"study '{study.name}' runs on data={study.only_on} only (it relies on that dataset's "
                       f"inputs), not data={datasets[study.name]}")
            if not kept:
                raise ConfigError(message)
            print(f"skipped: {message}", file=sys.stderr)
    return kept
