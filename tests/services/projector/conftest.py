"""Projector fixtures: settings pointing at a database of the test's own."""

from __future__ import annotations

import pytest

from fulfil_platform.config import Settings


@pytest.fixture
def pg_settings(settings: Settings, test_database: str) -> Settings:
    """The shared broker (unique topic prefix) and a fresh database."""
    return settings.model_copy(update={"database_url": test_database})
