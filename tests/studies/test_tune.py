"""`mfh tune` on tiny configs: only train and validation rows reach the search, a search resumes and extends
exactly, best.yaml records the budget, and `mfh ablate --tuned` trains with the overrides found."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from mfh_cli.config import compose
from mfh_cli.data import SPLITS, load_dataset
from mfh_cli.engine.loop import build_trainer
from mfh_cli.engine.run import evaluate
from mfh_cli.errors import ConfigError, RunError
from mfh_cli.studies.plan import plan
from mfh_cli.studies.spec import check_search_space, load_study
from mfh_cli.studies.tune import plan_searches, search_rows, search_variant, tuning_settings

pytest.importorskip("optuna", reason="the tune extra (pip install 'mfh-cli[tune]') is not installed")

# trainer=smoke turns the test-scoring history on: the search must turn it off.
TINY = ["data.rows=3000", "trainer=smoke", "trainer.max_epochs=3", "trainer.progress=false"]


@pytest.fixture(scope="module")
def simulated():
    return load_dataset(compose(TINY))


def poisoned(dataset):
    """The dataset with every test row's labels, dense inputs and oracle NaN: any use of a test row shows."""
    test = dataset.split == SPLITS.index("test")
    labels, dense, oracle = dataset.labels.clone(), dataset.dense.clone(), dataset.oracle.clone()
    labels[test], dense[test], oracle[test] = float("nan"), float("nan"), float("nan")
    return replace(dataset, labels=labels, dense=dense, oracle=oracle)


def hmtl_search(trials: int):
    study = load_study("hierarchical")
    settings = tuning_settings(study, trials=trials, overrides=TINY)
    search, = (search for search in plan_searches(study, settings) if search.variant == "hmtl")
    return search, settings


def test_only_validation_rows_reach_the_search(simulated, tmp_path: Path):
    bad = poisoned(simulated)
    # The poison is caught wherever a test row is scored: the real engine refuses its predictions.
    trainer = build_trainer(compose(TINY), bad)
    with pytest.raises(RunError, match="non-finite test predictions"):
        evaluate(trainer, trainer.splits["test"], "test")
    rows = search_rows(bad)
    assert (rows.split != SPLITS.index("test")).all()
    assert len(rows) == int((simulated.split != SPLITS.index("test")).sum())
    search, settings = hmtl_search(trials=2)
    clean = search_variant(search, settings, None, tmp_path / "clean", dataset=simulated)
    tuned = search_variant(search, settings, None, tmp_path / "poisoned", dataset=bad)
    assert tuned["failed"] == 0 and tuned["complete"] >= 1
    assert tuned == clean  # the test rows changed nothing: every trial's value is the same


def test_a_resumed_or_extended_search_draws_what_one_search_would(simulated, tmp_path: Path):
    search, settings = hmtl_search(trials=3)
    whole = search_variant(search, settings, None, tmp_path / "whole", dataset=simulated)
    first, short = hmtl_search(trials=1)
    search_variant(first, short, None, tmp_path / "resumed", dataset=simulated)
    extended = search_variant(search, settings, None, tmp_path / "resumed", dataset=simulated)
    assert extended == whole
    assert whole["trials"] == 3 == whole["complete"] + whole["pruned"] + whole["failed"]


def test_a_hopeless_trial_is_pruned_after_an_epoch_and_never_chosen(simulated, tmp_path: Path):
    import optuna

    study = replace(load_study("hierarchical"), tune={"trainer.lr": {"choices": [0.003, 1e-7]},
                                                      "trainer.weight_decay": {"choices": [0.0]}})
    settings = tuning_settings(study, trials=4, sampler_seed=1, overrides=TINY)
    search, = (search for search in plan_searches(study, settings) if search.variant == "hmtl")
    record = search_variant(search, settings, None, tmp_path, dataset=simulated)
    assert record["pruned"] == 1 and record["complete"] == 3
    assert record["overrides"] == ["trainer.lr=0.003", "trainer.weight_decay=0"]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / "tuning" / "trials" / f"{search.key}.journal")))
    trials = optuna.load_study(study_name=search.key, storage=storage).get_trials()
    pruned, = (trial for trial in trials if trial.state == optuna.trial.TrialState.PRUNED)
    assert pruned.params["trainer.lr"] == 1e-7
    # stopped by the median pruner at its first epoch (2), not trained to max_epochs (3)
    assert sorted(pruned.intermediate_values) == [1, 2]
    assert all(sorted(trial.intermediate_values) == [1, 2, 3] for trial in trials if trial is not pruned)


def test_search_space_rules_and_a_study_adding_a_key():
    check_search_space({"trainer.lr": {"min": 1e-4, "max": 1e-2, "log": True},
                        "size": {"choices": ["compact", "paper"]}}, "x")
    for bad, rule in [({"trainer.lr": {"min": 0.0, "max": 1.0, "log": True}}, "log scale needs min > 0"),
                      ({"trainer.lr": {"min": 1.0, "max": 0.1}}, "min must be below max"),
                      ({"trainer.lr": {"min": 1e-4}}, "expected min and max"),
                      ({"size": {"choices": []}}, "non-empty list"),
                      ({"trainer.lr": 0.1}, "expected")]:
        with pytest.raises(ConfigError, match=rule):
            check_search_space(bad, "study.yaml: tune")
    study = replace(load_study("hierarchical"), tune={"trainer.batch_size": {"choices": [128, 256]},
                                                      "trainer.lr": {"min": 1e-3, "max": 2e-3}})
    space = tuning_settings(study).space
    assert list(space) == ["trainer.lr", "trainer.weight_decay", "trainer.batch_size"]
    assert space["trainer.lr"] == {"min": 1e-3, "max": 2e-3}
    unknown = replace(study, tune={"trainer.no_such_key": {"min": 1, "max": 2}})
    with pytest.raises(ConfigError, match="no_such_key"):
        plan_searches(unknown, tuning_settings(unknown))


def test_tuned_without_best_yaml_names_the_mfh_tune_commands_to_run(tmp_path: Path):
    from mfh_cli.errors import MfhError
    from mfh_cli.reproduce import reproduce

    with pytest.raises(MfhError) as raised:
        reproduce(["data.rows=2000"], seeds=1, results_dir=tmp_path, quiet=True, tuned=True)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("--tuned: no tuned overrides for study 'controls'")
    assert "run `mfh tune --study controls data.rows=2000 && mfh tune --study multifaceted data.rows=2000" in message
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").glob("[!.]*")), "nothing was trained"


@pytest.mark.slow
def test_tune_then_ablate_tuned_trains_with_the_overrides_found(run_mfh, tmp_path: Path):
    results = tmp_path / "results"
    missing = run_mfh("ablate", "--study", "hierarchical", "--tuned", "--seeds", "1", *TINY)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "run `mfh tune --study hierarchical data.rows=3000" in missing.stderr
    assert not (results / "runs").exists() or not any((results / "runs").glob("[!.]*")), "nothing was trained"

    run_mfh("tune", "--study", "hierarchical", "--trials", "3", "--jobs", "1", "--quiet", *TINY, check=True)
    path = results / "tuning" / "hierarchical" / "synthetic" / "best.yaml"
    best = yaml.safe_load(path.read_text())
    assert best["settings"]["trials"] == 3 and best["settings"]["overrides"] == TINY
    assert best["settings"]["sampler"] == {"name": "TPESampler", "seed": 0, "startup_trials": 4}
    assert list(best["settings"]["space"]) == ["trainer.lr", "trainer.weight_decay"]
    assert list(best["variants"]) == ["hmtl", "flat"]
    found = {}
    for variant, grids in best["variants"].items():
        record = grids["play"]
        assert record["trials"] == 3 == record["complete"] + record["pruned"] + record["failed"]
        values = dict(item.split("=") for item in record["overrides"])
        assert set(values) == {"trainer.lr", "trainer.weight_decay"}
        assert 1e-4 <= float(values["trainer.lr"]) <= 1e-2 and 1e-8 <= float(values["trainer.weight_decay"]) <= 1e-3
        found[variant] = values
    journals = {journal: journal.stat().st_mtime_ns for journal in (results / "tuning" / "trials").glob("*.journal")}
    assert len(journals) == 2
    again = run_mfh("tune", "--study", "hierarchical", "--trials", "3", "--jobs", "1", *TINY, check=True)
    assert again.stderr == "" and "hmtl: trainer.lr=" in again.stdout  # finished variants are not searched again
    assert {journal: journal.stat().st_mtime_ns for journal in journals} == journals

    run_mfh("ablate", "--study", "hierarchical", "--tuned", "--seeds", "1", "--jobs", "1", "--quiet", *TINY, check=True)
    described = json.loads((results / "studies" / "hierarchical" / "synthetic" / "study.json").read_text())
    assert described["tuned"]["trials"] == 3
    untuned = {run.variant: run.run_id for run in plan(load_study("hierarchical"), [0], TINY)}
    for variant, values in found.items():
        assert described["tuned"]["variants"][variant]["play"]["overrides"] == best["variants"][variant]["play"][
            "overrides"]
        run_ids = {row.split(",")[-1] for row in
                   (results / "studies" / "hierarchical" / "synthetic" / "runs.csv").read_text().splitlines()
                   if row.split(",")[1] == variant}
        run_id, = run_ids
        assert run_id != untuned[variant]
        config = yaml.safe_load((results / "runs" / run_id / "config.yaml").read_text())
        assert config["trainer"]["lr"] == float(values["trainer.lr"])
        assert config["trainer"]["weight_decay"] == float(values["trainer.weight_decay"])
    report = run_mfh("report", "--study", "hierarchical", "--format", "markdown", check=True).stdout
    assert "(synthetic; tuned, 3 trials per variant)" in report
    assert "tuned: every variant trained with its own best trainer.lr, trainer.weight_decay" in report


def test_search_trials_never_score_test_rows_even_with_history_on(simulated):
    search, _ = hmtl_search(trials=1)
    cfg = compose(search.overrides)
    assert cfg.trainer.history is False  # trainer=smoke had it on
    trainer = build_trainer(cfg, search_rows(simulated))
    assert len(trainer.splits["test"]) == 0 and len(trainer.splits["validation"]) > 0
    assert torch.isfinite(torch.tensor(trainer.fit().validation_losses)).all()
