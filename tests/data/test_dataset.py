"""Dataset.without_inputs (data.hidden_inputs): named inputs disappear from the schema and the tensors, nothing
else moves, an unknown name is a config error, and a model builds on what is left."""

from __future__ import annotations

import pytest
import torch

from mfh_cli.config import compose
from mfh_cli.data import load_dataset
from mfh_cli.errors import ConfigError
from mfh_cli.models import build_model


def _dataset(*overrides: str):
    return load_dataset(compose(["data.rows=2000", *overrides]))


def test_hidden_inputs_leave_the_schema_and_the_tensors():
    full = _dataset()
    hidden = _dataset("data.hidden_inputs=[context,item_tag]")
    assert "context" not in hidden.schema.dense and "item_tag" not in hidden.schema.categorical
    assert hidden.dense.shape[1] == full.dense.shape[1] - 1
    assert hidden.categorical.shape[1] == full.categorical.shape[1] - 1
    kept_dense = [full.schema.dense.index(name) for name in hidden.schema.dense]
    kept_categorical = [list(full.schema.categorical).index(name) for name in hidden.schema.categorical]
    assert torch.equal(hidden.dense, full.dense[:, kept_dense])
    assert torch.equal(hidden.categorical, full.categorical[:, kept_categorical])
    for name in ("labels", "label_mask", "group", "split", "user", "oracle"):
        assert torch.equal(getattr(hidden, name), getattr(full, name)), name


def test_a_model_builds_on_the_inputs_left():
    cfg = compose(["data.rows=2000", "data.hidden_inputs=[context]", "model=mfh"])
    dataset = load_dataset(cfg)
    model = build_model(cfg, dataset.schema)
    outputs = model(dataset.categorical[:8], dataset.dense[:8], dataset.group[:8])
    assert outputs.shape == (8, len(cfg.tasks.behaviours))


def test_unknown_hidden_input_is_a_config_error():
    with pytest.raises(ConfigError, match=r"data.hidden_inputs: nosuch not an input of 'synthetic' \(it has "):
        _dataset("data.hidden_inputs=[nosuch]")
