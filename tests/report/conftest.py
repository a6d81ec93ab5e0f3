"""Study result files written by hand in the real input format (ARCHITECTURE "Study results")."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from mfh_cli.tasks import RUNS_COLUMNS as TASK_RUNS_COLUMNS

RUNS_COLUMNS = list(TASK_RUNS_COLUMNS)


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    return tmp_path / "results"


@pytest.fixture
def write_study(results_dir: Path):
    """write_study(study, cells, reference, variants, ...): runs.csv + study.json; `cells` holds variant, seed,
    group, task, metric, value (None = not computable); run_id defaults to '<variant>-<seed>'."""

    def write(study: str, cells: pd.DataFrame, reference: str, variants: list[str], dataset: str = "synthetic",
              paper_table: int | None = None, focus: dict | None = None, title: str | None = None,
              note: str = "", sequential: dict | None = None) -> Path:
        directory = results_dir / "studies" / study / dataset
        directory.mkdir(parents=True, exist_ok=True)
        runs = cells.copy()
        if "run_id" not in runs:
            runs["run_id"] = runs["variant"] + "-" + runs["seed"].astype(str)
        runs = runs.assign(study=study, dataset=dataset, split=runs.get("split", "test"))[RUNS_COLUMNS]
        runs.to_csv(directory / "runs.csv", index=False)
        info = {"study": study, "title": title or f"{study} study", "paper_table": paper_table,
                "tasks": "play", "reference": reference, "variants": variants,
                "seeds": sorted(set(runs["seed"].tolist())), "dataset": dataset, "focus": focus, "note": note}
        if sequential:
            info["sequential"] = sequential
        (directory / "study.json").write_text(json.dumps(info))
        return directory

    return write


@pytest.fixture
def write_history(results_dir: Path):
    """write_history(run_id, frame): results/runs/<run_id>/history.csv with step, epoch, split, group, task, loss."""

    def write(run_id: str, history: pd.DataFrame) -> Path:
        path = results_dir / "runs" / run_id / "history.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        history[["step", "epoch", "split", "group", "task", "loss"]].to_csv(path, index=False)
        return path

    return write


@pytest.fixture
def captured_console() -> Console:
    """A wide console writing to memory (read it with `.file.getvalue()`)."""
    return Console(file=io.StringIO(), width=240, color_system=None)
