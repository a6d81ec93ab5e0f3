"""`mfh ablate --until-decided`: add seeds in rounds (one new seed of every variant, so pairs stay complete) until
every selected cell is decided (`--decide table`: each variant's pooled verdict over the table), the budget or
--max-seeds runs out, or an interrupt (rerun to resume). The cells
are judged after each round with anytime-valid intervals (report/sequential.py), so reading them every round and
stopping on them keeps the error rates; seeds are never dropped or re-chosen: the rule sees only the verdicts.
`--dry-run` estimates instead, from the seeds run so far, what each budget would likely decide."""

from __future__ import annotations

import fnmatch
import json
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from mfh_cli.errors import ConfigError, DataError, Interrupted, MfhError
from mfh_cli.report import run_report
from mfh_cli.report.aggregate import summarise
from mfh_cli.report.collect import ORACLE, StudyResults, find_studies
from mfh_cli.report.paper import attach_paper
from mfh_cli.report.pooled import ALL_CELLS, pooled_verdicts
from mfh_cli.report.sequential import BOUNDARY, chance_decided, shrunk_effects
from mfh_cli.report.verdicts import ALPHA, DECIDED, NOT_COMPUTED
from mfh_cli.studies.execute import ablate, write_study_json
from mfh_cli.studies.plan import plan, refuse_seed_overrides
from mfh_cli.studies.spec import load_study

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
PLAN_BUDGETS = ("10m", "30m", "1h", "2h", "4h", "8h", "24h")


@dataclass
class SequentialOutcome:
    """Where a sequential sweep stopped and why."""

    seeds: int
    decided: int
    cells: int
    spent_seconds: float
    stopped: str  # decided | budget | max seeds


def parse_duration(text: str) -> float:
    """'90s', '10m', '8h', '1h30m', '2d' → seconds."""
    parts = re.fullmatch(r"(?:\d+(?:\.\d+)?[smhd])+", text.strip().lower())
    if not parts:
        raise ConfigError(f"--budget '{text}': write a duration such as 90s, 10m, 8h or 1h30m")
    return sum(float(number) * UNITS[unit] for number, unit in re.findall(r"(\d+(?:\.\d+)?)([smhd])", text.lower()))


DECIDE = ("cells", "table")  # --decide: every selected cell, or each variant's pooled verdict over the table


def until_decided(study_name: str, budget: str, max_seeds: int, cells: str | None, jobs: int,
                  overrides: Sequence[str], data_dir: Path | None, results_dir: Path, quiet: bool,
                  console: Console, decide: str = "cells", tuned: bool = False,
                  first_seeds: Sequence[int] | None = None) -> SequentialOutcome:
    """Run rounds of seeds until the selected cells (`decide="table"`: each variant's pooled verdict over the table's
    cells, report/pooled.py) are decided, `budget` (over every invocation) or `max_seeds` runs out; print one line
    per round and the study's report at the end. `tuned`: every variant with `mfh tune`'s best overrides. The seeds
    come in the order `first_seeds` (`--seeds 100-104`; default none), then on from the last of them (or from 0)."""
    _check_decide(decide, cells)
    refuse_seed_overrides(overrides, "mfh ablate --until-decided")
    order = list(first_seeds or [])

    def seeds_of(rounds: int) -> list[int]:
        """The first `rounds` seeds of the order: the given ones, then the next after the last."""
        start = max(order) + 1 if order else 0
        return (order + list(range(start, start + rounds)))[:rounds]
    budget_seconds = parse_duration(budget)
    study, dataset = _one_study(study_name, overrides)
    directory = results_dir / "studies" / study.name / dataset
    previous = _previous_state(directory)
    spent = float(previous.get("spent_seconds", 0.0))
    round_seconds = list(previous.get("round_seconds", []))
    state = {"boundary": BOUNDARY, "alpha": ALPHA, "budget_seconds": budget_seconds, "max_seeds": max_seeds,
             "cells": cells or "all", "decide": decide, "spent_seconds": spent, "round_seconds": round_seconds,
             "stopped": None}
    finished_rounds = int(previous.get("seeds", 0))  # replayed from finished runs at no cost
    what = "variants' pooled verdicts" if decide == "table" else "cells"
    seeds, decided, selected, stopped = 0, 0, 0, ""
    try:
        while not stopped:
            expected = statistics.median(round_seconds) if round_seconds else 0.0
            if seeds >= max_seeds:
                stopped = "max seeds"
            elif seeds >= max(finished_rounds, 1) and spent + expected > budget_seconds:
                stopped = "budget"
            else:
                started = time.perf_counter()
                ablate([study.name], seeds=seeds_of(seeds + 1), jobs=jobs, overrides=overrides, data_dir=data_dir,
                       results_dir=results_dir, quiet=quiet, tuned=tuned,
                       sequential={**state, "seeds": seeds + 1, "seed_list": seeds_of(seeds + 1)})
                elapsed = time.perf_counter() - started
                seeds += 1
                spent += elapsed
                if seeds > finished_rounds:  # a round that trained (a replayed one only re-read finished runs)
                    round_seconds.append(round(elapsed, 1))
                state.update(spent_seconds=round(spent, 1), round_seconds=round_seconds, seeds=seeds,
                             seed_list=seeds_of(seeds))
                found, judged = judge(results_dir, study.name, dataset)
                verdicts = judged_units(found, judged, decide, cells)
                selected, decided = len(verdicts), int(verdicts["verdict"].isin(DECIDED).sum())
                not_computed = int((judged["verdict"] == NOT_COMPUTED).sum())
                left_out = f", {not_computed} cells not computed and left out" if not_computed else ""
                _save_state(directory, state)
                console.print(f"round {seeds}: {decided} of {selected} {what} decided ({_counts(verdicts)}"
                              f"{left_out}); {elapsed:.0f} s, {spent / 60:.1f} of {budget_seconds / 60:.1f} min "
                              f"spent", markup=False, highlight=False)
                if selected and decided == selected:
                    stopped = "decided"
    except Interrupted as interrupted:
        raise Interrupted(interrupted.signum, f"{interrupted}; {seeds} round(s) of seeds finished: rerun the same "
                                              "command to resume") from None
    state["stopped"] = stopped
    if seeds:
        _save_state(directory, {**state, "seeds": seeds, "seed_list": seeds_of(seeds)})
        run_report(results_dir, study=study.name, dataset=dataset, fmt="table", paper=True, console=console)
    console.print(f"sequential: stopped ({stopped}) after {seeds} seeds per variant: {decided} of {selected} "
                  f"selected {what} decided; {spent / 60:.1f} of {budget_seconds / 60:.1f} min spent "
                  f"({BOUNDARY}, α = {ALPHA:g}, Holm over the "
                  f"{'variants' if decide == 'table' else 'table'})", markup=False, highlight=False)
    return SequentialOutcome(seeds, decided, selected, spent, stopped)


def plan_budget(study_name: str, budget: str | None, max_seeds: int, cells: str | None, jobs: int,
                overrides: Sequence[str], results_dir: Path, console: Console, decide: str = "cells",
                tuned: bool = False) -> pd.DataFrame:
    """The dry run: from the seeds run so far and the measured time per round, how many selected cells (or pooled
    verdicts) each budget would likely decide, and the core-hours it spends. The observed means are shrunk toward
    no change, with what the seeds leave unknown of them (`shrunk_effects`): taken as the truth, a few seeds' means
    promise decisions that more seeds do not deliver (docs/statistics.md "Planning")."""
    _check_decide(decide, cells)
    study, dataset = _one_study(study_name, overrides)
    try:
        found = find_studies(results_dir, study.name, dataset)[0]
    except DataError:
        found = None
    if found is not None and bool(found.tuned) != tuned:
        found = None  # the runs on disk are the other (tuned or untuned) sweep's
    seeds = 0 if found is None else int(found.runs["seed"].nunique())
    if seeds < 2:
        raise MfhError(f"a plan needs the spread of at least 2 seeds of '{study.name}' on {dataset} ({seeds} found): "
                       f"run `mfh ablate --study {study.name} --seeds 2{' --tuned' if tuned else ''}` (or "
                       f"--until-decided --max-seeds 2) first")
    found, judged = judge(results_dir, study.name, dataset)
    units = judged_units(found, judged, decide, cells)
    what = "pooled verdicts" if decide == "table" else "cells"
    run_seconds = _run_seconds(results_dir, found.runs)
    round_seconds = _round_seconds(run_seconds, jobs, _previous_state(found.directory))
    core_seconds = sum(run_seconds.values())  # a round's runs, each at one thread
    level = ALPHA / max(len(units), 1)  # Holm's strictest step, as for the power figures
    # One scale for every unit (a cell's AUC and MSE differences are not comparable): % of the reference.
    scale = 100 / units["paired_reference_mean"].abs()
    means, sds = units["difference_mean"] * scale, units["difference_sd"] * scale
    expected_means, uncertainty = shrunk_effects(means.to_numpy(), (sds / units["n_pairs"] ** 0.5).to_numpy())
    budgets = list(PLAN_BUDGETS) + ([budget] if budget and budget not in PLAN_BUDGETS else [])
    rows = []
    for text in sorted(budgets, key=parse_duration):
        reach = min(max_seeds, seeds + int(parse_duration(text) // round_seconds))
        expected = sum(1.0 if verdict in DECIDED else chance_decided(mean, sd, reach, level, null, unknown)
                       for verdict, mean, sd, null, unknown in zip(units["verdict"], expected_means, sds,
                                                                 units["paper_change_as_ours"], uncertainty))
        rows.append({"budget": text, "seeds": reach, "expected_decided": expected,
                     "core_hours": (reach - seeds) * core_seconds / 3600})
    frame = pd.DataFrame(rows)
    table = Table(title=f"{study.name} ({dataset}): what each budget would likely decide, {len(units)} {what}",
                  caption=f"{seeds} seeds so far, {int((units['verdict'].isin(DECIDED)).sum())} {what} decided; a "
                          f"round (one seed of each of {len(study.variants)} variants, {jobs} at a time, so at "
                          f"most {len(study.variants)} cores busy) takes about {round_seconds:.0f} s here and "
                          f"{core_seconds / 60:.1f} core-minutes; estimate: each observed mean "
                          f"shrunk toward no change over the {len(units)} {what}, with its uncertainty, the "
                          f"observed spread taken as true, {BOUNDARY} at α/{len(units)}")
    for column in ("budget", "seeds per variant", f"expected decided {what}", "core-hours"):
        table.add_column(column, justify="right")
    for row in rows:
        reach = f"{row['seeds']} (--max-seeds)" if row["seeds"] == max_seeds else str(row["seeds"])
        table.add_row(row["budget"], reach, f"{row['expected_decided']:.1f} of {len(units)}",
                      f"{row['core_hours']:.3g}")
    console.print(table)
    return frame


def judge(results_dir: Path, study: str, dataset: str) -> tuple[StudyResults, pd.DataFrame]:
    """The study's results and its tidy table with its verdicts (against the paper where it has a table), as the
    report decides."""
    found = find_studies(results_dir, study, dataset)[0]
    tidy = summarise(found)
    return found, attach_paper(tidy, found.paper_table) if found.paper_table is not None else tidy


def judged_units(found: StudyResults, tidy: pd.DataFrame, decide: str, cells: str | None) -> pd.DataFrame:
    """What a round waits on: the selected cells (`cells`), or each variant's pooled verdict over all the table's
    cells (`table`), with their verdict, difference_mean, difference_sd, n_pairs, paper_change_as_ours and
    paired_reference_mean (the scale of a relative change)."""
    if decide == "cells":
        return _selected(tidy, cells)
    pooled = pooled_verdicts(found, tidy)
    pooled = pooled[pooled["scope"] == ALL_CELLS]
    return pooled.assign(difference_mean=pooled["relative_change"], paired_reference_mean=100.0,
                         n_pairs=pooled["n_seeds"])


def _check_decide(decide: str, cells: str | None) -> None:
    if decide not in DECIDE:
        raise ConfigError(f"--decide '{decide}': choose {' or '.join(DECIDE)}")
    if decide == "table" and cells:
        raise ConfigError("--cells selects cells to decide; --decide table decides each variant over all the "
                          "table's cells: give one of them")


def _selected(tidy: pd.DataFrame, cells: str | None) -> pd.DataFrame:
    """The tested cells (neither the reference nor the oracle, and computed: more seeds cannot decide a cell
    without rows) matching `--cells` patterns 'variant/group/task' (comma-separated, shell wildcards; none = all)."""
    tested = tidy[~tidy["verdict"].isin(["", NOT_COMPUTED]) & (tidy["variant"] != ORACLE)]
    if not cells:
        return tested
    patterns = [pattern.strip() for pattern in cells.split(",") if pattern.strip()]
    names = tested["variant"] + "/" + tested["group"] + "/" + tested["task"]
    chosen = names.map(lambda name: any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns))
    if not chosen.any():
        raise ConfigError(f"--cells '{cells}' selects no cell: write variant/group/task patterns such as "
                          f"{names.iloc[0]} or '*/new/*'")
    return tested[chosen]


def _one_study(name: str, overrides: Sequence[str]):
    if name == "all":
        raise ConfigError("--until-decided runs one study at a time: name it with --study")
    study = load_study(name)
    if study.settings:
        raise ConfigError(f"--until-decided: study '{name}' sweeps settings; run one of its settings "
                          f"({', '.join(f'{name}_{setting}' for setting in study.settings)}) instead")
    return study, plan(study, [0], overrides)[0].dataset


def _previous_state(directory: Path) -> dict:
    """The sequential state an earlier (interrupted or budget-stopped) invocation left in study.json."""
    try:
        return json.loads((directory / "study.json").read_text()).get("sequential") or {}
    except (OSError, ValueError):
        return {}


def _save_state(directory: Path, state: dict) -> None:
    info = json.loads((directory / "study.json").read_text())
    write_study_json(directory, {**info, "sequential": state})


def _run_seconds(results_dir: Path, runs: pd.DataFrame) -> dict[str, float]:
    """Per variant, the median wall time of its runs (one thread each: core-seconds), from their metrics.json."""
    walls = {}
    for variant, run_id in runs[["variant", "run_id"]].drop_duplicates().itertuples(index=False):
        metrics = json.loads((results_dir / "runs" / run_id / "metrics.json").read_text())
        walls.setdefault(variant, []).append(float(metrics["wall_seconds"]))
    return {variant: statistics.median(values) for variant, values in walls.items()}


def _round_seconds(run_seconds: dict[str, float], jobs: int, state: dict) -> float:
    """Seconds per round: measured by earlier rounds when there were any, else from the runs' own wall times."""
    if state.get("round_seconds"):
        return float(statistics.median(state["round_seconds"]))
    per_variant = list(run_seconds.values())
    return max(sum(per_variant) / max(min(jobs, len(per_variant)), 1), max(per_variant))


def _counts(verdicts: pd.DataFrame) -> str:
    counts = verdicts["verdict"].value_counts()
    return ", ".join(f"{int(count)} {name}" for name, count in counts.items()) or "none"


