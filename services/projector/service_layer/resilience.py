"""Which failures are caused by a record's data (quarantine it), and how to name them.

Which failures are worth waiting out is the consumer runtime's one classifier,
fulfil_platform.consumer.is_transient.
"""

from __future__ import annotations

from decimal import InvalidOperation

import asyncpg

# SQLSTATEs of one record's data that PostgreSQL will never store, however often
# it is retried: class 22 (data exception: 22021 invalid byte sequence such as a
# NUL, 22003 numeric out of range, 22008 datetime overflow, ...) and the
# per-row integrity checks (23502 not null, 23514 check).
_POISON_STATES = frozenset({"23502", "23514"})


def is_poison(exc: BaseException) -> bool:
    """A failure caused by the data of the batch, not by the database's state:
    retrying the same records can only fail again, so the record that causes it
    is isolated and quarantined. Connection loss and the like are never poison."""
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] == "22" or state in _POISON_STATES
    # Raised while encoding a value for PostgreSQL (or folding it), before any I/O:
    # a timestamp whose UTC form is before year 1, an integer beyond 64 bits, a
    # price that is no number (allocation events are not checked against the
    # contract's patterns again: the allocator wrote them).
    return isinstance(exc, (OverflowError, UnicodeError, InvalidOperation))


def poison_reason(exc: BaseException) -> str:
    """One line for the dead-letter headers: the error's kind, never the values
    (a driver's message may quote them, and they may be customer data)."""
    state = getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None
    kind = type(exc).__name__ + (f" (SQLSTATE {state})" if state else "")
    return f"the read models cannot store this record: {kind}"
