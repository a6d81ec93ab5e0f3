"""The task grid: its facets declared in mfh_cli/tasks.py alone and read from the tasks config; the metric
registry (gAUC and log loss against independent computations, a metric added through the registry alone reaching
runs.csv and the report)."""

from __future__ import annotations

import ast
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from rich.console import Console
from sklearn.metrics import log_loss

import mfh_cli
from mfh_cli import tasks
from mfh_cli.config import compose
from mfh_cli.errors import ConfigError
from mfh_cli.report import run_report
from mfh_cli.studies.execute import ablate
from mfh_cli.tasks import (PRIMARY, REGISTRY, Metric, MetricValue, gauc, gauc_unweighted, logloss, metrics_of,
                           register, shown_metrics, unregister)
from tests.reference_metrics import per_user_gauc

TINY = ["data.rows=2000", "trainer=smoke", "trainer.progress=false"]
PACKAGE = Path(mfh_cli.__file__).parent
GRID_VALUES = set(tasks.USER_GROUPS) | set(tasks.BEHAVIOURS)


def grid_literals(source: str, where: str) -> list[str]:
    """`where:line 'value'` for every string constant of Python `source` that is a user group or a behaviour."""
    return [f"{where}:{node.lineno} {node.value!r}" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in GRID_VALUES]


def package_literals(path: Path) -> list[str]:
    return grid_literals(path.read_text(), str(path.relative_to(PACKAGE.parent)))


def test_only_the_task_grid_module_names_the_user_groups_and_behaviours():
    assert package_literals(Path(tasks.__file__))  # the scan sees the one declaration
    outside = [hit for path in sorted(PACKAGE.rglob("*.py")) if path != Path(tasks.__file__)
               for hit in package_literals(path)]
    assert outside == [], "name them through mfh_cli/tasks.py: " + "; ".join(outside)


def test_the_scan_flags_only_string_constants_equal_to_a_grid_value():
    source = '"""New users skip less."""\nA = f"{1} new"\nB = ("new", "highlight", "cmpl")\nnew = 1\n'
    assert grid_literals(source, "probe.py") == ["probe.py:3 'new'", "probe.py:3 'cmpl'"]


def test_a_runs_facets_come_from_its_tasks_config_and_the_datasets_schema():
    cfg = compose(["tasks=interactive"])
    schema = SimpleNamespace(groups=["cold", "warm"])
    grid = tasks.run_facets(cfg.tasks, schema)
    assert grid == {"behaviour": ["like", "share", "comment", "follow"], "group": ["cold", "warm"]}
    assert tasks.task_names(grid)[:3] == ["like_cold", "like_warm", "share_cold"]


def test_a_further_facet_is_a_facet_entry_and_a_tasks_config_key(monkeypatch):
    monkeypatch.setitem(tasks.FACETS, "scenario", tasks.Facet("scenario", key="scenarios"))
    tasks_cfg = OmegaConf.create({"behaviours": ["cmpl"], "facets": ["behaviour", "group", "scenario"]})
    schema = SimpleNamespace(groups=["new", "high"], scenarios=["featured", "follow_feed"])
    assert tasks.task_names(tasks.run_facets(tasks_cfg, schema)) == [
        "cmpl_new_featured", "cmpl_new_follow_feed", "cmpl_high_featured", "cmpl_high_follow_feed"]


@pytest.mark.parametrize("override, message", [
    ("tasks.facets=[behaviour,user_group]",
     "tasks.facets.1: must be 'behaviour', 'group' or 'scenario' (got 'user_group')"),
    ("tasks.facets=[behaviour,scenario,group]", "tasks.facets: group must come right after behaviour"),
    ("tasks.facets=[group,behaviour]", "tasks.facets: the first facet must be behaviour"),
    ("tasks.facets=[behaviour,group,group]", "tasks.facets: group listed more than once"),
    ("tasks.behaviours=[]", "tasks.behaviours: List should have at least 1 item"),
    ("+tasks.groups=[new]", "tasks.groups: unknown key"),
])
def test_a_bad_tasks_config_is_one_line_naming_its_key(override, message):
    with pytest.raises(ConfigError) as error:
        compose([override])
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


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
    tidy = tidy[tidy["group"] != "pooled"]  # the verdict per table has its own rows (report/pooled.py)
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
