"""Dataset.without_inputs (data.hidden_inputs): named inputs carry no information (0 on every row), the shapes and
everything else stay, an unknown name is a config error, and a model builds on it unchanged."""

from __future__ import annotations

import pytest
import torch

from mfh_cli.config import compose
from mfh_cli.data import load_dataset
from mfh_cli.errors import ConfigError
from mfh_cli.models import build_model


def _dataset(*overrides: str):
    return load_dataset(compose(["data.rows=2000", *overrides]))


def test_hidden_inputs_are_zero_and_nothing_else_moves():
    full = _dataset()
    hidden = _dataset("data.hidden_inputs=[context,item_tag]")
    assert hidden.schema == full.schema
    context, tag = full.schema.dense.index("context"), list(full.schema.categorical).index("item_tag")
    assert full.dense[:, context].abs().sum() > 0 and (full.categorical[:, tag] > 0).all()
    assert (hidden.dense[:, context] == 0).all() and (hidden.categorical[:, tag] == 0).all()
    others_dense = [i for i in range(full.dense.shape[1]) if i != context]
    others_categorical = [i for i in range(full.categorical.shape[1]) if i != tag]
    assert torch.equal(hidden.dense[:, others_dense], full.dense[:, others_dense])
    assert torch.equal(hidden.categorical[:, others_categorical], full.categorical[:, others_categorical])
    for name in ("labels", "label_mask", "group", "split", "user", "oracle"):
        assert torch.equal(getattr(hidden, name), getattr(full, name)), name


def test_a_model_keeps_its_initialisation_on_hidden_inputs():
    outputs = []
    for hidden in ("[]", "[context]"):
        cfg = compose(["data.rows=2000", f"data.hidden_inputs={hidden}", "model=mfh"])
        dataset = load_dataset(cfg)
        torch.manual_seed(0)
        model = build_model(cfg, dataset.schema).eval()
        outputs.append((model, dataset))
    (full_model, full), (hidden_model, hidden) = outputs
    for (name, a), (_, b) in zip(full_model.state_dict().items(), hidden_model.state_dict().items()):
        assert torch.equal(a, b), name
    rows = slice(0, 64)
    same = full_model(full.categorical[rows], full.dense[rows], full.group[rows])
    blind = hidden_model(hidden.categorical[rows], hidden.dense[rows], hidden.group[rows])
    assert same.shape == blind.shape and not torch.equal(same, blind)  # the input made a difference


def test_unknown_hidden_input_is_a_config_error():
    with pytest.raises(ConfigError, match=r"data.hidden_inputs: nosuch not an input of 'synthetic' \(it has "):
        _dataset("data.hidden_inputs=[nosuch]")
