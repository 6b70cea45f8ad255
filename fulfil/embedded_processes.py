"""The local server processes of the embedded runtime (`fulfil.embedded`): free ports,
readiness waits and stopping a server by PID."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import psutil
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

T = TypeVar("T")

LOOPBACK = "127.0.0.1"

MISSING_EXTRA = "the embedded runtime is not installed: pip install 'fulfil[embedded]'"


class EmbeddedError(RuntimeError):
    """The embedded runtime could not do what was asked; the message is one line."""


class PortInUse(EmbeddedError):
    """A freshly picked port was taken before the server could bind it."""


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on the loopback that is free right now (the caller may still lose a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1
) -> None:
    """Poll `check` until it returns True; exceptions it raises abort the wait at once."""
    poll = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(interval),
        retry=retry_if_result(lambda ready: not ready),
    )
    try:
        poll(check)
    except RetryError:
        raise EmbeddedError(f"{what} not ready after {timeout:g}s") from None


def _run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    # A private thread gets its own event loop, so this works whether or not the
    # caller (e.g. pytest-asyncio's session loop) already has one in this thread.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fulfil-probe") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _log_tail(path: Path, start: int = 0, lines: int = 3) -> str:
    try:
        with path.open("rb") as log:
            log.seek(start)
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


# Popen objects of servers started by this process, so stopping them also reaps
# them (otherwise they linger as zombies that psutil still reports as existing).
_spawned: dict[int, subprocess.Popen[bytes]] = {}


def _is_gone(pid: int) -> bool:
    child = _spawned.get(pid)
    if child is not None:
        return child.poll() is not None
    try:
        # PID 1 on these machines reaps orphans lazily: a zombie counts as stopped.
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _terminate(pid: int, *, timeout: float, what: str) -> None:
    """SIGTERM, then SIGKILL after `timeout`, for one PID; returns once it is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        with contextlib.suppress(EmbeddedError):
            wait_until(lambda: _is_gone(pid), timeout=timeout, what=what, interval=0.05)
            _spawned.pop(pid, None)
            return
    raise EmbeddedError(f"{what} (pid {pid}) survived SIGKILL")
