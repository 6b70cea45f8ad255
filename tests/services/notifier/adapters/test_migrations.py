"""The notifier's yoyo migrations over asyncpg: idempotent, safe to run concurrently."""

from __future__ import annotations

import asyncio

import asyncpg

from services.notifier.adapters.migrate import apply_migrations


async def test_migrations_apply_once_even_when_started_together(test_database) -> None:
    results = await asyncio.gather(*(apply_migrations(test_database) for _ in range(3)))
    assert sorted(len(r) for r in results) == [0, 0, 3]
    assert await apply_migrations(test_database) == []
    conn = await asyncpg.connect(test_database)
    try:
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert {"notifier_outbox", "notifier_offsets", "notifier_dead_letters"} <= tables
        assert not [t for t in tables if not (t.startswith(("notifier_", "_yoyo", "yoyo")))]
        # A killed migrator leaves no lock behind: the lock is a session advisory lock.
        assert await conn.fetchval("SELECT count(*) FROM yoyo_lock") == 0
    finally:
        await conn.close()
