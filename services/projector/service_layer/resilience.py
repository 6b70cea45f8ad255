"""Which failures are worth waiting out, and the backoff used while waiting."""

from __future__ import annotations

import asyncpg
from tenacity import wait_exponential_jitter

from fulfil import yoyo_asyncpg

# SQLSTATE classes that mean "the database is (temporarily) not there or busy":
# 08 connection, 53 insufficient resources, 57 operator intervention (shutdown,
# crash recovery), 40 rollback (serialization, deadlock), 55 lock not available.
_TRANSIENT_CLASSES = frozenset({"08", "53", "57", "40", "55"})

# Capped exponential backoff with jitter: 0.2 s, 0.4 s, ... up to 10 s.
BACKOFF = wait_exponential_jitter(multiplier=0.2, max=10.0, jitter=0.2)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (OSError, TimeoutError, asyncpg.InterfaceError)):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        # Anything else (a rebuild's schema swap under a cached plan, a bug) is
        # retried a few times by the caller, not forever.
        return state[:2] in _TRANSIENT_CLASSES
    return isinstance(exc, yoyo_asyncpg.OperationalError)
