"""Which failures are worth waiting out, and the backoff used while waiting."""

from __future__ import annotations

import asyncpg
from aiokafka.errors import KafkaError
from tenacity import wait_exponential_jitter

from fulfil import yoyo_asyncpg

# SQLSTATE classes that mean "the database is (temporarily) not there or busy":
# 08 connection, 53 insufficient resources, 57 operator intervention (shutdown,
# crash recovery), 40 rollback (serialization, deadlock), 55 lock not available.
_TRANSIENT_CLASSES = frozenset({"08", "53", "57", "40", "55"})

# Capped exponential backoff with jitter: 0.2 s, 0.4 s, ... up to 10 s.
BACKOFF = wait_exponential_jitter(multiplier=0.2, max=10.0, jitter=0.2)


# SQLSTATEs of one record's data that PostgreSQL will never store, however often
# it is retried: class 22 (data exception: 22021 invalid byte sequence such as a
# NUL, 22003 numeric out of range, 22008 datetime overflow, ...) and the
# per-row integrity checks (23502 not null, 23514 check).
_POISON_STATES = frozenset({"23502", "23514"})


def is_transient(exc: BaseException) -> bool:
    # A dead-letter publish that failed (broker away) is waited out like an outage.
    if isinstance(exc, (OSError, TimeoutError, asyncpg.InterfaceError, KafkaError)):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        # Anything else (a rebuild's schema swap under a cached plan, a bug) is
        # retried a few times by the caller, not forever.
        return state[:2] in _TRANSIENT_CLASSES
    return isinstance(exc, yoyo_asyncpg.OperationalError)


def is_poison(exc: BaseException) -> bool:
    """A failure caused by the data of the batch, not by the database's state:
    retrying the same records can only fail again, so the record that causes it
    is isolated and quarantined. Connection loss and the like are never poison."""
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] == "22" or state in _POISON_STATES
    # Raised while encoding a value for PostgreSQL (or folding it), before any I/O:
    # a timestamp whose UTC form is before year 1, an integer beyond 64 bits.
    return isinstance(exc, (OverflowError, UnicodeError))


def poison_reason(exc: BaseException) -> str:
    """One line for the dead-letter headers: the error's kind, never the values
    (a driver's message may quote them, and they may be customer data)."""
    state = getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None
    kind = type(exc).__name__ + (f" (SQLSTATE {state})" if state else "")
    return f"the read models cannot store this record: {kind}"
