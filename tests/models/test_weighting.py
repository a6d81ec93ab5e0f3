"""Loss weighting (models/weighting.py): fixed is the SPEC §3 loss unchanged; uncertainty (Kendall et al. 2018)
learns one log-variance per task cell, moves it the expected way, and trains the same for the same seed."""

from __future__ import annotations

import pytest
import torch

from mfh_cli.config import compose
from mfh_cli.data.synthetic import simulate
from mfh_cli.engine.loop import build_trainer
from mfh_cli.errors import ConfigError
from mfh_cli.models.loss import multitask_loss
from mfh_cli.models.weighting import LossWeighting, UncertaintyWeighting, build_weighting, task_weights

GROUPS, BEHAVIOURS, KINDS = ["new", "low", "high"], ["cmpl", "finish", "skip"], ["regression", "binary", "binary"]
OVERRIDES = ["data.rows=3000", "model=shared_bottom", "trainer.batch_size=256", "trainer.max_epochs=1"]


def terms(rows: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random per-row losses [B, 3], a mask with some terms off, and groups."""
    generator = torch.Generator().manual_seed(seed)
    elementwise = torch.rand(rows, 3, generator=generator) * 2
    mask = torch.rand(rows, 3, generator=generator) > 0.2
    return elementwise, mask, torch.arange(rows) % 3


def test_fixed_is_the_spec_loss_with_the_task_weights():
    cfg = compose(["+trainer.task_weights.finish=2.0", "+trainer.task_weights.skip_new=0"])
    weights = task_weights(cfg, GROUPS, BEHAVIOURS)
    weighting = build_weighting(cfg, GROUPS, BEHAVIOURS, KINDS)
    assert type(weighting) is LossWeighting and not list(weighting.parameters())
    elementwise, mask, group = terms()
    assert torch.equal(weighting(elementwise, mask, group), multitask_loss(elementwise, mask, weights[group]))
    record = weighting.record()
    assert record["method"] == "fixed"
    assert record["tasks"]["finish_low"] == {"weight": 2.0} and record["tasks"]["skip_new"] == {"weight": 0.0}


def test_uncertainty_at_zero_log_variance_is_kendalls_form():
    cfg = compose(["trainer.weighting=uncertainty"])
    weighting = build_weighting(cfg, GROUPS, BEHAVIOURS, KINDS)
    assert isinstance(weighting, UncertaintyWeighting)
    with torch.no_grad():
        weighting.log_variance.copy_(torch.tensor([[0.5, -1.0, 0.0], [0.2, 0.3, -0.4], [1.0, 0.0, 2.0]]))
    elementwise, mask, group = terms()
    s = weighting.log_variance[group]
    # regression: 0.5·exp(−s)·L + 0.5·s; binary: exp(−s)·L + 0.5·s; then the masked mean over active terms.
    factor = torch.tensor([0.5, 1.0, 1.0])
    expected = torch.where(mask, factor * torch.exp(-s) * elementwise + 0.5 * s, 0).sum() / mask.sum()
    torch.testing.assert_close(weighting(elementwise, mask, group), expected)
    record = weighting.record()
    assert record["method"] == "uncertainty"
    assert record["tasks"]["skip_high"] == {"weight": round(float(torch.exp(torch.tensor(-2.0))), 6),
                                            "log_variance": 2.0}


def test_unknown_weighting_is_a_config_error():
    with pytest.raises(ConfigError, match="trainer.weighting"):
        compose(["trainer.weighting=gradnorm"])


@pytest.fixture(scope="module")
def dataset():
    return simulate(compose(OVERRIDES).data)


def steps(cfg, dataset, count: int):
    """`count` training steps of the config's trainer on the first rows; the trainer."""
    trainer = build_trainer(cfg, dataset)
    train = trainer.splits["train"]
    trainer.model.train()
    for step in range(count):
        trainer.train_step(train.rows(slice(step * 256, step * 256 + 256)), epoch=1)
    return trainer


def test_uncertainty_weights_train_and_the_larger_loss_gets_the_smaller_weight(dataset):
    # Scale one cell's loss up tenfold through its task weight: the optimum exp(−s) = 1 / (c·L) falls, so the
    # learned weight of finish_high must fall below that of finish_low; both start at 1 (s = 0). SGD, whose steps
    # follow the gradient's size (Adam's would move every s by about lr a step, whatever the weight).
    cfg = compose([*OVERRIDES, "trainer.weighting=uncertainty", "trainer.optimizer=sgd", "trainer.lr=0.05",
                   "+trainer.task_weights.finish_high=10"])
    trainer = steps(cfg, dataset, 10)
    s = trainer.weighting.log_variance.detach()
    assert not torch.equal(s, torch.zeros_like(s)), "the log-variances did not train"
    high, low = GROUPS.index("high"), GROUPS.index("low")
    finish = BEHAVIOURS.index("finish")
    # d/ds [w·exp(−s)·L + 0.5·s] = 0.5 − w·exp(−s)·L: positive (s rises, weight falls) where w·L > 0.5.
    assert s[high, finish] > 0 and s[high, finish] > s[low, finish]
    # The log-variances are part of the optimizer's flat tensor.
    assert trainer.flat_parameters.values.numel() == sum(p.numel() for p in trainer.model.parameters()) + s.numel()


def test_uncertainty_training_is_deterministic_per_seed(tmp_path, dataset):
    from mfh_cli.engine.run import train

    cfg = compose([*OVERRIDES, "trainer.weighting=uncertainty", "trainer.progress=false"])
    first = train(cfg, results_dir=tmp_path / "a", quiet=True)
    second = train(cfg, results_dir=tmp_path / "b", quiet=True)
    assert first.metrics["loss_weights"] == second.metrics["loss_weights"]
    assert first.metrics["metrics"] == second.metrics["metrics"]
    assert first.metrics["validation_losses"] == second.metrics["validation_losses"]
    weights = first.metrics["loss_weights"]
    assert weights["method"] == "uncertainty"
    assert any(entry["log_variance"] != 0 for entry in weights["tasks"].values())
    fixed = train(compose([*OVERRIDES, "trainer.progress=false"]), results_dir=tmp_path / "c", quiet=True)
    assert fixed.metrics["loss_weights"]["tasks"]["cmpl_new"] == {"weight": 1.0}


def test_a_non_finite_masked_term_reaches_no_gradient():
    weighting = build_weighting(compose(["trainer.weighting=uncertainty"]), GROUPS, BEHAVIOURS, KINDS)
    elementwise, mask, group = terms()
    elementwise[0, 0], mask[0, 0] = float("inf"), False
    weighting(elementwise, mask, group).backward()
    assert torch.isfinite(weighting.log_variance.grad).all()
