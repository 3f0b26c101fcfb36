"""Shared fixtures: global state is reset around every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """A test that configures logging does not leak its configuration into the next."""
    yield
    structlog.reset_defaults()
