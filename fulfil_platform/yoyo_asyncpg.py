"""A minimal DB-API 2.0 facade over asyncpg, so yoyo-migrations needs no psycopg.

yoyo drives a synchronous DB-API driver; the project ships only asyncpg. Each
facade connection owns a private event loop and runs asyncpg on it, so
callers run migrations on a worker thread, never on a running loop. Only what
yoyo's PostgreSQL backend uses is implemented (see fulfil_platform.yoyo_runner).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import asyncpg

apilevel = "2.0"
threadsafety = 1
paramstyle = "numeric"  # yoyo rewrites its ":name" parameters to ":1", ":2", ... for us


class Error(Exception):
    pass


class DatabaseError(Error):
    pass


class OperationalError(DatabaseError):
    """The server could not be reached (retryable)."""


# ":1" placeholders (yoyo) become "$1" (asyncpg); "::type" casts and "12:30" are left alone.
_NUMERIC = re.compile(r"(?<![:\w]):(\d+)\b")
_ROW_RETURNING = ("select", "with", "values", "show", "table")


class Cursor:
    def __init__(self, connection: Connection):
        self._connection = connection
        self._rows: list[tuple[Any, ...]] = []
        self.description: list[tuple[Any, ...]] | None = None
        self.rowcount = -1

    def execute(self, sql: str, params: Any = ()) -> None:
        args = list(params or ())
        if args:
            sql = _NUMERIC.sub(lambda m: f"${m.group(1)}", sql)
        rows, names = self._connection.run(sql, args)
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


class Connection:
    autocommit = True  # yoyo's PostgreSQL backend sends BEGIN / COMMIT itself

    def __init__(self, dsn: str, server_settings: dict[str, str] | None = None):
        self._loop = asyncio.new_event_loop()
        try:
            self._conn: asyncpg.Connection = self._loop.run_until_complete(
                asyncpg.connect(dsn, server_settings=server_settings, timeout=10)
            )
        except (OSError, TimeoutError, asyncpg.PostgresConnectionError) as exc:
            self._loop.close()
            raise OperationalError(str(exc)) from exc

    def run(self, sql: str, args: list[Any]) -> tuple[list[Any], list[str]]:
        """Execute one statement; returns its rows and column names."""

        async def run() -> tuple[list[Any], list[str]]:
            if args or sql.lstrip().lower().startswith(_ROW_RETURNING):
                statement = await self._conn.prepare(sql)
                rows = await statement.fetch(*args)
                return rows, [a.name for a in statement.get_attributes()]
            await self._conn.execute(sql)  # nothing to bind or fetch: no prepare round trip
            return [], []

        try:
            return self._loop.run_until_complete(run())
        except asyncpg.PostgresError as exc:
            raise DatabaseError(str(exc)) from exc
        except (OSError, asyncpg.InterfaceError) as exc:
            raise OperationalError(str(exc)) from exc

    def cursor(self) -> Cursor:
        return Cursor(self)

    def commit(self) -> None:  # autocommit: yoyo sends COMMIT as SQL
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        if not self._loop.is_closed():
            try:
                self._loop.run_until_complete(self._conn.close(timeout=5))
            except Exception:  # noqa: BLE001 - closing a broken connection
                self._conn.terminate()
            self._loop.close()


def connect(dsn: str, server_settings: dict[str, str] | None = None) -> Connection:
    return Connection(dsn, server_settings)
