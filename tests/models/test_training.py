"""Training a few hundred steps on the simulator lowers the loss, for every model."""

from __future__ import annotations

import pytest
import torch

from mfh_cli.data.synthetic import simulate
from mfh_cli.models import build_model, elementwise_loss, multitask_loss
from tests.models.model_helpers import MODELS, TINY, config

STEPS, BATCH = 200, 256


@pytest.fixture(scope="module")
def simulated():
    return simulate(config("data.rows=6000").data).select("train")


def loss_on(model, data, columns) -> float:
    model.eval()
    with torch.no_grad():
        outputs = model(data.categorical, data.dense, data.group)
        value = multitask_loss(elementwise_loss(outputs, data.labels[:, columns], model.kinds),
                               data.label_mask[:, columns])
    model.train()
    return float(value)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_training_lowers_the_loss(simulated, name):
    torch.manual_seed(0)
    cfg = config(f"model={name}", *TINY)
    model = build_model(cfg, simulated.schema)
    columns = simulated.behaviour_columns(list(cfg.tasks.behaviours))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    before = loss_on(model, simulated, columns)
    generator = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        rows = torch.randint(0, len(simulated), (BATCH,), generator=generator)
        outputs = model(simulated.categorical[rows], simulated.dense[rows], simulated.group[rows])
        loss = multitask_loss(elementwise_loss(outputs, simulated.labels[rows][:, columns], model.kinds),
                              simulated.label_mask[rows][:, columns])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = loss_on(model, simulated, columns)
    assert after < 0.95 * before, (before, after)
