"""The task-grid registry: gAUC and log loss against independent computations, and a metric added through the
registry alone reaching runs.csv and the report."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from sklearn.metrics import log_loss

from mfh_cli.report import run_report
from mfh_cli.studies.execute import ablate
from mfh_cli.tasks import (PRIMARY, REGISTRY, Metric, MetricValue, gauc, gauc_unweighted, logloss, metrics_of,
                           register, shown_metrics, unregister)
from tests.reference_metrics import per_user_gauc

TINY = ["data.rows=2000", "trainer=smoke", "trainer.progress=false"]


def test_gauc_matches_a_per_user_loop_with_ties_and_single_class_users():
    generator = np.random.default_rng(5)
    users = generator.integers(0, 300, 6000)
    labels = (generator.random(6000) < 0.2 + 0.5 * (users % 3 == 0)).astype(np.float32)
    scores = np.round(generator.normal(size=6000) + labels, 1).astype(np.float32)  # many ties within users
    weighted, unweighted, used, skipped = per_user_gauc(scores, labels, users)
    result = gauc(scores, labels, users)
    assert skipped > 0  # some users have one class only in so few rows
    assert result.facts == {"users": used, "users_skipped": skipped}
    assert abs(result.value - weighted) < 1e-12
    assert abs(gauc_unweighted(scores, labels, users).value - unweighted) < 1e-12


def test_gauc_without_a_two_class_user_says_why():
    result = gauc(np.array([0.1, 0.2, 0.3]), np.array([1.0, 1.0, 0.0]), np.array([1, 1, 2]))
    assert result.value is None and "no user with both classes" in result.reason
    assert result.facts == {"users": 0, "users_skipped": 2}


def test_logloss_matches_sklearn_and_stays_finite_for_extreme_logits():
    generator = np.random.default_rng(0)
    logits = generator.normal(scale=3, size=5000).astype(np.float32)
    labels = (generator.random(5000) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    reference = log_loss(labels, 1 / (1 + np.exp(-logits.astype(np.float64))))
    assert abs(logloss(logits, labels, np.zeros(5000)).value - reference) < 1e-9
    # σ(±200) rounds to 0 or 1: a naive log(σ) is -inf; the stable form gives the exact losses 200 and 0.
    extreme = logloss(np.array([200.0, -200.0]), np.array([0.0, 0.0]), np.zeros(2))
    assert extreme.value == pytest.approx(100.0)


def test_each_kind_has_its_primary_metric_first_and_a_choice_changes_only_its_kind():
    assert [entry.name for entry in metrics_of("binary")][0] == "auc"
    assert [entry.name for entry in metrics_of("regression")] == ["mse"]
    assert shown_metrics(None) == PRIMARY
    assert shown_metrics("gauc") == {"binary": "gauc", "regression": "mse"}
    with pytest.raises(ValueError, match="kind must be one of"):
        Metric("bad", "ordinal", lower_is_better=True, scale="log", compute=logloss)


def _mean_logit(predictions: np.ndarray, labels: np.ndarray, users: np.ndarray) -> MetricValue:
    return MetricValue(float(np.mean(predictions, dtype=np.float64)))


@pytest.fixture
def mean_logit():
    """A toy metric, registered in this process only (studies run in-process below, so the engine sees it)."""
    register(Metric("mean_logit", "binary", lower_is_better=False, scale="identity", compute=_mean_logit,
                    label="mean logit"))
    yield REGISTRY["mean_logit"]
    unregister("mean_logit")


def test_a_metric_added_through_the_registry_reaches_runs_csv_and_the_report(mean_logit, tmp_path: Path):
    outcome, = ablate(["hierarchical"], seeds=2, overrides=TINY, results_dir=tmp_path, quiet=True)
    runs = pd.read_csv(outcome.directory / "runs.csv")
    toy = runs[runs["metric"] == "mean_logit"]
    binary_tasks = {"finish", "skip"}
    assert set(toy["task"]) == binary_tasks and toy["value"].notna().all()
    assert len(toy) == len(runs[runs["metric"] == "auc"])  # one row per binary cell, the oracle's too

    output = io.StringIO()
    run_report(tmp_path, study="hierarchical", fmt="csv", metric="mean_logit", paper=False,
               console=Console(file=output, width=200))
    tidy = pd.read_csv(io.StringIO(output.getvalue()))
    assert set(tidy["metric"]) == {"mean_logit", "mse"}  # cmpl stays in MSE, its kind's primary
    shown = tidy[(tidy["metric"] == "mean_logit") & (tidy["variant"] == "flat")]
    assert set(shown["task"]) == binary_tasks
    assert shown["verdict"].isin(["better", "worse", "no difference shown"]).all()  # no paper value to compare
    test_rows = toy[(toy["split"] == "test") & (toy["variant"] == "hmtl") & (toy["group"] == "new")
                    & (toy["task"] == "finish")]
    cell = tidy[(tidy["variant"] == "hmtl") & (tidy["group"] == "new") & (tidy["task"] == "finish")]
    assert cell["mean"].iloc[0] == pytest.approx(test_rows["value"].mean())
    markdown = (tmp_path / "tables" / "hierarchical_mean_logit.md").read_text()
    assert "finish mean logit" in markdown and "cmpl MSE" in markdown
    assert (tmp_path / "tables" / "hierarchical_mean_logit.csv").is_file()
    assert not (tmp_path / "tables" / "hierarchical.csv").exists()  # the default tables are not overwritten
