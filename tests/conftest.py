"""Fixtures for the whole suite."""

from __future__ import annotations

import pytest
from tests.helpers import PROTOCOLS


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    """Each case that takes it runs over HTTP/1.1 and over HTTP/2 (h2c, prior knowledge)."""
    return str(request.param)
