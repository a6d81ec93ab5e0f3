"""Metrics against scikit-learn on fixed prediction sets (and real KuaiRand rows); single-class cells reported as
missing."""

from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import log_loss, mean_squared_error, roc_auc_score

from mfh_cli.config import compose
from mfh_cli.data import load_dataset
from mfh_cli.engine.loop import prepare_splits
from mfh_cli.engine.metrics import cell_metric, group_metrics
from mfh_cli.engine.run import oracle_scores
from mfh_cli.tasks import auc_value, metrics_of
from tests.reference_metrics import per_user_gauc


def test_auc_matches_sklearn_with_ties():
    generator = torch.Generator().manual_seed(3)
    labels = (torch.rand(5000, generator=generator) < 0.3).float()
    scores = torch.round(torch.randn(5000, generator=generator) + labels, decimals=1)  # many ties
    assert abs(auc_value(scores.numpy(), labels.numpy()) - roc_auc_score(labels.numpy(), scores.numpy())) < 1e-12


def test_single_class_is_missing_with_reason():
    cell = cell_metric("binary", torch.tensor([0.1, 0.4, 0.2]), torch.zeros(3))
    assert cell["value"] is None
    assert "one class only" in cell["reason"] and "0 positives in 3 rows" in cell["reason"]
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


def test_gauc_and_logloss_match_sklearn_on_kuairand_test_rows(kuairand_dir: Path):
    dataset = load_dataset(compose(["data=kuairand"]), data_dir=kuairand_dir, cache_dir=None, quiet=True)
    behaviours = ["finish", "like"]  # a common and a rare behaviour
    test = prepare_splits(dataset, behaviours, torch.device("cpu"))["test"]
    # Deterministic predictions that vary within users: a fixed projection of the dense features plus a fixed
    # score per video id, rounded so that many rows tie.
    generator = torch.Generator().manual_seed(0)
    projection = torch.randn(test.dense.shape[1], len(behaviours), generator=generator)
    per_id = torch.randn(int(test.categorical.max()) + 1, len(behaviours), generator=generator)
    video = list(dataset.schema.categorical).index("video_id")
    predictions = torch.round(test.dense @ projection + per_id[test.categorical[:, video]], decimals=1)
    result = group_metrics(predictions, test.labels, test.mask, test.cell, behaviours, ["binary", "binary"],
                           list(dataset.schema.groups), test.user)
    users = test.user.numpy()
    assert (users == dataset.user[dataset.split == 2].numpy()).all()  # the raw user ids, row for row
    checked = 0
    for group_index, group in enumerate(dataset.schema.groups):
        for column, behaviour in enumerate(behaviours):
            rows = ((test.cell == group_index) & test.mask[:, column]).numpy()
            scores, labels = predictions[rows, column].numpy(), test.labels[rows, column].numpy()
            values = result[group][behaviour]["values"]
            weighted, unweighted, used, skipped = per_user_gauc(scores, labels, users[rows])
            assert values["gauc"]["users"] == used and values["gauc"]["users_skipped"] == skipped
            if weighted is None:
                assert values["gauc"]["value"] is None and values["gauc_unweighted"]["value"] is None
                continue
            assert abs(values["gauc"]["value"] - weighted) < 1e-9
            assert abs(values["gauc_unweighted"]["value"] - unweighted) < 1e-9
            probabilities = 1 / (1 + np.exp(-scores.astype(np.float64)))
            assert abs(values["logloss"]["value"] - log_loss(labels, probabilities, labels=[0, 1])) < 1e-9
            assert values["auc"]["value"] == result[group][behaviour]["value"]  # the primary, as before
            checked += 1
    assert checked >= 4


def test_oracle_logits_keep_the_auc_of_its_probabilities():
    """The oracle's metrics read logits (float64): on distinct float32 probabilities, the ranks and so the AUC
    are the probabilities' own, to the last bit."""
    generator = np.random.default_rng(1)
    probabilities = np.concatenate([generator.random(20000), 1e-9 * (1 + 1e-7 * np.arange(50)),
                                    1 - 2.0 ** -24 * np.arange(1, 50)]).astype(np.float32)
    labels = (generator.random(probabilities.size) < probabilities).astype(np.float32)
    logits = oracle_scores(torch.from_numpy(probabilities)[:, None], ["binary"])[:, 0].numpy()
    assert auc_value(logits, labels) == auc_value(probabilities, labels)
    regression = oracle_scores(torch.from_numpy(probabilities)[:, None], ["regression"])[:, 0].numpy()
    assert (regression == probabilities.astype(np.float64)).all()  # MSE sees the expectation unchanged


def test_every_registered_metric_of_the_kind_is_in_the_cell():
    cell = cell_metric("binary", torch.tensor([0.1, 0.4, 0.2, 3.0]), torch.tensor([0.0, 1.0, 0.0, 1.0]),
                       torch.tensor([7, 7, 8, 8]))
    assert list(cell["values"]) == [entry.name for entry in metrics_of("binary")]
    assert cell["metric"] == "auc" and cell["value"] == cell["values"]["auc"]["value"] == 1.0
    assert cell["values"]["gauc"] == {"value": 1.0, "reason": None, "users": 2, "users_skipped": 0}
    empty = cell_metric("binary", torch.empty(0), torch.empty(0), torch.empty(0, dtype=torch.int64))
    assert all(value == {"value": None, "reason": "no rows with this label"} for value in empty["values"].values())
