"""The model zoo (SPEC §1–3): parts, trees, the nine models, the loss and `mfh model describe`."""

from mfh_cli.models.loss import elementwise_loss, multitask_loss
from mfh_cli.models.zoo import MultiTaskModel, build_model

__all__ = ["MultiTaskModel", "build_model", "elementwise_loss", "multitask_loss"]
