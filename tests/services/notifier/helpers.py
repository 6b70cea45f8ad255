"""Running the notifier in-process and looking into its tables."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from aiokafka import TopicPartition

from fulfil_platform import kafka
from fulfil_platform.metrics import Health
from schemas.registry import ALLOCATIONS
from services.notifier.config import NotifierSettings
from services.notifier.entrypoints.app import NotifierRuntime, run_notifier

EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")


@asynccontextmanager
async def running_notifier(
    settings: NotifierSettings, clock: Any = None, health: Health | None = None
) -> AsyncIterator[asyncio.Task[NotifierRuntime]]:
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(
        run_notifier(settings, stop, clock=clock, ready=ready, handle_signals=False, health=health)
    )
    ready_wait = asyncio.create_task(ready.wait())
    await asyncio.wait([task, ready_wait], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    ready_wait.cancel()
    if task.done():
        task.result()  # raises the start-up failure
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def outbox(settings: NotifierSettings, **where: Any) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT * FROM notifier_outbox WHERE ($1::text IS NULL OR status = $1) "
            "AND ($2::text IS NULL OR channel = $2) ORDER BY id",
            where.get("status"),
            where.get("channel"),
        )
        return [dict(r) for r in rows]
    except asyncpg.UndefinedTableError:
        return []  # the notifier has not migrated yet
    finally:
        await conn.close()


async def stored_offsets(settings: NotifierSettings) -> dict[int, int]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT partition, next_offset FROM notifier_offsets WHERE topic = $1",
            settings.topic(ALLOCATIONS),
        )
        return {r["partition"]: r["next_offset"] for r in rows}
    finally:
        await conn.close()


async def log_ends(settings: NotifierSettings) -> dict[int, int]:
    """Per-partition end of allocations.v1, from fetch high watermarks (see notes/tansu.md)."""
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        ends = {}
        for partition in range(settings.fulfil_partitions):
            tp = TopicPartition(settings.topic(ALLOCATIONS), partition)
            consumer.assign([tp])
            records = await kafka.read_range(consumer, tp, 0, timeout_ms=200)
            ends[partition] = records[-1].offset + 1 if records else 0
        return {p: e for p, e in ends.items() if e}
    finally:
        await consumer.stop()


def assert_no_pii(text: str, *names: str) -> None:
    """No email address and none of `names` anywhere in `text`."""
    found = EMAIL.findall(text)
    assert not found, f"email addresses in logs: {found[:3]}"
    for name in names:
        assert name not in text, f"customer name {name!r} in logs"
