"""`fulfil projector`: fold allocations.v1 and the inputs it needs into PostgreSQL.

It runs on the platform's consumer runtime (fulfil_platform.consumer): the
runtime polls, pauses partitions until they are recovered, retries failed
batches with backoff, reports readiness and stops gracefully; the projector
supplies its positions (offsets in PostgreSQL) and its batch handler.

Exactly once: every chunk of a batch is applied in one transaction that also
stores the next offset per partition (service_layer.apply). Recovering a
partition reads its stored offset; the runtime seeks there. Each transaction
first row-locks and compares the stored offsets with this process's
positions; if they differ (another instance, a commit whose acknowledgement
was lost, or a `fulfil rebuild` that swapped the schema) nothing is written,
the batch fails as `OffsetsMoved` and the partitions are recovered again.
That one check is how a running projector learns about a rebuild.

Positions are trusted only while the connection that stored them lives:
commits are asynchronous (synchronous_commit=off), so a PostgreSQL crash may
lose the last ones, rows and offsets together. When the connection is lost
(a failed batch, or noticed between batches) every partition is recovered
again from what PostgreSQL kept, so records whose commit was lost are applied
again even when nothing new arrives on their partition.

Failures: any failed batch is discarded whole and read again from Kafka once
its partitions are recovered; PostgreSQL being away keeps them unrecovered
(paused, `/readyz` fails, the health file says so) and recovery is retried
with capped exponential backoff for as long as it takes. Unexpected errors
are retried a few times in a row, then the projector stops with exit 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition

from fulfil_platform import kafka
from fulfil_platform.config import Settings
from fulfil_platform.consumer import Batch, ConsumerRuntime, Fenced, stop_on_signals, wait_out
from fulfil_platform.dead_letter_writer import dead_letter_headers
from fulfil_platform.logs import bound_record, get_logger
from fulfil_platform.metrics import Health, Progress, serving
from fulfil_platform.startup import wait_for_kafka
from schemas.registry import ALLOCATIONS, INVENTORY, ORDERS
from services.projector.adapters import store as pg
from services.projector.adapters.migrate import migrate
from services.projector.adapters.store import StalePositions, Store, TopicPartitionKey
from services.projector.service_layer.apply import (
    Decoded,
    apply_isolating,
    decode_batch_interleaved,
)
from services.projector.service_layer.resilience import poison_reason

log = get_logger("projector")

GROUP_ID = "fulfil-projector"
LIVE_SCHEMA = "projection"
INPUT_TOPICS = (ALLOCATIONS, ORDERS, INVENTORY)
# Unexpected (non-connection) database errors are retried a few times in a row — a
# schema swap can surface as one — then the projector stops with exit 1.
MAX_UNEXPECTED_FAILURES = 5
# Records per transaction: per-transaction costs (round trips, commit, statement
# planning) are shared by more events; ~100-200 ms of work each.
MAX_RECORDS = 10_000
# Transactions per poll: the next chunk is decoded while the previous one is in its
# transaction (PostgreSQL works on one core while Python decodes on the other).
CHUNKS_PER_POLL = 2
FETCH_BYTES_PER_PARTITION = 4 * 1024 * 1024


class OffsetsMoved(Fenced):
    """The stored offsets are not this process's positions: nothing was written; the
    partitions are recovered again from PostgreSQL (a rebuild, another instance)."""


class Projector:
    def __init__(
        self,
        settings: Settings,
        *,
        schema: str = LIVE_SCHEMA,
        group_id: str | None = None,
        max_records: int = MAX_RECORDS,
        health_file: Path | None = None,
        connect_timeout: float = 5.0,
        progress: Progress | None = None,
    ):
        self.settings = settings
        self.progress = progress or Progress("projector", settings.fulfil_ready_stall_seconds)
        self.database_url = settings.require_database()
        settings.require_kafka()
        self.schema = schema
        # Prefixed like the topics: environments sharing a cluster never rebalance each other.
        self.group_id = group_id or settings.topic(GROUP_ID)
        self.max_records = max_records
        self.health_file = health_file
        self.connect_timeout = connect_timeout
        self.topics = [settings.topic(t) for t in INPUT_TOPICS]
        # Records the read models cannot hold go here, named after the group.
        self.dlq_topic = dead_letter_topic(self.group_id)
        self.producer: Any = None
        self.runtime: ConsumerRuntime | None = None
        # Next offset per recovered partition, as stored by the last transaction.
        self.positions: dict[TopicPartitionKey, int] = {}
        self.store: Store | None = None
        # A connection was lost: the positions may be ahead of what PostgreSQL kept.
        self.suspect = False
        self.written_health: tuple[bool, str | None] | None = None
        # Counters for operators and tests.
        self.batches = 0
        self.records = 0
        self.events = 0
        self.skipped = 0
        self.duplicates = 0
        self.quarantined = 0
        self.retries = 0
        self.repositions = 0

    @property
    def consumer(self) -> Any:
        return self.runtime.consumer if self.runtime is not None else None

    @property
    def unhealthy_reason(self) -> str | None:
        return self.progress.unhealthy_reason

    @property
    def healthy(self) -> bool:
        return self.unhealthy_reason is None

    # ------------------------------------------------------------ run

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until `stop` is set: the batch in flight commits or rolls back, then the
        consumer leaves its group."""
        stop = stop or asyncio.Event()
        self._sync_health()
        if not await self._migrate(stop):
            return
        if not await wait_for_kafka(self.settings, stop):
            return  # stopped before the broker answered
        with contextlib.suppress(Exception):
            # Best effort: Tansu would auto-create missing topics with 4 partitions.
            await kafka.create_topics(self.settings, [*self.topics, self.dlq_topic])
        self.producer = kafka.producer(self.settings)
        await self.producer.start()
        self.runtime = ConsumerRuntime(
            self.settings,
            name="projector",
            topics=self.topics,
            group_id=self.group_id,
            positions=self,
            handler=self.handle,
            progress=self.progress,
            max_records=self.max_records * CHUNKS_PER_POLL,
            # The offsets live in PostgreSQL; a Kafka commit per batch would only cost.
            commit_offsets=False,
            idle=self.idle,
            max_unexpected_failures=MAX_UNEXPECTED_FAILURES,
            consumer_options={
                # Unrecovered partitions are paused while we keep polling; leave room anyway.
                "max_poll_interval_ms": 600_000,
                # One fetch fills a whole batch even when one partition holds all the
                # backlog (1 MB per partition capped batches at ~2.7 k events).
                "max_partition_fetch_bytes": max(
                    FETCH_BYTES_PER_PARTITION, self.settings.fulfil_max_message_bytes + 64 * 1024
                ),
            },
        )
        log.info("projector started", schema=self.schema, topics=self.topics, group=self.group_id)
        try:
            await self.runtime.run(stop)
        finally:
            with contextlib.suppress(Exception):
                await self.producer.stop()
            if self.store is not None:
                with contextlib.suppress(Exception):
                    await self.store.conn.close()
            log.info(
                "projector stopped", batches=self.batches, events=self.events, skipped=self.skipped
            )

    async def _migrate(self, stop: asyncio.Event) -> bool:
        """Migrate the schema, waiting out PostgreSQL being away; False if stopped meanwhile."""

        async def migrate_once() -> bool:
            applied = await asyncio.to_thread(migrate, self.database_url, self.schema)
            if applied:
                log.info("migrations applied", schema=self.schema, migrations=applied)
            return True

        if not await wait_out(
            migrate_once,
            stop,
            what="migrations",
            max_unexpected=MAX_UNEXPECTED_FAILURES,
            on_retry=self._migrate_failed,
        ):
            return False
        self.progress.set_unhealthy(None)
        self._sync_health()
        return True

    def _migrate_failed(self, exc: BaseException, attempt: int) -> None:
        self.retries += 1
        self.progress.set_unhealthy(f"migrate: {type(exc).__name__}")
        self._sync_health()

    async def _connected(self) -> Store:
        if self.store is None or self.store.conn.is_closed():
            self._drop_connection()
            conn = await pg.connect(
                self.database_url, self.schema, durable=False, timeout=self.connect_timeout
            )
            store = Store(conn)
            try:
                await store.prepare()
            except BaseException:
                await conn.close()
                raise
            self.store = store
        return self.store

    def _drop_connection(self) -> None:
        """The next step opens a fresh connection; what the old one stored may be lost."""
        if self.store is None:
            return
        store, self.store = self.store, None
        self.suspect = True
        if not store.conn.is_closed():
            store.conn.terminate()

    # ------------------------------------------------------------ positions (runtime port)

    async def recover(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        try:
            store = await self._connected()
            stored = await store.init_offsets((tp.topic, tp.partition) for tp in partitions)
        except BaseException:
            self.retries += 1
            self._drop_connection()
            raise
        offsets = {}
        for tp in partitions:
            offsets[tp] = self.positions[(tp.topic, tp.partition)] = stored[
                (tp.topic, tp.partition)
            ]
        log.info(
            "partitions positioned",
            partitions=sorted(f"{tp.topic}:{tp.partition}@{o}" for tp, o in offsets.items()),
        )
        return offsets

    async def release(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.positions.pop((tp.topic, tp.partition), None)

    async def discard(self, partitions: list[TopicPartition]) -> None:
        await self.release(partitions)
        if partitions:
            self.retries += 1
            self._drop_connection()

    async def idle(self) -> None:
        """Between batches: a lost connection makes every position suspect (see the module
        docstring); recover them all again from what PostgreSQL kept."""
        if self.store is not None and self.store.conn.is_closed():
            self._drop_connection()
        if self.suspect and self.runtime is not None:
            self.suspect = False
            if self.positions:
                log.warning(
                    "database connection lost; recovering every partition from the stored offsets"
                )
                await self.runtime.recover_again()
        self._sync_health()

    # ------------------------------------------------------------ batches

    async def handle(self, batch: Batch) -> dict[TopicPartition, int]:
        """Apply the batch in chunks of `max_records`, one transaction each; the next chunk
        is decoded while the previous one is in its transaction."""
        records = [record for got in batch.records.values() for record in got]
        pending: asyncio.Task[None] | None = None
        try:
            for start in range(0, len(records), self.max_records):
                chunk = records[start : start + self.max_records]
                decoded = await decode_batch_interleaved(
                    chunk, self.settings.fulfil_topic_prefix, self.settings.fulfil_max_message_bytes
                )
                if pending is not None:
                    await pending
                pending = asyncio.create_task(self._apply(batch, decoded, chunk))
            if pending is not None:
                await pending
        finally:
            if pending is not None and not pending.done():
                with contextlib.suppress(Exception):
                    await pending
        return {
            tp: offset
            for tp in batch.records
            if (offset := self.positions.get((tp.topic, tp.partition))) is not None
        }

    async def _apply(self, batch: Batch, decoded: Decoded, chunk: Sequence[Any]) -> None:
        store = await self._connected()
        try:
            applied = await apply_isolating(
                store, decoded, self.positions,
                lambda tp, offset, exc: self._quarantine(batch, decoded, tp, offset, exc),
            )  # fmt: skip
        except StalePositions as exc:
            self.repositions += 1
            log.warning("stored offsets moved; re-reading them", partitions=len(exc.stored))
            raise OffsetsMoved(str(exc)) from exc
        if applied is None:
            return
        self.positions.update(applied.offsets)
        self.progress.count_records(chunk)
        self.batches += 1
        self.records += applied.records
        self.events += applied.events
        self.duplicates += applied.duplicates
        self.skipped += decoded.skipped

    async def _quarantine(
        self, batch: Batch, decoded: Decoded, tp: TopicPartitionKey, offset: int, exc: BaseException
    ) -> None:
        """Dead-letter one record the read models cannot hold, as it came, with the
        reason in headers; returns once the broker has it (its offset is stored next)."""
        await batch.fence()  # a member evicted while stalled must not dead-letter it too
        record = decoded.source(tp, offset)
        reason = poison_reason(exc)
        headers = dead_letter_headers(
            reason=reason, kind="unstorable", topic=tp[0], partition=tp[1], offset=offset,
            stage="projector", original=getattr(record, "headers", ()),
        )  # fmt: skip
        sent = await self.producer.send(
            self.dlq_topic, record.value, key=getattr(record, "key", None), headers=headers
        )
        await sent
        self.quarantined += 1
        self.progress.dead_lettered(self.dlq_topic, "unstorable")
        # Where, which and why only: the value may hold customer data.
        with bound_record(record):
            log.warning("record quarantined", reason=reason, dlq=self.dlq_topic)

    # ------------------------------------------------------------ health file

    def _sync_health(self) -> None:
        """Mirror readiness's failure reason into the health file, when it changed."""
        state = (self.healthy, self.unhealthy_reason)
        if self.health_file is None or state == self.written_health:
            return
        self.written_health = state
        body = orjson.dumps(
            {
                "healthy": state[0],
                "reason": state[1],
                "at": datetime.now(UTC).isoformat(),
                "pid": os.getpid(),
            }
        )
        self.health_file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=self.health_file.parent, delete=False) as tmp:
            tmp.write(body + b"\n")
        os.replace(tmp.name, self.health_file)


def dead_letter_topic(group_id: str) -> str:
    """`<group>.dlq`: the group id already carries the environment's topic prefix."""
    return f"{group_id}.dlq"


def tune_gc() -> None:
    """Process-wide GC settings for a long-running projector process.

    Each batch allocates a few hundred thousand short-lived containers (decoded
    JSON, row tuples). With CPython's defaults the cyclic collector keeps
    re-scanning every long-lived object (imported modules, clients), which
    cost more than decoding itself in profiles. Freezing the start-up heap and
    collecting the young generation less often removes most of that; the
    projector creates no reference cycles on its hot path.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def run_projector(
    settings: Settings,
    *,
    health_file: Path | None = None,
    max_records: int = MAX_RECORDS,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or `stop`)."""
    stop = stop or asyncio.Event()
    tune_gc()
    log.info("projector configuration", settings=settings.loggable())
    health = Health()
    progress = health.add(Progress("projector", settings.fulfil_ready_stall_seconds))
    async with serving(health, settings.fulfil_metrics_host, settings.fulfil_metrics_port):
        with stop_on_signals(stop):
            await Projector(
                settings, health_file=health_file, max_records=max_records, progress=progress
            ).run(stop)
