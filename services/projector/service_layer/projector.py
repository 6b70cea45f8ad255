"""`fulfil projector`: fold allocations.v1 and the inputs it needs into PostgreSQL.

Raw aiokafka, not a FastStream subscriber, on purpose: the offsets live in
PostgreSQL, and FastStream's consume loop (0.7) advances the in-memory fetch
position even when the handler fails, offers no hook to pause fetching while
PostgreSQL is down, and gives the rebalance listener no consumer to seek
with before the database answers. Driving aiokafka directly (as the
allocator core does) keeps those three guarantees in ~one screen of code.

Exactly once: every batch is applied in one transaction that also stores
the next offset per partition (service_layer.apply). On assignment the
partitions are paused until their offsets are read from PostgreSQL, then
sought to. Each transaction first row-locks and compares the stored offsets
with this process's positions; if they differ (another instance, a commit
whose acknowledgement was lost, or a `fulfil rebuild` that swapped the
schema) nothing is written and the partitions are re-sought from the stored
offsets. That one check is how a running projector learns about a rebuild.

Resilience: when PostgreSQL fails, the batch is kept, every partition is
paused (the consumer keeps polling, so it stays in its group), and the
transaction is retried with capped exponential backoff; `healthy` turns
False (and the health file says so) until a transaction succeeds again.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import ConsumerRebalanceListener, TopicPartition
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from fulfil import kafka
from fulfil.config import Settings
from fulfil.dlq import dead_letter_headers
from fulfil.logs import get_logger
from fulfil.metrics import Health, Progress, serving, watch_lag
from schemas.registry import ALLOCATIONS, INVENTORY, ORDERS
from services.projector.adapters import store as pg
from services.projector.adapters.migrate import migrate
from services.projector.adapters.store import StalePositions, Store
from services.projector.service_layer.apply import (
    Decoded,
    apply_isolating,
    decode_batch_interleaved,
)
from services.projector.service_layer.resilience import BACKOFF, is_transient, poison_reason

log = get_logger("projector")

GROUP_ID = "fulfil-projector"
LIVE_SCHEMA = "projection"
INPUT_TOPICS = (ALLOCATIONS, ORDERS, INVENTORY)
# Unexpected (non-connection) database errors are retried a few times — a
# schema swap can surface as one — then the projector stops with exit 1.
MAX_UNEXPECTED_FAILURES = 5
# Records per batch (one transaction): per-batch costs (round trips, commit,
# statement planning) are shared by more events; ~100-200 ms of work each.
MAX_RECORDS = 10_000
FETCH_BYTES_PER_PARTITION = 4 * 1024 * 1024


class _Stopping(Exception):
    """Shutdown was requested while waiting for PostgreSQL."""


class _Listener(ConsumerRebalanceListener):
    def __init__(self, projector: Projector):
        self.projector = projector

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Waits for an in-flight transaction: a partition is handed over only
        # after its last batch has committed or rolled back.
        async with self.projector.lock:
            for tp in revoked:
                self.projector.positions.pop((tp.topic, tp.partition), None)
                self.projector.unpositioned.discard(tp)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        # No seek yet: PostgreSQL may be down. Paused partitions fetch nothing
        # until the main loop has read their offsets and sought to them.
        if assigned:
            self.projector.consumer.pause(*assigned)
            self.projector.unpositioned.update(assigned)


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
        self.lock = asyncio.Lock()
        self.positions: dict[tuple[str, int], int] = {}
        self.unpositioned: set[TopicPartition] = set()
        # Bumped whenever the consumer is sought back to `positions`: a batch
        # fetched before that is stale (its records will be fetched again).
        self.generation = 0
        self.poll_lock = asyncio.Lock()
        self.store: Store | None = None
        self.consumer: Any = None
        self.stop_event = asyncio.Event()
        self.healthy = True
        self.unhealthy_reason: str | None = None
        self.unexpected_failures = 0
        # Counters for operators and tests.
        self.batches = 0
        self.records = 0
        self.events = 0
        self.skipped = 0
        self.duplicates = 0
        self.quarantined = 0
        self.retries = 0
        self.repositions = 0
        self.started = asyncio.Event()

    # ------------------------------------------------------------ run

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until `stop` is set (or SIGTERM/SIGINT in the main thread): the batch
        in flight commits or rolls back, then the consumer leaves its group."""
        if stop is not None:
            self.stop_event = stop
        self._write_health()
        await self._retrying(self._migrate, "migrate")
        with contextlib.suppress(Exception):
            # Best effort: Tansu would auto-create missing topics with 4 partitions.
            await kafka.create_topics(self.settings, [*self.topics, self.dlq_topic])
        self.producer = kafka.producer(self.settings)
        await self.producer.start()
        self.consumer = kafka.consumer(
            self.settings,
            group_id=self.group_id,
            # Paused while PostgreSQL is down we still poll, but leave room anyway.
            max_poll_interval_ms=600_000,
            # One fetch fills a whole batch even when one partition holds all the
            # backlog (1 MB per partition capped batches at ~2.7 k events).
            max_partition_fetch_bytes=max(
                FETCH_BYTES_PER_PARTITION, self.settings.fulfil_max_message_bytes + 64 * 1024
            ),
        )
        self.consumer.subscribe(self.topics, listener=_Listener(self))
        await self.consumer.start()
        lag_stop = asyncio.Event()
        lag_watcher = asyncio.create_task(watch_lag(self.progress, lambda: self.consumer, lag_stop), name="projector-lag")
        log.info("projector started", schema=self.schema, topics=self.topics, group=self.group_id)
        # One batch is decoded while the previous one is in its transaction:
        # PostgreSQL works on one core while Python decodes on the other. The
        # decoding yields every few records, so it fills each of the transaction's
        # round trips rather than just the first one.
        pending: asyncio.Task[None] | None = None
        try:
            while not self.stop_event.is_set():
                if self.unpositioned:
                    pending = await self._settle(pending)
                    await self._retrying(self._position, "read offsets")
                generation = self.generation
                async with self.poll_lock:
                    batches = await self.consumer.getmany(timeout_ms=200, max_records=self.max_records)
                if batches:
                    for records in batches.values():
                        self.progress.consumed(records[0].topic, len(records))
                    decoded = await decode_batch_interleaved(
                        [r for records in batches.values() for r in records],
                        self.settings.fulfil_topic_prefix,
                        self.settings.fulfil_max_message_bytes,
                    )
                    pending = await self._settle(pending)
                    pending = asyncio.create_task(self._apply(decoded, generation))
                elif pending is not None and pending.done():
                    pending = await self._settle(pending)
                self.started.set()
            pending = await self._settle(pending)  # graceful: the batch in flight commits
        except _Stopping:
            pass
        finally:
            if pending is not None:
                with contextlib.suppress(_Stopping):
                    await pending
            lag_stop.set()
            await lag_watcher
            await self.consumer.stop()  # leaves the group: a successor takes over at once
            with contextlib.suppress(Exception):
                await self.producer.stop()
            if self.store is not None:
                with contextlib.suppress(Exception):
                    await self.store.conn.close()
            log.info("projector stopped", batches=self.batches, events=self.events, skipped=self.skipped)

    @staticmethod
    async def _settle(task: asyncio.Task[None] | None) -> None:
        """Wait for the batch in flight; its failure (if fatal) stops the projector."""
        if task is not None:
            await task
        return None

    async def _migrate(self) -> None:
        applied = await asyncio.to_thread(migrate, self.database_url, self.schema)
        if applied:
            log.info("migrations applied", schema=self.schema, migrations=applied)

    async def _connected(self) -> Store:
        if self.store is None or self.store.conn.is_closed():
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

    # ------------------------------------------------------------ positions

    async def _position(self) -> None:
        async with self.lock:
            assigned = self.consumer.assignment()
            wanted = [tp for tp in self.unpositioned if tp in assigned]
            self.unpositioned.intersection_update(assigned)
            if not wanted:
                return
            store = await self._connected()
            stored = await store.init_offsets((tp.topic, tp.partition) for tp in wanted)
            for tp in wanted:
                self.positions[(tp.topic, tp.partition)] = stored[(tp.topic, tp.partition)]
                self.unpositioned.discard(tp)
            self._rewind()
            self.consumer.resume(*wanted)
            log.info(
                "partitions positioned",
                partitions=sorted(f"{tp.topic}:{tp.partition}@{stored[(tp.topic, tp.partition)]}" for tp in wanted),
            )

    def _rewind(self) -> None:
        """Seek every positioned partition to its applied position; batches fetched
        before now are dropped (generation) and their records fetched again."""
        for tp in self.consumer.assignment():
            offset = self.positions.get((tp.topic, tp.partition))
            if offset is not None:
                self.consumer.seek(tp, offset)
        self.generation += 1

    def _reposition_all(self) -> None:
        """Forget every position: the main loop re-reads them from PostgreSQL."""
        assigned = self.consumer.assignment()
        self.positions.clear()
        if assigned:
            self.consumer.pause(*assigned)
            self.unpositioned.update(assigned)
        self.generation += 1
        self.repositions += 1

    # ------------------------------------------------------------ batches

    async def _apply(self, decoded: Decoded, generation: int) -> None:
        async def attempt() -> None:
            async with self.lock:
                if generation != self.generation:
                    return  # fetched before a rewind: its records come again
                store = await self._connected()
                try:
                    applied = await apply_isolating(
                        store, decoded, self.positions, lambda tp, offset, exc: self._quarantine(decoded, tp, offset, exc)
                    )
                except StalePositions as exc:
                    log.warning("stored offsets moved; re-reading them", partitions=len(exc.stored))
                    self._reposition_all()
                    return
                if applied is None:
                    return
                self.positions.update(applied.offsets)
                self.batches += 1
                self.records += applied.records
                self.events += applied.events
                self.duplicates += applied.duplicates
                self.skipped += decoded.skipped

        with self.progress.batch():
            await self._retrying(attempt, "apply batch")

    async def _quarantine(self, decoded: Decoded, tp: tuple[str, int], offset: int, exc: BaseException) -> None:
        """Dead-letter one record the read models cannot hold, as it came, with the
        reason in headers; returns once the broker has it (its offset is stored next)."""
        record = decoded.source(tp, offset)
        reason = poison_reason(exc)
        headers = dead_letter_headers(
            reason=reason, kind="unstorable", topic=tp[0], partition=tp[1], offset=offset,
            stage="projector", original=getattr(record, "headers", ()),
        )  # fmt: skip
        sent = await self.producer.send(self.dlq_topic, record.value, key=getattr(record, "key", None), headers=headers)
        await sent
        self.quarantined += 1
        # Where and why only: the value may hold customer data.
        log.warning(
            "record quarantined", topic=tp[0], partition=tp[1], offset=offset, reason=reason, dlq=self.dlq_topic
        )

    # ------------------------------------------------------------ retries & health

    async def _retrying(self, operation: Any, what: str) -> None:
        retrying = AsyncRetrying(
            wait=BACKOFF,
            retry=retry_if_exception(self._should_retry),
            sleep=self._wait_paused,
            before_sleep=lambda state: self._on_failure(state, what),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if self.stop_event.is_set() and not self.healthy:
                    raise _Stopping()
                await operation()
        self.unexpected_failures = 0
        if not self.healthy:
            self._set_health(True, None)
            log.info("database step succeeded again; projection resumed")

    def _should_retry(self, exc: BaseException) -> bool:
        if isinstance(exc, _Stopping):
            return False
        if is_transient(exc):
            return True
        self.unexpected_failures += 1
        return isinstance(exc, Exception) and self.unexpected_failures < MAX_UNEXPECTED_FAILURES

    def _on_failure(self, state: RetryCallState, what: str) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.retries += 1
        reason = f"{what}: {type(exc).__name__}"
        if self.healthy:
            self._set_health(False, reason)
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "database step failed; consumption paused, retrying",
            operation=what,
            error=type(exc).__name__,
            detail=str(exc)[:200],
            attempt=state.attempt_number,
            retry_in_s=round(wait, 2),
        )
        # The next attempt opens a fresh connection.
        if self.store is not None:
            store, self.store = self.store, None
            if not store.conn.is_closed():
                store.conn.terminate()

    async def _wait_paused(self, seconds: float) -> None:
        """Back off without consuming: every partition is paused, but the consumer
        keeps polling so it stays in its group and rebalances still complete."""
        consumer = self.consumer
        if consumer is None:  # not subscribed yet (migrations at start)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), seconds)
            return
        assigned = consumer.assignment()
        if assigned:
            consumer.pause(*assigned)
        deadline = time.monotonic() + seconds
        try:
            while not self.stop_event.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                async with self.poll_lock:
                    fetched = await consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000) or 1)
                if fetched:  # paused, so never expected; but never skip records silently
                    self._rewind()
        finally:
            ready = [tp for tp in consumer.assignment() if (tp.topic, tp.partition) in self.positions]
            if ready:
                consumer.resume(*ready)

    def _set_health(self, healthy: bool, reason: str | None) -> None:
        self.healthy = healthy
        self.unhealthy_reason = reason
        self.progress.set_unhealthy(None if healthy else reason)
        self._write_health()

    def _write_health(self) -> None:
        if self.health_file is None:
            return
        body = orjson.dumps(
            {
                "healthy": self.healthy,
                "reason": self.unhealthy_reason,
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
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    tune_gc()
    log.info("projector configuration", settings=settings.loggable())
    health = Health()
    progress = health.add(Progress("projector", settings.fulfil_ready_stall_seconds))
    async with serving(health, settings.fulfil_metrics_host, settings.fulfil_metrics_port):
        await Projector(settings, health_file=health_file, max_records=max_records, progress=progress).run(stop)
