"""Apply the projector's SQL migrations to one schema with yoyo-migrations.

yoyo runs on a small asyncpg DB-API facade (adapters.yoyo_asyncpg), so the
project needs no second PostgreSQL driver; it is synchronous, and async
callers run `migrate` in a thread. Each schema keeps its own yoyo history
(yoyo's tables live in the schema it migrates, selected by the connection's
search_path), so the rebuild's shadow schema is migrated from scratch and
swapped in with a complete history, and the notifier's yoyo tables (in its
own schema, under its own table name) never meet ours.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from yoyo import read_migrations
from yoyo.backends.core.postgresql import PostgresqlBackend
from yoyo.connections import parse_uri
from yoyo.migrations import default_migration_table

from services.projector.adapters import yoyo_asyncpg

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_schema_name(schema: str) -> str:
    # Identifiers cannot be bound as parameters: only plain lower-case names pass.
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    return schema


class _Backend(PostgresqlBackend):
    """yoyo's PostgreSQL backend on the asyncpg facade, pinned to one schema."""

    driver_module = yoyo_asyncpg.__name__

    def __init__(self, dsn: str, schema: str):
        self._dsn = dsn
        self._schema = schema
        super().__init__(_uri_for_yoyo(dsn, schema), default_migration_table)

    def connect(self, dburi: Any) -> yoyo_asyncpg.Connection:
        self.schema = None  # the search_path is set at connection start instead
        return yoyo_asyncpg.connect(self._dsn, {"search_path": self._schema})

    def begin(self) -> None:
        # The base class asks psycopg for the transaction status; yoyo's own
        # bookkeeping is enough to keep BEGINs unnested.
        super(PostgresqlBackend, self).begin()

    def copy(self) -> _Backend:
        return type(self)(self._dsn, self._schema)


def _uri_for_yoyo(dsn: str, schema: str) -> Any:
    # yoyo parses the URI only for its own records; asyncpg gets the original.
    parts = urlsplit(dsn)
    try:
        return parse_uri(f"postgresql://{parts.netloc or 'localhost'}{parts.path or '/'}#{schema}")
    except Exception:  # noqa: BLE001 - an odd netloc: a placeholder is as good
        return parse_uri(f"postgresql://localhost/fulfil#{schema}")


def _migrations() -> Any:
    migrations = read_migrations(str(MIGRATIONS_DIR))
    # The package's __init__.py is not a migration.
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


def migrate(database_url: str, schema: str) -> list[str]:
    """Create `schema` if needed and apply pending migrations; returns the ids applied."""
    check_schema_name(schema)
    _ensure_schema(database_url, schema)
    backend = _Backend(database_url, schema)
    backend.init_database()
    try:
        migrations = _migrations()
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return [m.id for m in pending]
    finally:
        backend.connection.close()
