"""Per-group, per-behaviour metrics (SPEC §4): MSE for regression, AUC for binary.

Shape letters: N rows, T behaviours of the task grid, G user groups.
"""

from __future__ import annotations

import torch

METRIC_OF_KIND = {"regression": "mse", "binary": "auc"}


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Area under the ROC curve by ranking (ties get their average rank); None when one class is absent."""
    positive = labels > 0.5
    n_positive = int(positive.sum())
    n_negative = positive.numel() - n_positive
    if n_positive == 0 or n_negative == 0:
        return None
    _, inverse, counts = torch.unique(scores.double(), return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    average_rank = ends - (counts.double() - 1) / 2  # 1-based rank of each tie block
    rank_sum = average_rank[inverse][positive].sum().item()
    return (rank_sum - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative)


def cell_metric(kind: str, predictions: torch.Tensor, labels: torch.Tensor) -> dict:
    """One cell: {"metric", "value", "rows", "reason"}; value None with the reason when it can't be computed."""
    metric = METRIC_OF_KIND[kind]
    rows = int(labels.numel())
    if rows == 0:
        return {"metric": metric, "value": None, "rows": 0, "reason": "no rows with this label"}
    if metric == "mse":
        return {"metric": metric, "value": float(((predictions.double() - labels.double()) ** 2).mean()),
                "rows": rows, "reason": None}
    value = auc(predictions, labels)
    if value is None:
        positives = int((labels > 0.5).sum())
        return {"metric": metric, "value": None, "rows": rows,
                "reason": f"single class ({positives} positives in {rows} rows)"}
    return {"metric": metric, "value": value, "rows": rows, "reason": None}


def group_metrics(predictions: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, group: torch.Tensor,
                  behaviours: list[str], kinds: list[str], groups: list[str]) -> dict:
    """{group: {behaviour: cell}} over rows whose label exists; predictions [N, T] from each row's own group."""
    result: dict[str, dict] = {}
    for group_index, group_name in enumerate(groups):
        in_group = group == group_index
        result[group_name] = {}
        for column, (behaviour, kind) in enumerate(zip(behaviours, kinds)):
            rows = in_group & mask[:, column]
            result[group_name][behaviour] = cell_metric(kind, predictions[rows, column], labels[rows, column])
    return result
