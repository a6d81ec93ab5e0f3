"""`mfh ablate --until-decided` as a user runs it: rounds of seeds that stop on their own (max seeds, budget),
resume after an interrupt without retraining, a report marked sequential, and the dry-run plan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from mfh_cli.errors import ConfigError
from mfh_cli.seeds_on_demand import _selected, parse_duration

TINY = ["trainer=smoke", "data.rows=3000", "trainer.progress=false"]
STUDY = ["ablate", "--study", "hierarchical", "--until-decided", "--quiet", "--jobs", "1"]  # in-process: one data load


def study_dir(tmp_path: Path) -> Path:
    return tmp_path / "results" / "studies" / "hierarchical" / "synthetic"


def run_dirs(tmp_path: Path) -> dict[str, float]:
    """Finished runs → the modification time of their metrics.json (a retrained run gets a new one)."""
    return {path.parent.name: path.stat().st_mtime for path in (tmp_path / "results" / "runs").glob("*/metrics.json")}


def test_stops_at_max_seeds_then_resumes_without_retraining_and_the_report_says_sequential(run_mfh, tmp_path):
    first = run_mfh(*STUDY, "--max-seeds", "2", "--budget", "30m", *TINY, check=True)
    assert "round 1:" in first.stdout and "round 2:" in first.stdout
    assert "sequential: stopped (max seeds) after 2 seeds per variant" in first.stdout
    state = json.loads((study_dir(tmp_path) / "study.json").read_text())["sequential"]
    assert state["seeds"] == 2 and state["stopped"] == "max seeds" and len(state["round_seconds"]) == 2
    trained = run_dirs(tmp_path)
    assert len(trained) == 4  # 2 variants x 2 seeds

    again = run_mfh(*STUDY, "--max-seeds", "3", "--budget", "30m", *TINY, check=True)
    assert "stopped (max seeds) after 3 seeds" in again.stdout
    now = run_dirs(tmp_path)
    assert len(now) == 6 and all(now[run] == trained[run] for run in trained), "a finished run was retrained"
    state = json.loads((study_dir(tmp_path) / "study.json").read_text())["sequential"]
    assert state["seeds"] == 3 and len(state["round_seconds"]) == 3  # replayed rounds are not timed again

    report = run_mfh("report", "--study", "hierarchical", "--format", "csv", check=True)
    assert "sequential: seeds added in rounds until decided" in report.stderr
    table = pd.read_csv(Path(tmp_path / "results" / "tables" / "hierarchical.csv"))
    assert set(table["inference"]) == {"sequential"}

    fixed = run_mfh("ablate", "--study", "hierarchical", "--seeds", "3", "--quiet", "--jobs", "1", *TINY, check=True)
    assert "sequential" not in fixed.stdout  # a fixed-seed sweep of the same runs is reported as fixed again
    assert json.loads((study_dir(tmp_path) / "study.json").read_text()).get("sequential") is None


def test_rounds_go_on_from_the_last_seed_given(run_mfh, tmp_path):
    result = run_mfh(*STUDY, "--seeds", "100-101", "--max-seeds", "3", "--budget", "30m", *TINY, check=True)
    assert "stopped (max seeds) after 3 seeds" in result.stdout
    runs = pd.read_csv(study_dir(tmp_path) / "runs.csv")
    assert set(runs["seed"]) == {100, 101, 102}
    assert json.loads((study_dir(tmp_path) / "study.json").read_text())["sequential"]["seed_list"] == [100, 101, 102]


def test_budget_stops_it_after_a_round(run_mfh, tmp_path):
    result = run_mfh(*STUDY, "--max-seeds", "10", "--budget", "1s", *TINY, check=True)
    assert "sequential: stopped (budget) after 1 seeds per variant" in result.stdout


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux signals")
def test_interrupt_keeps_finished_rounds_and_a_rerun_resumes(mfh_path, tmp_path):
    environment = {**os.environ, "MFH_RESULTS_DIR": str(tmp_path / "results")}
    process = subprocess.Popen([mfh_path, *STUDY, "--max-seeds", "6", *TINY], cwd=tmp_path,
                               env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(run_dirs(tmp_path)) < 3:  # inside round 2
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert "rerun to resume" in stderr
    kept = run_dirs(tmp_path)
    state = json.loads((study_dir(tmp_path) / "study.json").read_text())["sequential"]
    assert state["seeds"] >= 1 and state["stopped"] is None
    resumed = subprocess.run([mfh_path, *STUDY, "--max-seeds", "3", *TINY], cwd=tmp_path,
                             env=environment, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "stopped (max seeds) after 3 seeds" in resumed.stdout
    now = run_dirs(tmp_path)
    assert len(now) == 6 and all(now[run] == kept[run] for run in kept)


def test_dry_run_needs_two_seeds_then_plans_each_budget(run_mfh, tmp_path):
    early = run_mfh(*STUDY, "--dry-run", *TINY)
    assert early.returncode == 1 and "needs the spread of at least 2 seeds" in early.stderr
    run_mfh("ablate", "--study", "hierarchical", "--seeds", "3", "--quiet", "--jobs", "1", *TINY, check=True)
    plan = run_mfh(*STUDY, "--dry-run", "--budget", "3h", *TINY, check=True)
    lines = [line for line in plan.stdout.splitlines() if " of 9 " in line]
    budgets = [line.split("│")[1].strip() for line in lines]
    assert budgets == ["10m", "30m", "1h", "2h", "3h", "4h", "8h", "24h"]
    expected = [float(line.split("│")[3].split(" of ")[0]) for line in lines]
    assert expected == sorted(expected)  # more budget never decides fewer cells
    core_hours = [float(line.split("│")[4]) for line in lines]
    seeds = [int(line.split("│")[2].split()[0]) for line in lines]
    assert core_hours == sorted(core_hours) and core_hours[-1] > 0
    assert all((hours == 0) == (reach == 3) for hours, reach in zip(core_hours, seeds))  # none spent without seeds
    assert len(run_dirs(tmp_path)) == 6  # a dry run trains nothing


@pytest.mark.slow  # a 2-trial tune of Table 2, then 3 rounds (~30 s)
def test_deciding_the_table_as_a_whole_with_tuned_variants(run_mfh, tmp_path):
    """--decide table waits on each variant's pooled verdict (report/pooled.py), not on the 9 cells; --tuned trains
    every round with mfh tune's best overrides, and the plan and the report say so."""
    pytest.importorskip("optuna", reason="--tuned needs mfh tune: the `tune` extra")
    refused = run_mfh(*STUDY, "--decide", "table", "--cells", "flat/*/*", "--tuned", *TINY)
    assert refused.returncode == 2 and "give one of them" in refused.stderr
    run_mfh("tune", "--study", "hierarchical", "--trials", "2", "--quiet", "--jobs", "1", *TINY, check=True)
    result = run_mfh(*STUDY, "--decide", "table", "--tuned", "--max-seeds", "3", "--budget", "30m", *TINY,
                     check=True)
    rounds = [line for line in result.stdout.splitlines() if line.startswith("round ")]
    assert len(rounds) == 3 and all(" of 1 variants' pooled verdicts decided (" in line for line in rounds)
    assert "selected variants' pooled verdicts decided" in result.stdout
    info = json.loads((study_dir(tmp_path) / "study.json").read_text())
    assert info["tuned"] and info["sequential"]["decide"] == "table"
    assert "as a whole (all cells), 3 seeds: flat" in result.stdout
    plan = run_mfh(*STUDY, "--decide", "table", "--tuned", "--dry-run", *TINY, check=True)
    assert "what each budget would likely decide, 1 pooled verdicts" in " ".join(plan.stdout.split())


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("8h", 28800), ("1h30m", 5400),
                                           ("2d", 172800)])
def test_budget_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10", "ten minutes", "5x", ""])
def test_bad_budget_is_a_config_error(text):
    with pytest.raises(ConfigError, match="--budget"):
        parse_duration(text)


def test_cells_select_by_variant_group_task_patterns():
    tidy = pd.DataFrame({"variant": ["hmtl", "flat", "flat", "oracle", "flat"],
                         "group": ["new", "new", "high", "new", "low"],
                         "task": ["finish", "finish", "skip", "finish", "cmpl"],
                         "verdict": ["", "smaller", "inconclusive", "", "confirmed"]})
    assert len(_selected(tidy, None)) == 3  # neither the reference (no verdict) nor the oracle
    assert _selected(tidy, "flat/new/*,*/high/skip")["group"].tolist() == ["new", "high"]
    with pytest.raises(ConfigError, match="selects no cell"):
        _selected(tidy, "mfh/*/*")
