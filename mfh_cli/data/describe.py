"""What a dataset holds, at a glance: rows and users per group and split, label rates, masked labels, sparsity.

Shape letters: N rows, L behaviours (label columns), G user groups, S splits.
"""

from __future__ import annotations

import pandas as pd
import torch

from mfh_cli.data.dataset import SPLITS, Dataset


def describe_frame(dataset: Dataset) -> pd.DataFrame:
    """One row per user group plus `all`: rows per split, users with rows (a user table may list more users than
    the log has rows for), each behaviour's positive rate (binary) or mean (regression) over rows where its label
    exists, and masked-label counts for behaviours with any masked row."""
    groups, behaviours = dataset.schema.groups, list(dataset.schema.behaviours)
    group_count, split_count = len(groups), len(SPLITS)
    rows = torch.bincount(dataset.group * split_count + dataset.split,
                          minlength=group_count * split_count).reshape(group_count, split_count)  # [G, S]
    group_user = torch.unique(torch.stack([dataset.group, dataset.user]), dim=1)  # distinct (group, user) pairs
    users = torch.bincount(group_user[0], minlength=group_count)  # [G]
    present = dataset.label_mask.double()
    label_sums = _sum_by_group(dataset.labels.double() * present, dataset.group, group_count)  # [G, L]
    label_counts = _sum_by_group(present, dataset.group, group_count)  # [G, L]
    masked = _sum_by_group(1.0 - present, dataset.group, group_count)  # [G, L]

    frame = pd.DataFrame({"group": [*groups, "all"]})
    for index, split in enumerate(SPLITS):
        frame[f"rows_{split}"] = [*rows[:, index].tolist(), int(rows[:, index].sum())]
    frame["rows"] = [*rows.sum(dim=1).tolist(), len(dataset)]
    frame["users_with_rows"] = [*users.tolist(), int(torch.unique(dataset.user).numel())]
    for column, behaviour in enumerate(behaviours):
        statistic = "mean" if dataset.schema.behaviours[behaviour] == "regression" else "rate"
        sums = [*label_sums[:, column].tolist(), float(label_sums[:, column].sum())]
        counts = [*label_counts[:, column].tolist(), float(label_counts[:, column].sum())]
        frame[f"{behaviour}_{statistic}"] = [total / count if count else float("nan")
                                             for total, count in zip(sums, counts)]
    for column, behaviour in enumerate(behaviours):
        if masked[:, column].sum() > 0:
            frame[f"{behaviour}_masked"] = [*masked[:, column].long().tolist(), int(masked[:, column].sum())]
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
