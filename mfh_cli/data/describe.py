"""What a dataset holds, at a glance: rows and users per group (and per scenario) and split, label rates, masked
labels, sparsity.

Shape letters: N rows, L behaviours (label columns), G user groups, S splits.
"""

from __future__ import annotations

import pandas as pd
import torch

from mfh_cli.data.dataset import SPLITS, Dataset


def describe_frame(dataset: Dataset) -> pd.DataFrame:
    """One row per user group, then one per scenario (named as the dataset names it: `tab1`, …; `s0`, … on the
    simulator; where the dataset has more than one), then `all`: rows per split, users with rows (a user table may
    list more users than the log has rows for), each behaviour's positive rate (binary) or mean (regression) over
    rows where its label exists, and masked-label counts for behaviours with any masked row."""
    blocks = [(dataset.group, list(dataset.schema.groups))]
    if dataset.scenario is not None and len(dataset.schema.scenarios) > 1:
        blocks.append((dataset.scenario, list(dataset.schema.scenarios)))
    blocks.append((torch.zeros(len(dataset), dtype=torch.int64), ["all"]))
    frames = [_value_rows(dataset, index, names) for index, names in blocks]
    frame = pd.concat(frames, ignore_index=True)
    masked = [column for column in frame.columns if column.endswith("_masked")]
    return frame.drop(columns=[column for column in masked if frame[column].iloc[-1] == 0])


def _value_rows(dataset: Dataset, index: torch.Tensor, names: list[str]) -> pd.DataFrame:
    """The describe_frame rows of the values `names` of one facet, `index` [N] each row's value."""
    behaviours, count, split_count = list(dataset.schema.behaviours), len(names), len(SPLITS)
    rows = torch.bincount(index * split_count + dataset.split,
                          minlength=count * split_count).reshape(count, split_count)  # [G, S]
    value_user = torch.unique(torch.stack([index, dataset.user]), dim=1)  # distinct (value, user) pairs
    users = torch.bincount(value_user[0], minlength=count)  # [G]
    present = dataset.label_mask.double()
    label_sums = _sum_by_group(dataset.labels.double() * present, index, count)  # [G, L]
    label_counts = _sum_by_group(present, index, count)  # [G, L]
    masked = _sum_by_group(1.0 - present, index, count)  # [G, L]
    frame = pd.DataFrame({"group": names})
    for column, split in enumerate(SPLITS):
        frame[f"rows_{split}"] = rows[:, column].tolist()
    frame["rows"] = rows.sum(dim=1).tolist()
    frame["users_with_rows"] = users.tolist()
    for column, behaviour in enumerate(behaviours):
        statistic = "mean" if dataset.schema.behaviours[behaviour] == "regression" else "rate"
        frame[f"{behaviour}_{statistic}"] = [total / total_count if total_count else float("nan") for total, total_count
                                             in zip(label_sums[:, column].tolist(), label_counts[:, column].tolist())]
    for column, behaviour in enumerate(behaviours):
        frame[f"{behaviour}_masked"] = masked[:, column].long().tolist()
    return frame


def label_sparsity_notes(dataset: Dataset, threshold: int) -> list[str]:
    """A note per binary behaviour with fewer than `threshold` positives in some user group (SPEC §5): its
    metrics there rest on a handful of rows, so a study over it is noisy."""
    groups = dataset.schema.groups
    positives = _sum_by_group(dataset.labels.double() * dataset.label_mask, dataset.group, len(groups))  # [G, L]
    test = dataset.split == SPLITS.index("test")
    test_positives = _sum_by_group((dataset.labels.double() * dataset.label_mask)[test], dataset.group[test],
                                   len(groups))  # [G, L]
    notes = []
    for column, (behaviour, kind) in enumerate(dataset.schema.behaviours.items()):
        sparse = [index for index in range(len(groups)) if positives[index, column] < threshold]
        if kind != "binary" or not sparse:
            continue
        per_group = ", ".join(f"{int(positives[index, column])} among {groups[index]} users "
                              f"({int(test_positives[index, column])} in test)" for index in sparse)
        notes.append(f"{behaviour} has {int(positives[:, column].sum()):,} positives in all, {per_group}: "
                     f"fewer than {threshold} in a group, so its metrics there are noisy")
    return notes


def _sum_by_group(values: torch.Tensor, group: torch.Tensor, group_count: int) -> torch.Tensor:
    """[G, L] column sums of `values` [N, L] over the rows of each group."""
    return torch.zeros(group_count, values.shape[1], dtype=values.dtype).index_add_(0, group, values)
