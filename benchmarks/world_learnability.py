"""Does a plain model learn the simulator's world? The share of the gap between chance and the oracle that a
shared-bottom model closes, per play-grid cell, for candidate worlds (issue: a default world in which models learn).

The rule that picks the main job's default world is fixed here, before any model comparison is looked at:
candidates are tried in order of how far they move from the old world (fewer users, i.e. more rows per user;
nothing else changes), and the default is the first in which `shared_bottom` (seed 0, the main job's rows and
preset) closes at least GAP_TARGET of the chance→oracle gap on every play cell with at least MIN_POSITIVES test
positives (cmpl, a regression, always counts). Chance = AUC 0.5, or for MSE the constant prediction (the group's
mean training label). Only shared_bottom is trained: which model wins plays no part in the choice.

    python -m benchmarks.world_learnability [--world "data.users=1000 data.latent_dim=4" ...] [--record]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import record
from mfh_cli.config import compose
from mfh_cli.data.synthetic import simulate
from mfh_cli.engine.run import train

GAP_TARGET = 0.5
MIN_POSITIVES = 30
BEHAVIOURS = ("cmpl", "finish", "skip")


def chance_mse(dataset, group_index: int, column: int) -> float:
    """Test MSE of predicting the group's mean training label (the 'learned nothing' baseline for cmpl)."""
    labels, mask, group, split = dataset.labels[:, column], dataset.label_mask[:, column], dataset.group, dataset.split
    train_rows = mask & (group == group_index) & (split == 0)
    test_rows = mask & (group == group_index) & (split == 2)
    constant = labels[train_rows].double().mean()
    return float(((labels[test_rows].double() - constant) ** 2).mean())


def gap_table(overrides: list[str], results_dir: Path) -> list[dict]:
    """Train shared_bottom on one world and return one row per play cell: chance, model, oracle, gap closed."""
    cfg = compose(["model=shared_bottom", "tasks=play", "trainer.threads=1", "trainer.progress=false",
                   *overrides])
    dataset = simulate(cfg.data)
    metrics = train(cfg, results_dir=results_dir, quiet=True).metrics
    names = list(dataset.schema.behaviours)
    rows = []
    for group_index, group in enumerate(dataset.schema.groups):
        for behaviour in BEHAVIOURS:
            column = names.index(behaviour)
            test = (dataset.split == 2) & (dataset.group == group_index) & dataset.label_mask[:, column]
            positives = int(dataset.labels[test, column].gt(0.5).sum()) if behaviour != "cmpl" else int(test.sum())
            model = metrics["metrics"]["test"][group][behaviour]["value"]
            oracle = metrics["oracle"]["test"][group][behaviour]["value"]
            chance = chance_mse(dataset, group_index, column) if behaviour == "cmpl" else 0.5
            closed = (np.nan if model is None or oracle is None or oracle == chance
                      else (model - chance) / (oracle - chance))
            rows.append({"group": group, "behaviour": behaviour, "positives": positives, "chance": chance,
                         "model": model, "oracle": oracle, "gap_closed": closed,
                         "counts": behaviour == "cmpl" or positives >= MIN_POSITIVES})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", nargs="+", default=["data.users=5000", "data.users=1000"],
                        help="candidate worlds in the rule's order, each a space-separated override list")
    parser.add_argument("--record", action="store_true", help="append to benchmarks/results.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = [f"rule: first world (in the order listed) where shared_bottom closes >= {GAP_TARGET:.0%} of the "
             f"chance->oracle gap on every play cell with >= {MIN_POSITIVES} test positives (cmpl always)", "",
             "| world | group | behaviour | test positives | chance | shared_bottom | oracle | gap closed |",
             "|---|---|---|---|---|---|---|---|"]
    chosen = None
    with tempfile.TemporaryDirectory() as results:
        for world in args.world:
            table = gap_table(world.split(), Path(results))
            for row in table:
                lines.append(f"| {world} | {row['group']} | {row['behaviour']} | {row['positives']} | "
                             f"{row['chance']:.4f} | {row['model']:.4f} | {row['oracle']:.4f} | "
                             f"{row['gap_closed']:.2f}{'' if row['counts'] else ' (too few positives: not counted)'} |")
            counted = [row["gap_closed"] for row in table if row["counts"]]
            meets = bool(counted) and min(counted) >= GAP_TARGET
            lines.append(f"| {world} | **min over counted cells** | | | | | | **{min(counted):.2f}** "
                         f"{'meets' if meets else 'fails'} the rule |")
            print("\n".join(lines[-len(table) - 1:]), flush=True)
            if meets and chosen is None:
                chosen = world
    lines += ["", f"chosen by the rule: {chosen or 'none'}"]
    record("World learnability (shared_bottom, seed 0, compact, 1 thread)", lines, quick=not args.record)


if __name__ == "__main__":
    main()
