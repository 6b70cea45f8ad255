"""Apply the projector's SQL migrations to one schema with yoyo-migrations.

Runs on the shared yoyo plumbing (fulfil_platform.yoyo_runner), synchronously: async
callers run `migrate` in a thread. Each schema keeps its own yoyo history
(yoyo's tables live in the schema it migrates), so the rebuild's shadow schema
is migrated from scratch and swapped in with a complete history, and the
notifier's yoyo tables (in its own schema, under its own table name) never
meet ours.
"""

from __future__ import annotations

from pathlib import Path

from fulfil_platform.yoyo_runner import apply, check_schema_name

__all__ = ["MIGRATIONS_DIR", "check_schema_name", "migrate"]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def migrate(database_url: str, schema: str) -> list[str]:
    """Create `schema` if needed and apply pending migrations; returns the ids applied."""
    return apply(database_url, MIGRATIONS_DIR, check_schema_name(schema))
