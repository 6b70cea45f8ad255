"""`pg_ctl restart -m immediate` under a running projector: in the middle of a
transaction, and while it idles after commits PostgreSQL had not yet flushed
(the projector commits with synchronous_commit=off). Nothing lost, nothing
doubled: the read model equals the clean fold, and the projector recovers
without a restart of its own."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.faults.chaos import private_postgres
from tests.kafka_helpers import publish, wait_for
from tests.services.projector import reference
from tests.services.projector.helpers import (
    assert_tables_equal,
    dump,
    failed,
    normalise_reference,
    publish_scenario,
    running,
    scenario,
    stored_offsets,
    topic_ends,
    wait_caught_up,
)
from tests.services.projector.test_crash import _in_transaction


@pytest.fixture
def restartable_postgres():
    """A PostgreSQL of this test's own: restarting it must not disturb other tests."""
    with private_postgres() as postgres:
        yield postgres


async def _slow_wal_writer(url: str) -> None:
    """Asynchronous commits reach the WAL on disk only every 10 s: an immediate restart
    then reliably loses the last commits (rows and offsets together)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def test_postgres_restarts_lose_and_double_nothing(settings, restartable_postgres) -> None:
    postgres = restartable_postgres
    await _slow_wal_writer(postgres.url)
    pg_settings = settings.model_copy(update={"database_url": postgres.url})
    inputs, outputs = scenario(3_000, seed=41)
    half_in, half_out = len(inputs) // 2, len(outputs) // 2
    await publish_scenario(pg_settings, inputs[:half_in], outputs[:half_out])

    async with running(pg_settings, max_records=100) as projector:
        # 1. In the middle of a transaction: it rolls back, the batch is read again.
        watcher = await asyncpg.connect(postgres.url)
        try:
            await wait_for(
                lambda: _in_transaction(watcher),
                timeout=60,
                interval=0.001,
                what="a projector transaction",
            )
        finally:
            await watcher.close()
        await asyncio.to_thread(postgres.restart_immediate)
        await publish(pg_settings, inputs[half_in:])
        await publish(pg_settings, outputs[half_out:])
        await wait_caught_up(pg_settings, timeout=180, check=lambda: failed(projector))

        # 2. While idle, right after commits that were not flushed: they are lost with
        # the offsets, and the projector must apply those records again unprompted.
        ends = await topic_ends(pg_settings)
        await asyncio.to_thread(postgres.restart_immediate)
        lost = await stored_offsets(postgres.url)
        assert any(lost.get(tp, 0) < end for tp, end in ends.items() if end), (
            "the restart lost nothing"
        )
        await wait_caught_up(pg_settings, timeout=180, check=lambda: failed(projector))

        async def ready() -> bool:
            failed(projector)
            return projector.progress.ready()[0]

        await wait_for(ready, timeout=60, what="the projector to be ready again")

    assert_tables_equal(
        await dump(postgres.url), normalise_reference(reference.fold(inputs, outputs))
    )
