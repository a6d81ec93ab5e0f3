"""Fixtures of the model tests: a hand-made schema."""

from __future__ import annotations

import pytest

from mfh_cli.data.dataset import Schema
from mfh_cli.tasks import BEHAVIOURS, USER_GROUPS


@pytest.fixture
def schema() -> Schema:
    """Two categorical fields, two dense features, all seven behaviours, three groups."""
    return Schema(categorical={"user": 30, "item": 20}, dense=["duration", "popularity"],
                  behaviours=dict(BEHAVIOURS), groups=list(USER_GROUPS))
