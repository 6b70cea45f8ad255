"""`wait_out`: what a service does at start while its broker or database is away."""

from __future__ import annotations

import asyncio

import pytest

from fulfil_platform.transient import is_transient, wait_out


class WrappedError(Exception):
    """Stands for a driver wrapper such as the migration runner's DB-API errors."""


def _wrapped(cause: BaseException) -> WrappedError:
    try:
        raise WrappedError(str(cause)) from cause
    except WrappedError as exc:
        return exc


def test_a_wrapper_is_as_transient_as_what_it_wraps() -> None:
    assert is_transient(_wrapped(ConnectionRefusedError(111, "refused")))
    assert not is_transient(_wrapped(ValueError("a bug")))
    assert not is_transient(ValueError("a bug"))


async def test_transient_failures_are_waited_out() -> None:
    failures = [
        ConnectionResetError(104, "reset"),
        _wrapped(ConnectionRefusedError(111, "refused")),
    ]
    retries: list[int] = []

    async def step() -> str:
        if failures:
            raise failures.pop(0)
        return "started"

    result = await wait_out(
        step, asyncio.Event(), what="start", on_retry=lambda exc, n: retries.append(n)
    )
    assert result == "started" and retries == [1, 2]


async def test_a_bug_is_raised_not_retried() -> None:
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await wait_out(step, asyncio.Event(), what="start")
    assert calls == 1


async def test_stop_ends_the_wait() -> None:
    stop = asyncio.Event()

    async def step() -> None:
        stop.set()  # SIGTERM arrives while the database is away
        raise ConnectionRefusedError(111, "refused")

    assert await wait_out(step, stop, what="start") is None
