"""Schema migrations with yoyo-migrations, over asyncpg.

yoyo drives a synchronous DB-API driver, and the project ships only asyncpg
(no psycopg). So yoyo gets a minimal DB-API 2.0 facade whose connections
each own a private event loop and run asyncpg on it. `apply_migrations` runs
the whole yoyo job on a worker thread, so it works from inside any running
event loop. Only what yoyo's PostgreSQL backend uses is implemented.

The projector shares the database and may use yoyo too: our migration ids
start with `notifier_`, and our applied-migrations table is our own, so the
two services never see each other's migrations.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from yoyo import read_migrations
from yoyo.backends.core.postgresql import PostgresqlBackend
from yoyo.connections import parse_uri

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
MIGRATION_TABLE = "_yoyo_notifier_migration"
MIGRATION_LOCK = 0x6E6F746966696572  # "notifier" in ASCII: the advisory lock key

# --------------------------------------------------------------- DB-API facade

apilevel = "2.0"
threadsafety = 1
paramstyle = "numeric"  # yoyo rewrites its ":name" parameters to ":1", ":2", … for us


class Error(Exception):
    pass


class DatabaseError(Error):
    pass


# ":1" placeholders (yoyo) become "$1" (asyncpg); "::type" casts and "12:30" are left alone.
_NUMERIC = re.compile(r"(?<![:\w]):(\d+)\b")
_ROW_RETURNING = ("select", "with", "values", "show", "table")


class _Cursor:
    def __init__(self, connection: _Connection):
        self._connection = connection
        self._rows: list[tuple[Any, ...]] = []
        self.description: list[tuple[Any, ...]] | None = None
        self.rowcount = -1

    def execute(self, sql: str, params: Any = ()) -> None:
        if params:
            sql = _NUMERIC.sub(lambda m: f"${m.group(1)}", sql)
            args = list(params)
        else:
            args = []
        rows, names = self._connection._run(sql, args)
        self._rows = [tuple(r) for r in rows]
        self.rowcount = len(self._rows)
        self.description = [(n, None, None, None, None, None, None) for n in names] or None

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows, []
        return rows

    def close(self) -> None:
        self._rows = []


class _Connection:
    autocommit = True  # yoyo's PostgreSQL backend issues BEGIN/COMMIT itself

    def __init__(self, dsn: str):
        self._loop = asyncio.new_event_loop()
        self._conn: asyncpg.Connection = self._loop.run_until_complete(asyncpg.connect(dsn))

    def _run(self, sql: str, args: list[Any]) -> tuple[list[Any], list[str]]:
        async def run() -> tuple[list[Any], list[str]]:
            if args or sql.lstrip().lower().startswith(_ROW_RETURNING):
                statement = await self._conn.prepare(sql)
                rows = await statement.fetch(*args)
                return rows, [a.name for a in statement.get_attributes()]
            await self._conn.execute(sql)  # simple protocol: DDL, BEGIN, COMMIT, …
            return [], []

        try:
            return self._loop.run_until_complete(run())
        except asyncpg.PostgresError as exc:
            raise DatabaseError(str(exc)) from exc

    def cursor(self) -> _Cursor:
        return _Cursor(self)

    def commit(self) -> None:  # autocommit: yoyo sends COMMIT as SQL
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._conn.close())
            self._loop.close()


def connect(dsn: str) -> _Connection:
    return _Connection(dsn)


# --------------------------------------------------------------- yoyo backend


class AsyncpgBackend(PostgresqlBackend):
    """yoyo's PostgreSQL backend with this module as its driver."""

    driver_module = __name__

    def __init__(self, dsn: str):
        self._dsn = dsn
        super().__init__(_yoyo_uri(dsn), MIGRATION_TABLE)

    def connect(self, dburi: Any) -> _Connection:
        self.schema = None
        return connect(self._dsn)

    def begin(self) -> None:
        # The base class asks psycopg for the transaction status; yoyo's own
        # bookkeeping (`_in_transaction`) is enough to keep BEGINs unnested.
        super(PostgresqlBackend, self).begin()

    def copy(self) -> AsyncpgBackend:
        return type(self)(self._dsn)

    @contextmanager
    def lock(self, timeout: int = 10) -> Iterator[None]:
        """A session advisory lock instead of yoyo's lock row.

        yoyo's row outlives a process killed mid-migration and then blocks
        every later start; an advisory lock dies with its connection.
        """
        if self._is_locked:
            yield
            return
        self.execute("SELECT pg_advisory_lock(:key)", {"key": MIGRATION_LOCK})
        self._is_locked = True
        try:
            yield
        finally:
            self._is_locked = False
            self.execute("SELECT pg_advisory_unlock(:key)", {"key": MIGRATION_LOCK})


def _yoyo_uri(dsn: str) -> Any:
    # yoyo parses the URI only for its own records; asyncpg always gets the original
    # (which may name a Unix socket in its query string, beyond yoyo's parser).
    parts = urlsplit(dsn)
    try:
        return parse_uri(f"postgresql://{parts.netloc or 'localhost'}{parts.path or '/'}")
    except Exception:  # noqa: BLE001 - any odd netloc: a placeholder is as good
        return parse_uri("postgresql://localhost/fulfil")


def _apply(url: str) -> list[str]:
    backend = AsyncpgBackend(url)
    backend.init_database()
    try:
        migrations = read_migrations(str(MIGRATIONS_DIR))
        with backend.lock():
            todo = backend.to_apply(migrations)
            backend.apply_migrations(todo)
        return [m.id for m in todo]
    finally:
        backend.connection.close()


async def apply_migrations(url: str) -> list[str]:
    """Apply the notifier's pending migrations; returns the ids applied."""
    return await asyncio.to_thread(_apply, url)

