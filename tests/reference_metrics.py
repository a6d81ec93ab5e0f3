"""Independent reference computations the metric tests compare against (scikit-learn, plain loops)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def per_user_gauc(scores: np.ndarray, labels: np.ndarray, users: np.ndarray) -> tuple[float | None, float | None,
                                                                                      int, int]:
    """gAUC (weighted by rows, and unweighted), users used and skipped: a loop over users with scikit-learn."""
    aucs, weights, skipped = [], [], 0
    for user in np.unique(users):
        rows = users == user
        if len(np.unique(labels[rows])) < 2:
            skipped += 1
            continue
        aucs.append(roc_auc_score(labels[rows], scores[rows]))
        weights.append(int(rows.sum()))
    if not aucs:
        return None, None, 0, skipped
    return float(np.average(aucs, weights=weights)), float(np.mean(aucs)), len(aucs), skipped
