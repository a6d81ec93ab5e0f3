"""Per-group, per-behaviour metrics (SPEC §4): MSE for regression, AUC for binary.

Computed in numpy: its SIMD argsort and boolean selection are several times faster than torch's on CPU.
Shape letters: N rows, T behaviours of the task grid.
"""

from __future__ import annotations

import numpy as np
import torch

METRIC_OF_KIND = {"regression": "mse", "binary": "auc"}


def _numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def auc(scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float | None:
    """Area under the ROC curve by ranking (ties get their average rank); None when one class is absent."""
    positive = _numpy(labels) > 0.5
    n_positive = int(positive.sum())
    n_negative = positive.size - n_positive
    if n_positive == 0 or n_negative == 0:
        return None
    values = _numpy(scores).astype(np.float32, copy=False)
    order = np.argsort(values)
    sorted_values = values[order]
    ends = np.append(np.flatnonzero(sorted_values[1:] != sorted_values[:-1]) + 1, values.size)  # tie blocks
    starts = np.concatenate(([0], ends[:-1]))
    average_rank = (starts + 1 + ends) / 2  # 1-based ranks starts+1 .. ends, averaged
    positives_before = np.concatenate(([0], np.cumsum(positive[order])[ends - 1]))
    rank_sum = float((np.diff(positives_before) * average_rank).sum())
    return (rank_sum - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative)


def cell_metric(kind: str, predictions: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> dict:
    """One cell: {"metric", "value", "rows", "reason"} and, for AUC, "positives" (the report flags cells with too
    few of either class); value None with the reason when it can't be computed."""
    metric = METRIC_OF_KIND[kind]
    predictions, labels = _numpy(predictions), _numpy(labels)
    rows = int(labels.size)
    if rows == 0:
        return {"metric": metric, "value": None, "rows": 0, "reason": "no rows with this label"}
    if metric == "mse":
        error = predictions.astype(np.float64) - labels.astype(np.float64)
        return {"metric": metric, "value": float(np.dot(error, error) / rows), "rows": rows, "reason": None}
    value = auc(predictions, labels)
    positives = int((labels > 0.5).sum())
    reason = None if value is not None else f"single class ({positives} positives in {rows} rows)"
    return {"metric": metric, "value": value, "rows": rows, "positives": positives, "reason": reason}


def group_metrics(predictions: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, group: torch.Tensor,
                  behaviours: list[str], kinds: list[str], groups: list[str]) -> dict:
    """{group: {behaviour: cell}} over rows whose label exists; predictions [N, T] from each row's own group."""
    # Column-major copies make each behaviour's column contiguous for the selections below.
    predictions, labels = np.asfortranarray(_numpy(predictions)), np.asfortranarray(_numpy(labels))
    mask, group = np.asfortranarray(_numpy(mask)), _numpy(group)
    result: dict[str, dict] = {}
    for group_index, group_name in enumerate(groups):
        in_group = group == group_index
        result[group_name] = {}
        for column, (behaviour, kind) in enumerate(zip(behaviours, kinds)):
            rows = in_group & mask[:, column]
            result[group_name][behaviour] = cell_metric(kind, predictions[rows, column], labels[rows, column])
    return result
