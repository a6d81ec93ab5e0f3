"""Expand a study into runs: variants × task grids × seeds, each a composed config with its run id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from omegaconf import DictConfig

from mfh_cli.config import compose, config_hash, resolved_threads
from mfh_cli.engine.placement import resolve_placement
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
    return runs
