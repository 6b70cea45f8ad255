"""The environment a `fulfil` subprocess reads, built from test settings."""

from __future__ import annotations

import os

from fulfil_platform.config import Settings


def settings_as_env(settings: Settings) -> dict[str, str]:
    """os.environ with `settings` as the environment variables a `fulfil` process reads."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        key = name.upper()
        if value is None:
            env.pop(key, None)  # an inherited value must not override the test's choice
        else:
            secret = getattr(value, "get_secret_value", None)
            env[key] = secret() if secret else str(value)
    return env
