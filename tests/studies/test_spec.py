"""Study files: seed offsets pair an independent seed stream with the others, expected verdicts name known
variants, a sweeping study expands into one study per setting, and only main-job studies run by default."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mfh_cli.config import compose
from mfh_cli.errors import ConfigError
from mfh_cli.studies.execute import ablate
from mfh_cli.studies.plan import plan
from mfh_cli.studies.spec import Study, load_expanded, load_study, study_names

TINY = ["data.rows=4000", "trainer=smoke", "trainer.progress=false"]


def test_seed_offset_trains_another_seed_recorded_as_its_pair():
    study = load_study("controls")
    runs = {(run.variant, run.seed): run for run in plan(study, [0, 1], TINY)}
    reseeded, reference = runs[("without_context_reseeded", 1)], runs[("without_context", 1)]
    assert compose(reseeded.overrides).seed == 1001 and compose(reference.overrides).seed == 1
    assert reseeded.run_id != reference.run_id
    # Apart from the seed the two variants are the same configuration.
    assert compose(reseeded.overrides).model == compose(reference.overrides).model
    assert list(compose(reseeded.overrides).data.hidden_inputs) == ["context"]


def test_controls_study_runs_and_records_pairs_by_seed(tmp_path: Path):
    outcome, = ablate(["controls"], seeds=2, overrides=TINY, results_dir=tmp_path, quiet=True)
    runs = pd.read_csv(outcome.directory / "runs.csv")
    reseeded = runs[runs["variant"] == "without_context_reseeded"]
    assert set(reseeded["seed"]) == {0, 1}
    assert set(reseeded["run_id"]).isdisjoint(runs.loc[runs["variant"] == "without_context", "run_id"])


def test_expected_and_offsets_must_name_variants(tmp_path: Path, monkeypatch):
    from mfh_cli.studies import spec

    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "broken.yaml").write_text(
        "title: t\ntasks: play\nreference: a\nvariants: {a: [model=mfh], b: [model=flat]}\n"
        "expected: {c: better}\n")
    monkeypatch.setattr(spec, "CONF_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"broken.yaml: seed_offsets / expected name unknown variant\(s\) c"):
        load_study("broken")


def test_a_typo_in_a_study_file_is_an_error_not_a_study_that_joins_the_main_job(tmp_path: Path, monkeypatch):
    from mfh_cli.studies import spec

    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "typo.yaml").write_text(
        "title: t\ntasks: play\nreference: a\nvariants: {a: [model=mfh], b: [model=flat]}\nin_main_jobs: false\n")
    monkeypatch.setattr(spec, "CONF_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown key 'in_main_jobs' \(a study file takes "):
        load_study("typo")


def test_a_seed_in_a_study_variant_is_refused_naming_seeds_and_seed_offsets(tmp_path: Path, monkeypatch):
    from mfh_cli.studies import spec

    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "seeded.yaml").write_text(
        "title: t\ntasks: play\nreference: a\nvariants: {a: [model=mfh], b: [model=flat, seed=5]}\n")
    monkeypatch.setattr(spec, "CONF_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"seeded.yaml: b: a seed= override is not accepted.*--seeds.*seed_offsets"):
        load_study("seeded")


def test_sweep_expands_into_one_study_per_setting():
    mechanism = load_study("mechanism")
    expanded = mechanism.expand()
    assert [study.name for study in expanded] == [f"mechanism_{setting}" for setting in mechanism.settings]
    first = expanded[0]
    assert first.overrides[-2:] == mechanism.settings["deviation_0"]
    assert first.sweep == {"study": "mechanism", "setting": "deviation_0",
                           "overrides": mechanism.settings["deviation_0"], "figure": mechanism.figure}
    assert load_expanded("mechanism_deviation_2_sparse").overrides == mechanism.settings["deviation_2_sparse"]
    cfg = compose(plan(first, [0], TINY)[0].overrides)
    assert cfg.data.group_deviation == 0
    assert Study(name="x", title="x", tasks=["play"], variants={"a": []}, reference="a").expand()[0].name == "x"


def test_main_job_leaves_optional_studies_out():
    assert "mechanism" in study_names() and "mechanism" not in study_names(main_job=True)
    assert study_names(main_job=True)[0] == "controls"
