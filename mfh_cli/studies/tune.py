"""`mfh tune`: per variant (and task grid) of a study, search trainer.lr and trainer.weight_decay (and the keys the
study's `tune:` section names) on the validation split; write the best overrides per variant to
`results/tuning/<study>/<dataset>/best.yaml`, which `mfh ablate --tuned` and `mfh reproduce --tuned` train with.

Optuna is used directly, not through Hydra's Optuna sweeper: the search runs once per variant (a study of its own,
each with its own budget, sampler seed and record), the median pruner needs the validation loss after every epoch
from inside our training loop (`Trainer.fit(after_epoch=...)`), which a sweeper that sees only a job's final return
value cannot give, and trials must train on the train and validation rows alone, outside the run directories.

The test split never reaches the search: every trial trains on a dataset from which the test rows were removed
(`search_rows`), with the test-scoring history off, and its objective is the early-stopping criterion, the
validation loss at the best epoch. Trials write no run directory. Each search keeps its trials in an Optuna journal
`results/tuning/trials/<key>.journal`, keyed by the variant's resolved config and the search settings, so an
interrupted search resumes where it stopped and a variant shared by studies (mfh in Tables 1, 3, 4) is searched
once. The sampler is reseeded before every trial (seed + finished trials), so a resumed search draws what an
uninterrupted one would, and a larger --trials extends a smaller one trial for trial."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from omegaconf import DictConfig, OmegaConf

from mfh_cli import CONF_DIR
from mfh_cli.config import compose, config_hash
from mfh_cli.errors import ConfigError, Interrupted, MfhError, RunError
from mfh_cli.extras import require
from mfh_cli.files import write_text_atomically
from mfh_cli.studies.plan import run_overrides, runnable_studies, study_dataset
from mfh_cli.studies.pool import init_worker, stop_workers
from mfh_cli.studies.spec import Study, check_search_space, load_study
from mfh_cli.studies.tuned import TUNING, best_path, read_best

if TYPE_CHECKING:
    from mfh_cli.data import Dataset

JOURNALS = "trials"
# Every trial: no test-scoring history along training, no progress bar (a trial writes no run directory).
TRIAL_OVERRIDES = ("trainer.history=false", "trainer.progress=false")
OBJECTIVE = "validation loss at the best epoch (the early-stopping criterion), minimised; test rows never used"


@dataclass(frozen=True)
class TuningSettings:
    """What a search is: the budget, the space, the seeds of the trials' training and of the sampler, the pruner;
    best.yaml records it and a rerun with other settings searches again."""

    trials: int
    space: dict
    training_seed: int
    sampler: dict  # {"name": "TPESampler", "seed", "startup_trials"}
    pruner: dict  # {"name": "MedianPruner", "startup_trials", "first_epoch"}
    overrides: list  # the user's, as given to `mfh tune`

    def record(self) -> dict:
        """The settings as best.yaml holds them."""
        return {"objective": OBJECTIVE, **asdict(self)}


@dataclass(frozen=True)
class VariantSearch:
    """The search of one variant on one task grid: the trial's fixed overrides (the searched keys come after)."""

    study: str
    variant: str
    grid: str
    dataset: str
    overrides: tuple[str, ...]
    key: str  # names its journal: the resolved config without the searched values, and the search settings


@dataclass
class TuningOutcome:
    """One study's tuning: its best.yaml and what it holds."""

    study: Study
    dataset: str
    path: Path  # best.yaml
    best: dict  # best.yaml's content


def tuning_settings(study: Study, trials: int | None = None, sampler_seed: int | None = None,
                    overrides: Sequence[str] = ()) -> TuningSettings:
    """conf/tuning.yaml's settings, the study's `tune:` keys added to (or replacing ranges of) its space, and the
    command's --trials and --sampler-seed."""
    path = CONF_DIR / "tuning.yaml"
    defaults = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    check_search_space(defaults["space"], f"{path}: space")
    budget = int(trials if trials is not None else defaults["trials"])
    if budget < 1:
        raise ConfigError(f"--trials: at least 1 trial per variant (got {budget})")
    sampler = {"name": "TPESampler", "seed": int(defaults["sampler"]["seed"] if sampler_seed is None
                                                 else sampler_seed),
               "startup_trials": int(defaults["sampler"]["startup_trials"])}
    pruner = {"name": "MedianPruner", "startup_trials": int(defaults["pruner"]["startup_trials"]),
              "first_epoch": int(defaults["pruner"]["first_epoch"])}
    return TuningSettings(budget, {**defaults["space"], **study.tune}, int(defaults["training_seed"]), sampler,
                          pruner, list(overrides))


def plan_searches(study: Study, settings: TuningSettings) -> list[VariantSearch]:
    """One search per variant and task grid; a variant's seed offset does not apply (twins search alike). A search
    key that is not a config key is refused here, before any training."""
    from mfh_cli.engine.placement import resolve_placement

    searches = []
    unseeded = replace(study, seed_offsets={}, tuned=None)
    dataset = study_dataset(study, settings.overrides)
    for grid in study.tasks:
        for variant in study.variants:
            overrides = (*run_overrides(unseeded, variant, grid, settings.training_seed, settings.overrides,
                                       dataset),
                         *TRIAL_OVERRIDES)
            cfg, _ = resolve_placement(compose(overrides))  # as a trial trains it
            if not searches:
                for key, dimension in settings.space.items():
                    compose([*overrides, f"{key}={override_value(example_value(dimension))}"])
            identity = {"config": config_hash(cfg), **{k: v for k, v in settings.record().items() if k != "trials"}}
            key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
            searches.append(VariantSearch(study.name, variant, grid, str(cfg.data.name), overrides, key))
    return searches


def example_value(dimension: dict) -> object:
    """A value of a search dimension (its first choice or its min), to check that its key composes."""
    return dimension["choices"][0] if "choices" in dimension else dimension["min"]


def override_value(value: object) -> str:
    """A searched value as an override's right-hand side: floats to 4 significant digits (what the trial trains
    with and best.yaml holds), the rest as written."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def suggest(trial, space: dict) -> list[str]:
    """The trial's overrides, one per searched key, drawn by Optuna."""
    chosen = []
    for key, dimension in space.items():
        if "choices" in dimension:
            value = trial.suggest_categorical(key, dimension["choices"])
        elif dimension.get("int"):
            value = trial.suggest_int(key, int(dimension["min"]), int(dimension["max"]),
                                      log=bool(dimension.get("log")))
        else:
            drawn = trial.suggest_float(key, float(dimension["min"]), float(dimension["max"]),
                                        log=bool(dimension.get("log")))
            value = float(override_value(drawn))
        chosen.append(f"{key}={override_value(value)}")
    return chosen


def search_rows(dataset: Dataset) -> Dataset:
    """The train and validation rows of `dataset`: what a trial may see (the test rows are left out)."""
    from mfh_cli.data import SPLITS

    return dataset.rows(dataset.split != SPLITS.index("test"))


def train_trial(cfg: DictConfig, rows: Dataset, after_epoch: Callable[[int, float], None]) -> tuple[float, int]:
    """Train one trial's config on `rows` (no test rows; no run directory); returns the validation loss at the best
    epoch and that epoch. `after_epoch` sees each epoch's validation loss (the pruner's report)."""
    import torch

    from mfh_cli.config import resolved_threads
    from mfh_cli.engine.loop import build_trainer
    from mfh_cli.engine.placement import resolve_placement

    cfg, placement = resolve_placement(cfg)
    torch.set_num_threads(resolved_threads(cfg.trainer.threads))
    fit = build_trainer(cfg, rows, placement.device).fit(after_epoch)
    return fit.validation_losses[fit.best_epoch - 1], fit.best_epoch


def search_variant(search: VariantSearch, settings: TuningSettings, data_dir: Path | None, results_dir: Path,
                   quiet: bool = True, dataset: Dataset | None = None) -> dict:
    """Run the trials `search` still lacks (resuming its journal) and return its best.yaml record. `dataset`: the
    loaded dataset (default: loaded as a run loads it); only its train and validation rows are used."""
    optuna = require("optuna", "mfh tune", "tune")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    states = optuna.trial.TrialState
    journal = results_dir / TUNING / JOURNALS / f"{search.key}.journal"
    journal.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.create_study(storage=storage, study_name=search.key, direction="minimize", load_if_exists=True,
                                sampler=optuna.samplers.RandomSampler(seed=0))  # replaced before every trial
    rows = None
    while True:
        finished = finished_trials(study, states)
        if len(finished) >= settings.trials:
            return variant_record(search, finished[:settings.trials], states)
        # Reseeded per trial: what a trial draws depends on the finished trials only, so a resumed search draws
        # what an uninterrupted one would.
        study.sampler = optuna.samplers.TPESampler(seed=settings.sampler["seed"] + len(finished),
                                                   n_startup_trials=settings.sampler["startup_trials"])
        study.pruner = optuna.pruners.MedianPruner(n_startup_trials=settings.pruner["startup_trials"],
                                                   n_warmup_steps=settings.pruner["first_epoch"])
        if rows is None:
            rows = search_rows(dataset if dataset is not None else _load(search, data_dir, results_dir))
        trial = study.ask()
        chosen = suggest(trial, settings.space)
        trial.set_user_attr("overrides", chosen)
        started = time.perf_counter()

        def report(epoch: int, loss: float) -> None:
            trial.report(loss, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        try:
            value, best_epoch = train_trial(compose([*search.overrides, *chosen]), rows, report)
        except optuna.TrialPruned as pruned:
            study.tell(trial, state=states.PRUNED)
            outcome = str(pruned)
        except RunError as error:  # diverged (a learning rate too high): a failed trial, counted in the budget
            trial.set_user_attr("error", str(error))
            study.tell(trial, state=states.FAIL)
            outcome = f"failed: {error}"
        else:
            trial.set_user_attr("best_epoch", best_epoch)
            study.tell(trial, value)
            outcome = f"validation loss {value:.5f} (best epoch {best_epoch})"
        if not quiet:
            print(f"[{len(finished) + 1}/{settings.trials}] tune {search.study}: {search.variant} ({search.grid}) "
                  f"{' '.join(chosen)}: {outcome}  {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def finished_trials(study, states) -> list:
    """The search's finished trials (complete, pruned, failed) in the order they ran; an interrupted trial is not."""
    done = (states.COMPLETE, states.PRUNED, states.FAIL)
    return sorted(study.get_trials(deepcopy=False, states=done), key=lambda trial: trial.number)


def variant_record(search: VariantSearch, trials: list, states) -> dict:
    """best.yaml's record of one search: the best complete trial's overrides and value, and the budget spent."""
    complete = [trial for trial in trials if trial.state == states.COMPLETE]
    pruned = sum(trial.state == states.PRUNED for trial in trials)
    failed = [trial for trial in trials if trial.state == states.FAIL]
    if not complete:
        reason = failed[0].user_attrs.get("error", "") if failed else ""
        raise MfhError(f"mfh tune {search.study}: no trial of {search.variant} ({search.grid}) finished: "
                       f"{pruned} pruned, {len(failed)} failed{f' ({reason})' if reason else ''}; narrow the "
                       "search space (conf/tuning.yaml, the study's tune: section)")
    best = min(complete, key=lambda trial: (trial.value, trial.number))
    return {"overrides": list(best.user_attrs["overrides"]), "validation_loss": round(float(best.value), 6),
            "best_trial": best.number, "best_epoch": best.user_attrs.get("best_epoch"), "trials": len(trials),
            "complete": len(complete), "pruned": pruned, "failed": len(failed), "key": search.key}


def _load(search: VariantSearch, data_dir: Path | None, results_dir: Path) -> Dataset:
    from mfh_cli.engine.run import dataset_for

    return dataset_for(compose(search.overrides), data_dir, results_dir / "cache", quiet=True)


def write_best(path: Path, study: Study, dataset: str, settings: TuningSettings, variants: dict) -> dict:
    """Write best.yaml atomically (mfh_cli/files.py): the settings and every finished search's record."""
    best = {"study": study.name, "dataset": dataset, "settings": settings.record(),
            "variants": {variant: dict(sorted(grids.items())) for variant, grids in variants.items()}}
    try:
        write_text_atomically(path, f"# mfh tune --study {study.name}: the best overrides per variant and task grid "
                                    f"(mfh ablate --tuned trains with them)\n"
                                    + yaml.safe_dump(best, sort_keys=False, width=120))
    except OSError as error:
        raise MfhError(f"{path}: cannot write ({error.strerror or error})") from None
    return best


def tune(names: Sequence[str], trials: int | None = None, sampler_seed: int | None = None, jobs: int = 1,
         overrides: Sequence[str] = (), data_dir: Path | None = None, results_dir: Path = Path("results"),
         quiet: bool = False) -> list[TuningOutcome]:
    """Search every variant of the named studies (a search shared by studies runs once), `jobs` searches at a
    time; best.yaml is rewritten after each finished search, and a search already recorded there is skipped."""
    require("optuna", "mfh tune", "tune")
    studies = runnable_studies([expanded for name in names for expanded in load_study(name).expand()], overrides)
    state = []  # (study, settings, searches, path, records)
    for study in studies:
        settings = tuning_settings(study, trials, sampler_seed, overrides)
        searches = plan_searches(study, settings)
        path = best_path(results_dir, study.name, searches[0].dataset)
        existing = read_best(path)
        records: dict = {}
        if existing and existing["settings"] == settings.record():
            records = {variant: dict(grids) for variant, grids in existing["variants"].items()}
        state.append((study, settings, searches, path, records))
    pending: dict[str, tuple[VariantSearch, TuningSettings]] = {}
    for study, settings, searches, path, records in state:
        for search in searches:
            if (records.get(search.variant) or {}).get(search.grid, {}).get("key") != search.key:
                pending.setdefault(search.key, (search, settings))

    def finished(key: str, record: dict) -> None:
        for study, settings, searches, path, records in state:
            for search in searches:
                if search.key == key:
                    records.setdefault(search.variant, {})[search.grid] = record
            if any(search.key == key for search in searches):
                ordered = {variant: records[variant] for variant in study.variants if variant in records}
                write_best(path, study, searches[0].dataset, settings, ordered)

    try:
        run_searches(list(pending.items()), jobs, data_dir, results_dir, quiet, finished)
    except Interrupted as interrupted:
        raise Interrupted(interrupted.signum, "interrupted: finished trials and variants are kept, rerun the same "
                                              "mfh tune to resume") from None
    outcomes = []
    for study, settings, searches, path, records in state:
        ordered = {variant: records[variant] for variant in study.variants}
        outcomes.append(TuningOutcome(study, searches[0].dataset, path,
                                      write_best(path, study, searches[0].dataset, settings, ordered)))
    return outcomes


def run_searches(pending: list[tuple[str, tuple[VariantSearch, TuningSettings]]], jobs: int, data_dir: Path | None,
                 results_dir: Path, quiet: bool, finished: Callable[[str, dict], None]) -> None:
    """Run the pending searches in this process or in `jobs` worker processes (one thread each, as a sweep's runs);
    an interrupt ends the workers: an unfinished trial is left out of its journal's count and run again."""
    if jobs <= 1 or len(pending) <= 1:
        for key, (search, settings) in pending:
            finished(key, search_variant(search, settings, data_dir, results_dir, quiet))
        return
    with ProcessPoolExecutor(max_workers=min(jobs, len(pending)), mp_context=get_context("spawn"),
                             initializer=init_worker, initargs=(os.getpid(),)) as pool:
        try:
            futures = {pool.submit(search_variant, search, settings, data_dir, results_dir, quiet): key
                       for key, (search, settings) in pending}
            for future in as_completed(futures):
                finished(futures[future], future.result())
        except Interrupted:
            stop_workers(pool)
            raise


def tuning_lines(outcome: TuningOutcome) -> list[str]:
    """What `mfh tune` prints per study: each variant's best overrides, value and budget, then where they are."""
    lines = []
    for variant, grids in outcome.best["variants"].items():
        for grid, record in grids.items():
            lines.append(f"{outcome.study.name} ({outcome.dataset}, {grid}) {variant}: {' '.join(record['overrides'])}"
                         f"  validation loss {record['validation_loss']:.5f} (trial {record['best_trial']}); "
                         f"{record['trials']} trials: {record['complete']} complete, {record['pruned']} pruned, "
                         f"{record['failed']} failed")
    name = (outcome.study.sweep or {}).get("study", outcome.study.name)
    command = shlex.join(["mfh", "ablate", "--study", name, "--tuned", *outcome.best["settings"]["overrides"]])
    lines.append(f"best overrides: {outcome.path} (train with them: {command})")
    return lines
