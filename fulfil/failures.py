"""What `fulfil` says when a command fails, and its exit code (README "Exit codes").

0 ok, 2 usage or configuration error, 1 anything else (3: the allocator core
refuses a snapshot that does not match the log). An operator gets one line
naming what to look at, never an exception class or a traceback;
`FULFIL_DEBUG=1` shows the traceback instead (fulfil/cli.py).

A server that cannot be reached is named by what the operator configured
(`KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL`), or else by the address the
failed connection names. Which server failed is read from the exception
chain: aiokafka's connection errors, or an OS-level error raised inside the
PostgreSQL driver (asyncpg, or the migrations' DB-API facade over it).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_ADDRESS = re.compile(r"\('([^']+)', (\d+)")
_POSTGRES_MODULES = ("asyncpg", "yoyo", "fulfil_platform.yoyo_asyncpg")
_KAFKA_MODULES = ("aiokafka", "faststream")
# asyncpg's errors for a server that answers but will not let us in: a setting is wrong.
_REFUSED_BY_POSTGRES = (
    "InvalidCatalogNameError",  # the database does not exist
    "InvalidPasswordError",
    "InvalidAuthorizationSpecificationError",  # no such role, pg_hba.conf
)
# Errors of a PostgreSQL that is not there (or not yet, or not any more).
_POSTGRES_AWAY = ("CannotConnectNowError", "ConnectionDoesNotExistError", "OperationalError")


@dataclass(frozen=True)
class Failure:
    code: int
    message: str


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)


def _modules(tb: TracebackType | None) -> Iterator[str]:
    while tb is not None:
        yield str(tb.tb_frame.f_globals.get("__name__", ""))
        tb = tb.tb_next


def _raised_in(exc: BaseException, packages: tuple[str, ...]) -> bool:
    return any(
        module == package or module.startswith(package + ".")
        for module in _modules(exc.__traceback__)
        for package in packages
    )


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _address_in(exc: BaseException) -> str | None:
    found = _ADDRESS.search(str(exc))
    return f"{found.group(1)}:{found.group(2)}" if found else None


def postgres_address(url: str | None) -> str | None:
    """host:port of a PostgreSQL URL (the socket directory for a Unix socket); no credentials."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port or 5432
    except ValueError:
        return None
    host = parts.hostname or next(iter(parse_qs(parts.query).get("host", [])), None)
    if not host:
        return None
    return host if host.startswith("/") else f"{host}:{port}"


def _unreachable(exc: OSError) -> bool:
    """No answer at all: refused, timed out, no route, no such host."""
    return isinstance(exc, (TimeoutError, socket.gaierror)) or bool(exc.errno)


def _kafka(chain: list[BaseException], environ: Mapping[str, str]) -> Failure | None:
    for exc in chain:
        if "KafkaConnectionError" in _names(exc) or (
            isinstance(exc, OSError) and _raised_in(exc, _KAFKA_MODULES)
        ):
            where = environ.get("KAFKA_BOOTSTRAP_SERVERS") or _address_in(exc) or "the broker"
            return Failure(
                EXIT_FAILED,
                f"Kafka at {where} is not reachable (KAFKA_BOOTSTRAP_SERVERS; "
                "`fulfil dev up` starts a local broker)",
            )
    return None


def _postgres(chain: list[BaseException], environ: Mapping[str, str]) -> Failure | None:
    for exc in reversed(chain):  # the root cause first: a wrapper says less
        names = _names(exc)
        in_driver = _raised_in(exc, _POSTGRES_MODULES)
        if not in_driver:
            continue
        where = postgres_address(environ.get("DATABASE_URL")) or _address_in(exc) or "DATABASE_URL"
        if names & set(_REFUSED_BY_POSTGRES):
            # The server answered: the URL names a database or user it does not have.
            return Failure(
                EXIT_USAGE,
                f"invalid DATABASE_URL: PostgreSQL at {where} refused the connection: {exc}",
            )
        if isinstance(exc, OSError) and exc.errno is None and not _unreachable(exc):
            # The server answered and hung up (it rejected the SSL upgrade sslmode asked for,
            # ...): its own words say why.
            return Failure(EXIT_FAILED, f"PostgreSQL at {where} refused the connection: {exc}")
        if isinstance(exc, OSError) or names & set(_POSTGRES_AWAY):
            return Failure(
                EXIT_FAILED,
                f"PostgreSQL at {where} is not reachable (DATABASE_URL; "
                "`fulfil dev up` starts a local PostgreSQL)",
            )
    return None


def explain(exc: BaseException, environ: Mapping[str, str]) -> Failure | None:
    """A failure an operator can act on, as one line and an exit code; None when unexpected."""
    chain = list(_chain(exc))
    return _postgres(chain, environ) or _kafka(chain, environ)
