"""Per-cell, per-behaviour metrics (SPEC §4): every metric the registry (`mfh_cli/tasks.py`) holds for the
behaviour's kind, on the cell's rows. A cell of the run is a user group (× scenario on a three-facet grid).

Computed in numpy: its SIMD argsort and boolean selection are several times faster than torch's on CPU.
Shape letters: N rows, T behaviours of the task grid.
"""

from __future__ import annotations

import numpy as np
import torch

from mfh_cli.tasks import PRIMARY, metrics_of


def _numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


NO_LABEL = "no rows with this label"


def cell_metric(kind: str, predictions: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                users: torch.Tensor | np.ndarray | None = None, empty_reason: str = NO_LABEL) -> dict:
    """One cell: the primary metric as {"metric", "value", "rows", "reason"} (and, for binary, "positives": the
    report flags cells with too few of either class), plus "values": {metric: {"value", "reason", ...facts}}
    for every registered metric of `kind`; a value is None with its reason when it can't be computed
    (`empty_reason` when the cell has no row)."""
    predictions, labels = _numpy(predictions), _numpy(labels)
    users = np.zeros(labels.size, dtype=np.int64) if users is None else _numpy(users)
    rows = int(labels.size)
    values = {}
    for entry in metrics_of(kind):
        if rows:
            result = entry.compute(predictions, labels, users)
            values[entry.name] = {"value": result.value, "reason": result.reason, **result.facts}
        else:
            values[entry.name] = {"value": None, "reason": empty_reason}
    primary = values[PRIMARY[kind]]
    cell = {"metric": PRIMARY[kind], "value": primary["value"], "rows": rows}
    if kind == "binary" and rows:
        cell["positives"] = int((labels > 0.5).sum())
    return {**cell, "reason": primary["reason"], "values": values}


def group_metrics(predictions: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, group: torch.Tensor,
                  behaviours: list[str], kinds: list[str], groups: list[str],
                  users: torch.Tensor | None = None, split: str = "test") -> dict:
    """{cell name: {behaviour: cell}} over rows whose label exists: `group` [N] is each row's index into the run's
    cells `groups` (the user groups on a two-facet grid); predictions [N, T] from each row's own cell's towers,
    `users` [N] each row's user id (for gAUC; None: one user). A cell without a row says why in the words of its
    cause: the group has no row in `split` (the rows' split name), or every row's label is missing there."""
    # Column-major copies make each behaviour's column contiguous for the selections below.
    predictions, labels = np.asfortranarray(_numpy(predictions)), np.asfortranarray(_numpy(labels))
    mask, group = np.asfortranarray(_numpy(mask)), _numpy(group)
    users = np.zeros(group.size, dtype=np.int64) if users is None else _numpy(users)
    result: dict[str, dict] = {}
    for group_index, group_name in enumerate(groups):
        in_group = group == group_index
        group_rows = int(in_group.sum())
        result[group_name] = {}
        for column, (behaviour, kind) in enumerate(zip(behaviours, kinds)):
            rows = in_group & mask[:, column]
            empty = (f"no {behaviour} label in this group's {group_rows:,} {split} rows (all masked)" if group_rows
                     else f"no rows of this group in the {split} split")
            result[group_name][behaviour] = cell_metric(kind, predictions[rows, column], labels[rows, column],
                                                        users[rows], empty)
    return result
