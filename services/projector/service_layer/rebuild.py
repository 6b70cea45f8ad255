"""`fulfil rebuild`: every read model again from offset 0, swapped in atomically.

1. A shadow schema is created and migrated from scratch (its own yoyo history).
2. A group-less consumer reads every partition of the input topics from offset
   0 and applies batches to the shadow exactly as the live projector does,
   storing the shadow's own offsets. The live schema keeps serving queries and
   a running `fulfil projector` keeps updating it meanwhile.
3. Swap, in one transaction: lock the live offsets table (a running projector's
   next batch waits), apply the last few records to the shadow, rename
   `projection` → `projection_retired` and the shadow → `projection`, commit.
   Queries running at that moment finish on the old tables; new ones see the
   new tables (PostgreSQL re-resolves names after waiting for a lock).
4. The retired schema is dropped. A running projector's next transaction finds
   the stored offsets differ from its positions and re-seeks to the rebuilt
   schema's offsets — zero downtime, no restart needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import TopicPartition

from fulfil_platform import kafka
from fulfil_platform.config import Settings
from fulfil_platform.dead_letter_writer import dead_letter_headers
from fulfil_platform.logs import bound_record, get_logger
from services.projector.adapters import store as pg
from services.projector.adapters.migrate import migrate
from services.projector.adapters.store import Store
from services.projector.service_layer.apply import apply_isolating, decode_batch
from services.projector.service_layer.projector import (
    GROUP_ID,
    INPUT_TOPICS,
    LIVE_SCHEMA,
    dead_letter_topic,
)
from services.projector.service_layer.resilience import poison_reason

log = get_logger("projector.rebuild")

SHADOW_SCHEMA = "projection_shadow"
RETIRED_SCHEMA = "projection_retired"
# pg_advisory_lock key: one rebuild at a time per database ("fulfil-rb").
REBUILD_LOCK = 0x66756C66696C7262

# The schema names are constants of this module, never input: identifiers
# cannot be bound as parameters.
_DROP_SHADOW = f'DROP SCHEMA IF EXISTS "{SHADOW_SCHEMA}" CASCADE'
_DROP_RETIRED = f'DROP SCHEMA IF EXISTS "{RETIRED_SCHEMA}" CASCADE'
_LOCK_LIVE = f'LOCK TABLE "{LIVE_SCHEMA}".projector_offsets IN EXCLUSIVE MODE'
_RETIRE_LIVE = f'ALTER SCHEMA "{LIVE_SCHEMA}" RENAME TO "{RETIRED_SCHEMA}"'
_PROMOTE_SHADOW = f'ALTER SCHEMA "{SHADOW_SCHEMA}" RENAME TO "{LIVE_SCHEMA}"'


class RebuildBusy(RuntimeError):
    """Another rebuild holds the lock."""


class HistoryTruncated(RuntimeError):
    """A source partition no longer starts at offset 0: a model rebuilt from it would
    silently lack the events retention removed."""

    def __init__(self, truncated: list[tuple[str, int, int]]):
        where = "; ".join(
            f"{topic} partition {partition} starts at offset {start}"
            for topic, partition, start in truncated
        )
        super().__init__(
            f"history is truncated ({where}): a rebuild would drop the events before it and swap "
            "the incomplete model in. Rerun with --allow-truncated to rebuild from what is left."
        )
        self.truncated = truncated


def truncated_history(starts: dict[tuple[str, int], int]) -> list[tuple[str, int, int]]:
    """(topic, partition, start) of every partition whose log starts above 0, sorted."""
    return sorted(
        (topic, partition, start) for (topic, partition), start in starts.items() if start > 0
    )


# Reads where each partition's log starts now (a seam: tests stand in for retention).
LogStarts = Callable[[Any, list[TopicPartition]], Awaitable[dict[TopicPartition, int]]]


async def _beginning_offsets(consumer: Any, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    starts: dict[TopicPartition, int] = await consumer.beginning_offsets(tps)
    return starts


@dataclass(frozen=True, slots=True)
class RebuildReport:
    records: int
    events: int
    skipped: int
    seconds: float
    offsets: dict[str, int]
    # (topic, partition, start) read from above 0 with --allow-truncated.
    truncated: list[tuple[str, int, int]] = field(default_factory=list)


Progress = Callable[[int, int | None], None]  # (records done, records known to exist)


class _Reader:
    """Every partition of the input topics from offset 0, no consumer group."""

    def __init__(self, settings: Settings, max_records: int):
        self.settings = settings
        self.max_records = max_records
        self.consumer = kafka.consumer(settings, group_id=None)
        self.producer = kafka.producer(settings)
        self.dlq_topic = dead_letter_topic(settings.topic(GROUP_ID))
        self.positions: dict[tuple[str, int], int] = {}
        self.tps: list[TopicPartition] = []

    async def start(
        self, log_starts: LogStarts, allow_truncated: bool
    ) -> list[tuple[str, int, int]]:
        """Assign every partition at the start of its log; raises HistoryTruncated when
        a log starts above 0, unless `allow_truncated` (then returns those partitions)."""
        await self.consumer.start()
        await self.producer.start()
        await self.consumer.topics()  # loads metadata for every topic
        for base in INPUT_TOPICS:
            topic = self.settings.topic(base)
            partitions = self.consumer.partitions_for_topic(topic) or set()
            self.tps.extend(TopicPartition(topic, p) for p in sorted(partitions))
        self.consumer.assign(self.tps)
        starts = await log_starts(self.consumer, self.tps) if self.tps else {}
        truncated = truncated_history(
            {(tp.topic, tp.partition): offset for tp, offset in starts.items()}
        )
        if truncated and not allow_truncated:
            raise HistoryTruncated(truncated)
        for tp in self.tps:
            start = starts.get(tp, 0)
            self.consumer.seek(tp, start)
            self.positions[(tp.topic, tp.partition)] = start
        return truncated

    async def stop(self) -> None:
        await self.consumer.stop()
        with contextlib.suppress(Exception):
            await self.producer.stop()

    async def fetch(self, timeout_ms: int = 200) -> list[Any]:
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=self.max_records)
        return [r for records in batches.values() for r in records]

    def known_total(self) -> int | None:
        """Records known to exist (high watermarks from fetches; see notes/tansu.md)."""
        total = 0
        for tp in self.tps:
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                return None
            total += max(highwater, self.positions[(tp.topic, tp.partition)])
        return total

    def caught_up(self) -> bool:
        for tp in self.tps:
            highwater = self.consumer.highwater(tp)
            if highwater is None or self.positions[(tp.topic, tp.partition)] < highwater:
                return False
        return True


async def _apply(
    store: Store, reader: _Reader, records: list[Any], settings: Settings
) -> tuple[int, int, int]:
    decoded = decode_batch(records, settings.fulfil_topic_prefix, settings.fulfil_max_message_bytes)

    async def quarantine(tp: tuple[str, int], offset: int, exc: BaseException) -> None:
        # Also dead-lettered here: the live projector continues from the rebuilt
        # offsets and may never have met this record. A record it did meet is on
        # the dead-letter topic twice, with the same source headers.
        record = decoded.source(tp, offset)
        headers = dead_letter_headers(
            reason=poison_reason(exc), kind="unstorable", topic=tp[0], partition=tp[1], offset=offset,
            stage="projector", original=record.headers,
        )  # fmt: skip
        await (
            await reader.producer.send(
                reader.dlq_topic, record.value, key=record.key, headers=headers
            )
        )
        with bound_record(record):
            log.warning("record quarantined", dlq=reader.dlq_topic)

    applied = await apply_isolating(store, decoded, reader.positions, quarantine)
    if applied is None:
        return 0, 0, 0
    reader.positions.update(applied.offsets)
    return applied.records, applied.events, decoded.skipped


async def rebuild(
    settings: Settings,
    *,
    progress: Progress | None = None,
    max_records: int = 10_000,
    swap_drain_seconds: float = 2.0,
    before_swap: Callable[[], Awaitable[None]] | None = None,
    allow_truncated: bool = False,
    log_starts: LogStarts = _beginning_offsets,
) -> RebuildReport:
    """Rebuild into the shadow schema and swap it in; `before_swap` is a seam for
    tests (run after the bulk phase, before the swap transaction).

    Refuses (HistoryTruncated, before anything is built) when a source partition's
    log starts above offset 0 (retention removed events), unless `allow_truncated`."""
    database_url = settings.require_database()
    settings.require_kafka()
    started = time.monotonic()
    admin = await asyncpg.connect(database_url)
    try:
        if not await admin.fetchval("SELECT pg_try_advisory_lock($1)", REBUILD_LOCK):
            raise RebuildBusy("another `fulfil rebuild` is running on this database")
        await admin.execute(_DROP_SHADOW)
        await admin.execute(_DROP_RETIRED)
        await asyncio.to_thread(migrate, database_url, SHADOW_SCHEMA)
        # Not durable while building (a crash restarts the rebuild anyway); the swap
        # itself is committed durably below.
        conn = await pg.connect(database_url, SHADOW_SCHEMA, durable=False)
        store = Store(conn)
        reader = _Reader(settings, max_records)
        try:
            await store.prepare()
            truncated = await reader.start(log_starts, allow_truncated)
            if truncated:
                log.warning(
                    "rebuilding from truncated history",
                    partitions=[f"{t}:{p}@{o}" for t, p, o in truncated],
                )
            await store.init_offsets(reader.positions)
            if truncated:
                # The shadow's offsets start where the logs do, not at 0.
                await store.save_offsets({(t, p): o for t, p, o in truncated})
            records = events = skipped = 0

            def report() -> None:
                if progress is not None:
                    progress(records, reader.known_total())

            # Bulk: the live schema serves (and is updated) meanwhile.
            while not reader.caught_up():
                batch = await reader.fetch()
                if batch:
                    r, e, s = await _apply(store, reader, batch, settings)
                    records, events, skipped = records + r, events + e, skipped + s
                report()
            if before_swap is not None:
                await before_swap()
            # Swap: short, in one transaction with the live projector held off.
            await conn.execute("SET synchronous_commit = on")
            async with conn.transaction():
                live_exists = await pg.schema_exists(conn, LIVE_SCHEMA)
                if live_exists:
                    await conn.execute(_LOCK_LIVE)
                deadline = time.monotonic() + swap_drain_seconds
                while not reader.caught_up() and time.monotonic() < deadline:
                    batch = await reader.fetch(timeout_ms=100)
                    if batch:
                        r, e, s = await _apply(store, reader, batch, settings)
                        records, events, skipped = records + r, events + e, skipped + s
                if live_exists:
                    await conn.execute(_RETIRE_LIVE)
                await conn.execute(_PROMOTE_SHADOW)
            report()
            log.info("rebuild swapped in", records=records, events=events, skipped=skipped)
        finally:
            await reader.stop()
            await conn.close()
        # Queries still reading the old tables finish first; the DROP waits for them.
        await admin.execute(_DROP_RETIRED)
        offsets = {f"{t}:{p}": o for (t, p), o in sorted(reader.positions.items())}
        return RebuildReport(
            records, events, skipped, time.monotonic() - started, offsets, truncated
        )
    finally:
        with contextlib.suppress(Exception):
            await admin.execute("SELECT pg_advisory_unlock_all()")
        await admin.close()
