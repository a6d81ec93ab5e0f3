"""Are the controls honest under a training recipe? The negative control's per-cell false-positive rate over many
reseeded cells, and the positive control's power, on the main job's controls study (conf/study/controls.yaml).

The negative control pairs the blanked shared_bottom at seed s with itself at seed s + 1000: no true difference.
Its seeds are cut into `--replicates` disjoint blocks of the study's seeds per variant (8): each block is one
controls table of 9 cells, so `--replicates 25` gives 225 cells, each tested with the paired t-test over its block
(unadjusted, α = 0.05): the rate must stay at or below 5% (with its exact binomial 95% interval), and after Holm
over the block's 9 cells the share of blocks with any significant cell (the family-wise rate) too. The positive
control (the model that sees `context`) is run on the first `--positive` blocks: `better` in how many cells.

Run: python -m benchmarks.bench_controls [--replicates 25] [--positive 3] [--jobs 2] [overrides ...] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from benchmarks.common import record
from mfh_cli.report.verdicts import ALPHA, holm
from mfh_cli.studies.execute import execute, run_finished
from mfh_cli.studies.plan import plan
from mfh_cli.studies.spec import load_study
from mfh_cli.tasks import PRIMARY, lower_is_better


def trained_values(runs, results: Path) -> pd.DataFrame:
    """variant, seed, group, task, metric, value of every planned run's test cells (primary metrics)."""
    rows = []
    for run in runs:
        metrics = json.loads((results / "runs" / run.run_id / "metrics.json").read_text())["metrics"]["test"]
        for group, tasks in metrics.items():
            for task, cell in tasks.items():
                if cell["metric"] in PRIMARY.values():
                    rows.append({"variant": run.variant, "seed": run.seed, "group": group, "task": task,
                                 "metric": cell["metric"], "value": cell["value"]})
    return pd.DataFrame(rows)


def block_tests(values: pd.DataFrame, variant: str, reference: str, block: int) -> pd.DataFrame:
    """Per block of `block` consecutive seeds and cell: the paired t-test's p of variant − reference."""
    wide = values.pivot_table(index=["group", "task", "metric", "seed"], columns="variant", values="value")
    differences = (wide[variant] - wide[reference]).reset_index(name="difference")
    differences["block"] = differences["seed"] // block
    rows = []
    for (block_index, group, task, metric), cell in differences.groupby(["block", "group", "task", "metric"]):
        values_ = cell["difference"].to_numpy()
        p = stats.ttest_1samp(values_, 0.0).pvalue if values_.std() > 0 else np.nan
        better = (values_.mean() < 0) == lower_is_better(metric)
        rows.append({"block": block_index, "group": group, "task": task, "p": p, "better": better})
    tests = pd.DataFrame(rows)
    tests["p_holm"] = tests.groupby("block")["p"].transform(holm)
    return tests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="overrides for every run, e.g. a recipe: recipe=authors")
    parser.add_argument("--replicates", type=int, default=25)
    parser.add_argument("--positive", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--record", action="store_true")
    arguments = parser.parse_args()
    study = load_study("controls")
    reference, negative = study.reference, "without_context_reseeded"
    positive = next(variant for variant, verdict in study.expected.items() if verdict == "better")
    block = study.seeds
    seeds = list(range(block * arguments.replicates))
    started = time.perf_counter()
    planned = plan(replace(study, variants={name: study.variants[name] for name in (reference, negative)}), seeds,
                   arguments.overrides)
    planned += plan(replace(study, variants={positive: study.variants[positive]}),
                    seeds[:block * arguments.positive], arguments.overrides)
    pending = [run for run in planned if not run_finished(arguments.results_dir, run.run_id)]
    failures = execute(pending, arguments.jobs, None, arguments.results_dir, quiet=True, force=False)
    if failures:
        raise SystemExit(f"{len(failures)} runs failed: {failures[0][1]}")
    values = trained_values(planned, arguments.results_dir)
    negative_tests = block_tests(values, negative, reference, block)
    tested = negative_tests["p"].notna()
    rejected = int((negative_tests.loc[tested, "p"] < ALPHA).sum())
    cells = int(tested.sum())
    low, high = stats.binomtest(rejected, cells).proportion_ci(0.95, method="exact")
    family = negative_tests.groupby("block")["p_holm"].min() < ALPHA
    positive_tests = block_tests(values[values["seed"] < block * arguments.positive], positive, reference, block)
    decided_better = int(((positive_tests["p_holm"] < ALPHA) & positive_tests["better"]).sum())
    lines = [f"`python -m benchmarks.bench_controls --replicates {arguments.replicates} --positive "
             f"{arguments.positive} {' '.join(arguments.overrides)}` ({len(planned)} runs, "
             f"{(time.perf_counter() - started) / 60:.1f} min; blocks of {block} seeds, 9 cells each):",
             f"- negative control ({negative} vs {reference}, no true difference): {rejected} of {cells} cells "
             f"significant unadjusted at α = {ALPHA:g}: **{rejected / cells:.1%}** (exact 95% interval "
             f"{low:.1%}-{high:.1%}; nominal 5%); blocks with a cell significant after Holm over 9: "
             f"{int(family.sum())} of {len(family)} ({family.mean():.1%}; nominal at most 5%)",
             f"- positive control ({positive} vs {reference}): `better` after Holm in {decided_better} of "
             f"{len(positive_tests)} cells over {arguments.positive} blocks"]
    record(f"Controls under {' '.join(arguments.overrides) or 'the default recipe'}", lines,
           quick=not arguments.record)


if __name__ == "__main__":
    main()
