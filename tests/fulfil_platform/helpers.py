"""Shared helpers of the platform tests."""

from __future__ import annotations

import pytest

from fulfil_platform.config import Settings, load_settings


def settings_from_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    """`load_settings()` with exactly `env` set: every variable a Settings field reads is cleared first."""
    for name in list(Settings.model_fields):
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()
