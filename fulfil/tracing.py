"""`fulfil trace ORDER_ID`: the reads behind `build_trace` (see fulfil.trace_build
for what is read and why no more than that).

Records are read with the platform's bounded topic reader (ends from fetch
high watermarks: Tansu's ListOffsets can be wrong) and only those whose bytes
match the pass's needles are kept, so memory stays flat on a large log; JSON
parsing happens in `build_trace`, on the few kept. Notifications come from
the notifier's own read query when DATABASE_URL is set: status, channel,
attempts, never the rendered message or the address.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from fulfil.trace_build import build_trace
from fulfil.trace_model import Entry, Trace
from fulfil.trace_passes import input_partitions, locate, outputs_of, wanted_ids
from fulfil.trace_plan import TRACED_TOPICS, Matcher, TracePlan
from fulfil.trace_records import Record
from fulfil.trace_summary import redact, summarize
from fulfil_platform import kafka
from fulfil_platform.config import Settings
from fulfil_platform.topic_reader import read_chunks
from schemas.registry import ALLOCATIONS, DLQ_SUFFIX, ORDERS

__all__ = ["Entry", "Trace", "TraceError", "TracePlan", "build_trace", "summarize", "trace_order"]

# Progress callback: (pass name, records read, records expected or None).
Progress = Callable[[str, int, int | None], None]
# Whole partitions are read: large fetches, few round trips.
_FETCH = {
    "max_partition_fetch_bytes": 16 * 1024 * 1024,
    "fetch_max_bytes": 64 * 1024 * 1024,
    "fetch_max_wait_ms": 10,
}


class TraceError(Exception):
    """The trace cannot be made (e.g. a topic is missing); one line for the operator."""


class _Scan:
    """Reads passes of partitions and keeps the records their matcher finds."""

    def __init__(self, consumer: AIOKafkaConsumer, progress: Progress):
        self.consumer = consumer
        self.progress = progress
        self.read = 0
        self.kept: list[Record] = []

    async def run(
        self, name: str, parts: list[tuple[str, int]], matcher: Callable[[str], Matcher]
    ) -> None:
        tps = [TopicPartition(topic, partition) for topic, partition in parts]
        if not tps:
            return
        done = 0
        self.progress(name, 0, None)
        try:
            async for chunk in read_chunks(
                self.consumer, dict.fromkeys(tps, 0), max_records=50_000
            ):
                for tp, records in chunk.items():
                    self.kept += matcher(tp.topic).select(records)
                    done += len(records)
                self.progress(name, done, self._expected(tps))
        except TimeoutError as exc:
            raise TraceError(f"cannot read {name}: {exc}") from None
        self.read += done

    def _expected(self, tps: list[TopicPartition]) -> int | None:
        ends = [self.consumer.highwater(tp) for tp in tps]
        return None if None in ends else sum(e or 0 for e in ends)


async def _partitions(consumer: AIOKafkaConsumer, topics: list[str]) -> dict[str, list[int]]:
    existing = await consumer.topics()
    return {t: sorted(consumer.partitions_for_topic(t) or ()) for t in topics if t in existing}


async def trace_order(
    settings: Settings,
    order_id: str,
    *,
    warehouse_id: str | None = None,
    progress: Progress | None = None,
) -> Trace:
    """Collect the order's history: three passes over the log, then the outbox."""
    started = time.monotonic()
    topics = {base: settings.topic(base) for base in TRACED_TOPICS}
    consumer = kafka.consumer(settings, group_id=None, **_FETCH)
    await consumer.start()
    try:
        names = [*topics.values(), *(t + DLQ_SUFFIX for t in topics.values())]
        plan = TracePlan(order_id, topics, await _partitions(consumer, names), warehouse_id)
        if not plan.partitions.get(topics[ORDERS]):
            raise TraceError(f"topic {topics[ORDERS]} does not exist (run `fulfil topics create`)")
        scan = _Scan(consumer, progress or (lambda name, done, total: None))
        await _read(plan, scan)
    finally:
        await consumer.stop()
    trace = build_trace(plan, scan.kept, records_read=scan.read)
    if trace.warehouse_id is not None and trace.entries:
        trace.notifications, trace.notification_note = await notifications(
            settings, trace.warehouse_id, order_id
        )
    trace.seconds = time.monotonic() - started
    return trace


async def _read(plan: TracePlan, scan: _Scan) -> None:
    """The three passes, each narrowed by what the previous ones found."""
    await scan.run("orders + dead letters", plan.first_pass(), plan.first_matcher)
    located = locate(plan, scan.kept)
    allocations = plan.topic(ALLOCATIONS)
    if located.command_partition in plan.partitions.get(allocations, []):
        await scan.run(
            "allocations",
            [(allocations, located.command_partition)],
            lambda topic: plan.mentions_order,
        )
    outputs, _ = outputs_of(plan, located, scan.kept)
    either = plan.input_matcher(wanted_ids(located, outputs))
    await scan.run("commands + inventory", input_partitions(plan, located), lambda topic: either)


async def notifications(
    settings: Settings, warehouse_id: str, order_id: str
) -> tuple[list[dict[str, Any]], str | None]:
    """The notifier's outbox rows of the order, without message or recipient; (rows, note)."""
    if not settings.database_url:
        return [], "DATABASE_URL is not set: notifications not shown"
    import asyncpg

    from services.notifier.adapters.queries import order_notifications

    try:
        conn = await asyncpg.connect(settings.database_url, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return [], f"notifications not shown: cannot connect to PostgreSQL ({type(exc).__name__})"
    try:
        rows = await order_notifications(conn, warehouse_id, order_id)
    except asyncpg.PostgresError as exc:
        return [], f"notifications not shown: {type(exc).__name__}"
    finally:
        await conn.close()
    if rows is None:
        return [], "notifications not shown: the notifier's outbox does not exist yet"
    # Server replies may quote an address: scrubbed always, like `fulfil notifications`.
    return [
        redact({k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()})
        for row in rows
    ], None
