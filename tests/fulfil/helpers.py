"""Shared helpers of the tools tests: the `fulfil` CLI run as a subprocess."""

from __future__ import annotations

import subprocess
import sys


def fulfil(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`python -m fulfil ARGS` with `env` (see the `env_for_subprocess` fixture); output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "fulfil", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
