"""The notifier's schema migrations, with yoyo-migrations over asyncpg.

Runs on the shared yoyo plumbing (fulfil_platform.yoyo_runner), whose job is synchronous,
so `apply_migrations` runs it on a worker thread and works from inside any
running event loop.

The projector shares the database and uses yoyo too: our migration ids start
with `notifier_`, and our applied-migrations table is our own, so the two
services never see each other's migrations.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fulfil_platform.yoyo_runner import apply

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
MIGRATION_TABLE = "_yoyo_notifier_migration"
MIGRATION_LOCK = 0x6E6F746966696572  # "notifier" in ASCII: the advisory lock key


async def apply_migrations(url: str) -> list[str]:
    """Apply the notifier's pending migrations; returns the ids applied."""
    return await asyncio.to_thread(
        apply, url, MIGRATIONS_DIR, migration_table=MIGRATION_TABLE, lock_key=MIGRATION_LOCK
    )
