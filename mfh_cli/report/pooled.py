"""A verdict per table (SPEC §4 "verdict per table" [ours]): does a variant beat the reference over the table's
cells as a whole?

For each variant and seed s, the pooled change is the mean over the table's computed cells c of the relative change
against the reference's same seed, its sign set so that + means the variant is better (lower MSE, higher AUC):

    pooled_s = mean_c  sign_c · (variant_sc − reference_sc) / reference_sc × 100

The per-seed values are the unit: their mean, paired t interval and test (or, for seeds chosen on demand, the
confidence sequence), Holm over the table's variants, and the verdict against the paper's pooled change, the same
mean over the same cells of its printed changes (in our formula). It is computed over all the cells (SPEC §4) and
over each metric's cells apart: an MSE change runs larger than an AUC change of the same import and must not swamp
it. It answers "does hmtl lose to mfh over Table 1's cells?", not whether any one cell moved
(docs/statistics.md). Reads the study's per-seed values only; never imports torch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mfh_cli.report.collect import ORACLE, StudyResults
from mfh_cli.report.verdicts import ALPHA, DECIDED, FIXED, NOT_COMPUTED, SEQUENTIAL, decide
from mfh_cli.tasks import lower_is_better, metric_label

POOLED = "pooled"  # the `group` of a pooled row in the tidy CSV; its `metric` is POOLED_METRIC
POOLED_METRIC = "pooled_change"  # not a registered metric: higher is better (the changes are sign-aligned)
ALL_CELLS = "all cells"
POOLED_COLUMNS = ["variant", "scope", "cells", "cells_total", "n_seeds", "relative_change", "change_ci_low",
                  "change_ci_high", "difference_sd", "share_improved", "p_value", "p_adjusted",
                  "paper_change_as_ours", "p_paper", "p_paper_adjusted", "detectable_change", "seeds_needed",
                  "verdict", "inference"]


def scopes(tidy: pd.DataFrame) -> list[str]:
    """ALL_CELLS, then one scope per metric of the table ('AUC cells', 'MSE cells') where it has several."""
    metrics = list(dict.fromkeys(tidy.loc[tidy["verdict"] != "", "metric"]))
    return [ALL_CELLS] + ([f"{metric_label(name)} cells" for name in metrics] if len(metrics) > 1 else [])


def per_seed_changes(study: StudyResults, tidy: pd.DataFrame) -> pd.DataFrame:
    """One row per compared variant, seed and computed cell: the sign-aligned relative change against the
    reference's same seed (`change`, %), its sign-aligned paper change (`paper`), and the cell's scope label."""
    runs = study.runs[(study.runs["variant"] != ORACLE)][["variant", "seed", "group", "task", "metric", "value"]]
    reference = runs[runs["variant"] == study.reference].drop(columns="variant").rename(
        columns={"value": "reference"})
    compared = tidy[(tidy["verdict"] != "") & (tidy["verdict"] != NOT_COMPUTED)][
        ["variant", "group", "task", "metric", "paper_change_as_ours"]]
    merged = (runs[runs["variant"] != study.reference]
              .merge(compared, on=["variant", "group", "task", "metric"])
              .merge(reference, on=["seed", "group", "task", "metric"]))
    merged = merged[merged["value"].notna() & merged["reference"].notna()]
    sign = np.where(merged["metric"].map(lower_is_better).astype(bool), -1.0, 1.0)
    merged["change"] = sign * (merged["value"] - merged["reference"]) / merged["reference"] * 100
    merged["paper"] = sign * merged["paper_change_as_ours"]
    merged["scope"] = merged["metric"].map(lambda name: f"{metric_label(name)} cells")
    return merged


def pooled_verdicts(study: StudyResults, tidy: pd.DataFrame) -> pd.DataFrame:
    """POOLED_COLUMNS, one row per variant and scope (ALL_CELLS first), decided with Holm over the variants within a
    scope; an empty frame for a table without compared cells."""
    changes = per_seed_changes(study, tidy)
    cells_total = tidy[tidy["verdict"] != ""].groupby("variant")["verdict"].size()
    inference = SEQUENTIAL if study.sequential else FIXED
    frames = []
    for scope in scopes(tidy):
        chosen = changes if scope == ALL_CELLS else changes[changes["scope"] == scope]
        totals = cells_total if scope == ALL_CELLS else tidy[(tidy["verdict"] != "") & (
            tidy["metric"].map(lambda name: f"{metric_label(name)} cells") == scope)].groupby("variant").size()
        rows = []
        for variant in [name for name in study.variants if name in set(chosen["variant"])]:
            mine = chosen[chosen["variant"] == variant]
            per_seed = mine.groupby("seed")
            pooled = per_seed["change"].mean()
            improved = per_seed["change"].apply(lambda values: float((values > 0).mean()))
            cells = mine[["group", "task", "metric"]].drop_duplicates()
            paper = mine.drop_duplicates(["group", "task", "metric"])["paper"]
            rows.append({"variant": variant, "scope": scope, "cells": len(cells),
                         "cells_total": int(totals.get(variant, len(cells))), "n_seeds": len(pooled),
                         "n_pairs": len(pooled), "difference_mean": float(pooled.mean()),
                         "difference_sd": float(pooled.std(ddof=1)) if len(pooled) > 1 else np.nan,
                         "share_improved": float(improved.mean()), "metric": POOLED_METRIC,
                         "paired_reference_mean": 100.0,  # the values are % already: scale 1
                         "paper_change_as_ours": float(paper.mean()) if paper.notna().all() else np.nan,
                         "inference": inference})
        if rows:
            frames.append(decide(pd.DataFrame(rows)).assign(relative_change=lambda frame: frame["difference_mean"]))
    if not frames:
        return pd.DataFrame(columns=POOLED_COLUMNS)
    return pd.concat(frames, ignore_index=True)[POOLED_COLUMNS]


def pooled_line(pooled: pd.DataFrame, label: str, scope: str = ALL_CELLS) -> str:
    """'<label> as a whole (all cells), 3 seeds: hmtl vs mfh inconclusive (−0.31% [−1.20%, +0.58%] over 9 of 9
    cells, paper −0.21%; about 96 seeds for 80% power); … (Holm over 2 variants, α = 0.05)'."""
    rows = pooled[pooled["scope"] == scope]
    if rows.empty:
        return f"{label} as a whole ({scope}): no variant compared with the reference"
    parts = []
    for row in rows.itertuples(index=False):
        interval = ("no interval" if np.isnan(row.change_ci_low) else
                    f"[{row.change_ci_low:+.2f}%, {row.change_ci_high:+.2f}%]")
        paper = "" if np.isnan(row.paper_change_as_ours) else f", paper {row.paper_change_as_ours:+.2f}%"
        needed = ""
        if row.verdict not in DECIDED and row.verdict != "untested" and not np.isnan(row.seeds_needed):
            seeds = "more than 100,000" if np.isinf(row.seeds_needed) else f"about {row.seeds_needed:,.0f}"
            target = "the paper's change" if paper else "a 0.5% change"
            needed = f"; {seeds} seeds for 80% power at {target}"
        parts.append(f"{row.variant} {row.verdict} ({row.relative_change:+.2f}% {interval} over {row.cells} of "
                     f"{row.cells_total} cells, better in {row.share_improved:.0%} of them per seed{paper}{needed})")
    seeds = int(rows["n_seeds"].max())
    sequential = "; sequential: anytime-valid intervals" if (rows["inference"] == SEQUENTIAL).any() else ""
    return (f"{label} as a whole ({scope}), {seeds} seed{'s' if seeds != 1 else ''}: {'; '.join(parts)} "
            f"(+ = better than the reference; Holm over {len(rows)} variant{'s' if len(rows) != 1 else ''}, "
            f"α = {ALPHA:g}{sequential})")


def pooled_csv_rows(pooled: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The pooled rows in the tidy CSV's columns: group POOLED, task = the scope, metric POOLED_METRIC, the pooled
    change as `relative_change` (and `mean`), plus `cells` ('9 of 9') and `share_improved`."""
    frame = pd.DataFrame({column: pooled[column] if column in pooled else np.nan for column in columns})
    frame["group"], frame["task"], frame["metric"] = POOLED, pooled["scope"], POOLED_METRIC
    frame["mean"] = pooled["relative_change"]
    frame["cells"] = pooled["cells"].astype(str) + " of " + pooled["cells_total"].astype(str)
    frame["share_improved"] = pooled["share_improved"]
    return frame
