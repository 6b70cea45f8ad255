"""Infrastructure trouble worth waiting out (a broker or database that is away), told
apart from a bug or bad data, and a step retried until that trouble passes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from aiokafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
)
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from fulfil_platform.consumer_ports import Fenced
from fulfil_platform.logs import get_logger

# The logger name it had inside the consumer runtime, so log queries keep finding it.
log = get_logger("platform.consumer")

_T = TypeVar("_T")

# SQLSTATE classes that mean "the database is (temporarily) not there or busy":
# 08 connection, 53 insufficient resources, 57 operator intervention (shutdown,
# crash recovery), 40 rollback (serialization, deadlock), 55 lock not available.
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "40", "55"})


def is_transient(exc: BaseException) -> bool:
    """Infrastructure trouble worth waiting out (broker or database away), not a bug or bad data."""
    if isinstance(exc, Fenced):
        return True
    if isinstance(exc, (OSError, TimeoutError, ConnectionError, asyncpg.InterfaceError)):
        return True
    if isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False)) or isinstance(
            exc,
            (
                KafkaTimeoutError,
                KafkaConnectionError,
                NodeNotReadyError,
                RequestTimedOutError,
                CommitFailedError,
            ),
        )
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] in _TRANSIENT_SQLSTATE_CLASSES
    # A wrapper (the migration runner's DB-API errors) is as transient as what it wraps.
    cause = exc.__cause__
    return cause is not None and cause is not exc and is_transient(cause)


STARTUP_BACKOFF = wait_exponential_jitter(multiplier=0.2, max=10.0, jitter=0.2)


async def wait_out(
    step: Callable[[], Awaitable[_T]],
    stop: asyncio.Event,
    *,
    what: str,
    max_unexpected: int = 1,
    on_retry: Callable[[BaseException, int], None] | None = None,
) -> _T | None:
    """Run `step` until it succeeds, waiting out a broker or database that is away.

    A service starting while PostgreSQL restarts or the broker is unreachable
    must wait, not exit: that would stall it behind an orchestrator's back-off.
    Transient failures are retried with exponential backoff and jitter for as
    long as it takes; other failures up to `max_unexpected` attempts in all,
    then the last one is raised. Returns None if `stop` is set meanwhile."""
    unexpected = 0

    def retry(exc: BaseException) -> bool:
        nonlocal unexpected
        if is_transient(exc):
            return True
        unexpected += 1
        return isinstance(exc, Exception) and unexpected < max_unexpected

    async def pause(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    def failed(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        assert exc is not None
        log.warning(
            f"{what} failed; retrying",
            error=type(exc).__name__,
            detail=str(exc)[:200],
            attempt=state.attempt_number,
        )
        if on_retry is not None:
            on_retry(exc, state.attempt_number)

    async for attempt in AsyncRetrying(
        wait=STARTUP_BACKOFF,
        retry=retry_if_exception(retry),
        sleep=pause,
        before_sleep=failed,
        reraise=True,
    ):
        with attempt:
            if stop.is_set():
                return None
            return await step()
    return None  # pragma: no cover - AsyncRetrying either returns from the block or raises
