"""Metrics against scikit-learn on a fixed prediction set; single-class cells reported as missing."""

import torch
from sklearn.metrics import mean_squared_error, roc_auc_score

from mfh_cli.engine.metrics import auc, cell_metric, group_metrics


def test_auc_matches_sklearn_with_ties():
    generator = torch.Generator().manual_seed(3)
    labels = (torch.rand(5000, generator=generator) < 0.3).float()
    scores = torch.round(torch.randn(5000, generator=generator) + labels, decimals=1)  # many ties
    assert abs(auc(scores, labels) - roc_auc_score(labels.numpy(), scores.numpy())) < 1e-12


def test_single_class_is_missing_with_reason():
    cell = cell_metric("binary", torch.tensor([0.1, 0.4, 0.2]), torch.zeros(3))
    assert cell["value"] is None
    assert "single class" in cell["reason"] and "0 positives in 3 rows" in cell["reason"]
    assert cell["positives"] == 0 and cell["rows"] == 3
    assert cell_metric("regression", torch.empty(0), torch.empty(0))["reason"] == "no rows with this label"


def test_group_metrics_per_group_and_mask():
    generator = torch.Generator().manual_seed(0)
    n = 3000
    group = torch.randint(0, 3, (n,), generator=generator)
    labels = torch.stack([torch.rand(n, generator=generator), (torch.rand(n, generator=generator) < 0.4).float()], 1)
    predictions = labels + 0.5 * torch.randn(n, 2, generator=generator)
    mask = torch.rand(n, 2, generator=generator) > 0.1
    result = group_metrics(predictions, labels, mask, group, ["cmpl", "finish"], ["regression", "binary"],
                           ["new", "low", "high"])
    for index, name in enumerate(["new", "low", "high"]):
        for column, (behaviour, reference) in enumerate([("cmpl", mean_squared_error),
                                                          ("finish", roc_auc_score)]):
            rows = (group == index) & mask[:, column]
            arguments = (labels[rows, column].numpy(), predictions[rows, column].numpy())
            assert abs(result[name][behaviour]["value"] - reference(*arguments)) < 1e-7  # sklearn works in float32
            assert result[name][behaviour]["rows"] == int(rows.sum())
        finish = (group == index) & mask[:, 1]
        assert result[name]["finish"]["positives"] == int(labels[finish, 1].sum())  # the report's small-cell flag
        assert "positives" not in result[name]["cmpl"]
