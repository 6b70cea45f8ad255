"""Apply a directory of SQL migrations with yoyo-migrations, over asyncpg.

The plumbing under each service's own `adapters/migrate.py`, which names its
migrations directory, schema and history table.

yoyo runs on the asyncpg DB-API facade (fulfil_platform.yoyo_asyncpg), so the project
needs no second PostgreSQL driver. Everything here is synchronous: async
callers run `apply` in a thread.

Services share one database, so each names its own yoyo history table and/or
its own schema, and never sees another's migrations.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from yoyo import read_migrations
from yoyo.backends.core.postgresql import PostgresqlBackend
from yoyo.connections import parse_uri
from yoyo.migrations import MigrationList, default_migration_table

from fulfil_platform import yoyo_asyncpg

DEFAULT_MIGRATION_TABLE = default_migration_table
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_schema_name(schema: str) -> str:
    # Identifiers cannot be bound as parameters: only plain lower-case names pass.
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    return schema


def advisory_lock_key(name: str) -> int:
    """A stable PostgreSQL advisory lock key (a signed bigint) for `name`."""
    # Not hash(): the key must agree between processes.
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class AsyncpgBackend(PostgresqlBackend):  # type: ignore[misc]  # yoyo is untyped
    """yoyo's PostgreSQL backend on the asyncpg facade, under an advisory lock.

    With a `schema`, the connection's search_path is that schema, so yoyo's
    own tables live in it and every schema carries its own history.
    """

    driver_module = yoyo_asyncpg.__name__
    _is_locked: bool = False  # yoyo sets it per instance; declared for the checker

    def __init__(
        self,
        dsn: str,
        *,
        lock_key: int,
        schema: str | None = None,
        migration_table: str = DEFAULT_MIGRATION_TABLE,
    ):
        # Set before super().__init__(), which connects.
        self._dsn = dsn
        self._schema = schema
        self._lock_key = lock_key
        super().__init__(_yoyo_uri(dsn, schema), migration_table)

    def connect(self, dburi: Any) -> yoyo_asyncpg.Connection:
        self.schema = None  # the search_path is set at connection start instead
        settings = {"search_path": self._schema} if self._schema else None
        return yoyo_asyncpg.connect(self._dsn, settings)

    def begin(self) -> None:
        # The base class asks psycopg for the transaction status; yoyo's own
        # bookkeeping (`_in_transaction`) is enough to keep BEGINs unnested.
        super(PostgresqlBackend, self).begin()

    def copy(self) -> AsyncpgBackend:
        return type(self)(
            self._dsn,
            lock_key=self._lock_key,
            schema=self._schema,
            migration_table=self.migration_table,
        )

    @contextmanager
    def lock(self, timeout: int = 10) -> Iterator[None]:
        """A session advisory lock instead of yoyo's lock row.

        yoyo's row outlives a process killed mid-migration and then blocks
        every later start; an advisory lock dies with its connection.
        """
        if self._is_locked:
            yield
            return
        self.execute("SELECT pg_advisory_lock(:key)", {"key": self._lock_key})
        self._is_locked = True
        try:
            yield
        finally:
            self._is_locked = False
            self.execute("SELECT pg_advisory_unlock(:key)", {"key": self._lock_key})


def _yoyo_uri(dsn: str, schema: str | None) -> Any:
    # yoyo parses the URI only for its own records; asyncpg always gets the original
    # (which may name a Unix socket in its query string, beyond yoyo's parser).
    parts = urlsplit(dsn)
    fragment = f"#{schema}" if schema else ""
    try:
        return parse_uri(f"postgresql://{parts.netloc or 'localhost'}{parts.path or '/'}{fragment}")
    except Exception:  # noqa: BLE001 - any odd netloc: a placeholder is as good
        return parse_uri(f"postgresql://localhost/fulfil{fragment}")


def read_sql_migrations(migrations_dir: str | Path) -> MigrationList:
    migrations = read_migrations(str(migrations_dir))
    # A migrations package's __init__.py (there so wheels ship the .sql files)
    # is not a migration.
    for migration in [m for m in migrations if m.id.startswith("__")]:
        migrations.remove(migration)
    return migrations


def _ensure_schema(dsn: str, schema: str) -> None:
    conn = yoyo_asyncpg.connect(dsn)
    try:
        conn.run(f'CREATE SCHEMA IF NOT EXISTS "{schema}"', [])
    except yoyo_asyncpg.DatabaseError as exc:
        if "already exists" not in str(exc):  # created concurrently by another process
            raise
    finally:
        conn.close()


def apply(
    dsn: str,
    migrations_dir: str | Path,
    schema: str | None = None,
    *,
    migration_table: str = DEFAULT_MIGRATION_TABLE,
    lock_key: int | None = None,
) -> list[str]:
    """Apply the pending migrations in `migrations_dir`; returns the ids applied.

    With a `schema`, it is created if needed and migrated, history included;
    without, the connection's default search_path decides. Concurrent callers
    with the same `lock_key` (by default one per schema and history table)
    take turns.
    """
    if schema is not None:
        check_schema_name(schema)
        _ensure_schema(dsn, schema)
    if lock_key is None:
        lock_key = advisory_lock_key(f"{schema or ''}.{migration_table}")
    backend = AsyncpgBackend(dsn, lock_key=lock_key, schema=schema, migration_table=migration_table)
    try:
        backend.init_database()
        migrations = read_sql_migrations(migrations_dir)
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return [m.id for m in pending]
    finally:
        backend.connection.close()
