"""The SPEC §3 loss on a 4-row batch computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mfh_cli.models.loss import elementwise_loss, multitask_loss

KINDS = ["regression", "binary"]
OUTPUTS = torch.tensor([[0.5, 0.0], [1.0, 2.0], [0.0, -1.0], [0.2, 0.0]])
LABELS = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.5, 1.0], [0.0, 0.0]])
MASK = torch.tensor([[True, True], [True, False], [False, True], [True, True]])


def log_loss(logit: float, label: float) -> float:
    probability = 1 / (1 + math.exp(-logit))
    return -(label * math.log(probability) + (1 - label) * math.log(1 - probability))


def test_elementwise_loss_is_squared_error_on_the_raw_output_and_cross_entropy_on_logits():
    terms = elementwise_loss(OUTPUTS, LABELS, KINDS)
    assert terms[:, 0].tolist() == pytest.approx([0.25, 1.0, 0.25, 0.04])
    assert terms[:, 1].tolist() == pytest.approx([log_loss(0, 1), log_loss(2, 0), log_loss(-1, 1), log_loss(0, 0)])


def test_masked_weighted_loss_divides_by_the_number_of_active_terms():
    weights = torch.tensor([2.0, 1.0])
    active_terms = [2 * 0.25, log_loss(0, 1), 2 * 1.0, log_loss(-1, 1), 2 * 0.04, log_loss(0, 0)]
    loss = multitask_loss(elementwise_loss(OUTPUTS, LABELS, KINDS), MASK, weights)
    assert float(loss) == pytest.approx(sum(active_terms) / 6)


def test_per_row_weights_and_zero_weights_drop_terms():
    weights = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 3.0]])  # [B, Tb]
    active_terms = [0.25, 1.0, log_loss(-1, 1), 3 * log_loss(0, 0)]
    loss = multitask_loss(elementwise_loss(OUTPUTS, LABELS, KINDS), MASK, weights)
    assert float(loss) == pytest.approx(sum(active_terms) / 4)


def test_masked_terms_never_leak_even_when_not_finite():
    terms = torch.tensor([[1.0, float("nan")], [float("inf"), 3.0]])
    mask = torch.tensor([[True, False], [False, True]])
    assert float(multitask_loss(terms, mask)) == pytest.approx(2.0)


def test_no_active_term_gives_zero_with_a_gradient_path():
    outputs = OUTPUTS.clone().requires_grad_()
    loss = multitask_loss(elementwise_loss(outputs, LABELS, KINDS), torch.zeros_like(MASK))
    loss.backward()
    assert float(loss.detach()) == 0.0 and outputs.grad.abs().sum() == 0


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="ordinal"):
        elementwise_loss(OUTPUTS, LABELS, ["regression", "ordinal"])
