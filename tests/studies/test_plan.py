"""Planned run ids are the ids a sweep writes, and they hold the sweep's thread count and the precision used."""

from __future__ import annotations

import json
from pathlib import Path

from mfh_cli.config import compose, config_hash
from mfh_cli.engine.run import train
from mfh_cli.studies.execute import ablate
from mfh_cli.studies.plan import SWEEP_THREADS, plan
from mfh_cli.studies.spec import load_study

TINY = ["data.rows=4000", "trainer=smoke", "trainer.progress=false"]


def test_planned_run_ids_are_the_ids_the_sweep_writes(tmp_path: Path):
    overrides = [*TINY, "trainer.precision=auto"]  # resolved to this machine's choice in the plan and the run
    planned = plan(load_study("hierarchical"), [0], overrides)
    ablate(["hierarchical"], seeds=1, jobs=1, overrides=overrides, results_dir=tmp_path, quiet=True)
    for run in planned:
        metrics = json.loads((tmp_path / "runs" / run.run_id / "metrics.json").read_text())
        assert metrics["run_id"] == run.run_id and metrics["threads"] == run.threads == SWEEP_THREADS
        assert metrics["precision"] == run.precision
    written = sorted(p.name for p in (tmp_path / "runs").iterdir() if not p.name.startswith("."))
    assert written == sorted(run.run_id for run in planned)


def test_a_run_trained_with_other_threads_is_not_reused_by_a_sweep(tmp_path: Path):
    hmtl, = [run for run in plan(load_study("hierarchical"), [0], TINY) if run.variant == "hmtl"]
    other_threads = train(compose([*hmtl.overrides, "trainer.threads=2"]), results_dir=tmp_path, quiet=True)
    assert other_threads.run_dir.name != hmtl.run_id
    stamp = (other_threads.run_dir / "metrics.json").stat().st_mtime_ns
    outcome, = ablate(["hierarchical"], seeds=1, jobs=1, overrides=TINY, results_dir=tmp_path, quiet=True)
    swept = json.loads((tmp_path / "runs" / hmtl.run_id / "metrics.json").read_text())
    assert swept["threads"] == 1 and config_hash(hmtl.config()) == hmtl.run_id
    assert (other_threads.run_dir / "metrics.json").stat().st_mtime_ns == stamp
    runs_csv = (outcome.directory / "runs.csv").read_text()
    assert hmtl.run_id in runs_csv and other_threads.run_dir.name not in runs_csv


def test_a_studys_dataset_overrides_apply_on_that_dataset_only():
    study = load_study("three_facets")
    on_simulator, on_kuairand = plan(study, [0], TINY), plan(study, [0], ["data=kuairand"])
    assert all("+data.scenarios=3" in run.overrides for run in on_simulator)
    assert not any("+data.scenarios=3" in run.overrides for run in on_kuairand)
    assert {run.variant: list(run.config().model.trees) for run in on_simulator} == {
        "mfh": ["behaviour/group+scenario", "group/behaviour+scenario", "scenario/behaviour+group"],
        "mfh_two_facets": ["behaviour/group", "group/behaviour"], "flat": ["behaviour+group+scenario"]}
