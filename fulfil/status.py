"""`fulfil status` and `fulfil topics list`: where every consumer is, at a glance.

Each service keeps its position where its effects are, and is asked there:

- the allocator's router and core commit offsets to Kafka (their groups
  `fulfil-allocator-router` and `fulfil-allocator-core`; the core's snapshots
  are local to its pods, the committed offset is what any of them resumes from);
- the projector stores its next offsets in PostgreSQL with the rows it wrote
  (`services/projector/adapters/queries.py` `live_positions`);
- the notifier likewise, with its outbox (`services/notifier/adapters/queries.py`
  `stored_positions`, `outbox_counts`).

The tool reads the services' tables only through those query modules. Log ends
come from fetch high watermarks (`fulfil_platform.kafka.log_ends`; Tansu's
ListOffsets answers low after batched produce), log starts from ListOffsets
(earliest), so a record count is `end - start`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import TopicPartition

from fulfil.dlq_tool import dlq_topics
from fulfil_platform import kafka
from fulfil_platform.config import Settings
from fulfil_platform.dead_letter_writer import REDRIVEN_SUFFIX
from schemas.registry import ALLOCATIONS, COMMANDS, INVENTORY, ORDERS

T = TypeVar("T")


@dataclass(frozen=True)
class Extent:
    """A topic's partitions with the first and next offset of each (None: no such topic)."""

    topic: str
    starts: dict[int, int] | None
    ends: dict[int, int] | None

    @property
    def exists(self) -> bool:
        return self.ends is not None

    @property
    def records(self) -> int:
        if self.ends is None or self.starts is None:
            return 0
        return sum(max(0, end - self.starts.get(p, 0)) for p, end in self.ends.items())

    def document(self, prefix: str) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "base": self.topic.removeprefix(prefix),
            "exists": self.exists,
            "partitions": len(self.ends) if self.ends is not None else None,
            "records": self.records if self.exists else None,
            "start_offsets": _listed(self.starts),
            "end_offsets": _listed(self.ends),
        }


def _listed(offsets: dict[int, int] | None) -> list[int] | None:
    return None if offsets is None else [offsets[p] for p in sorted(offsets)]


async def extents(settings: Settings, topics: Iterable[str]) -> dict[str, Extent]:
    """Start and end offsets of every partition of each topic (absent topics: None)."""
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        known = await consumer.topics()
        tps = [
            TopicPartition(t, p)
            for t in topics
            if t in known
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        ends = await kafka.log_ends(consumer, tps) if tps else {}
        starts = await consumer.beginning_offsets(tps) if tps else {}
    finally:
        await consumer.stop()
    out: dict[str, Extent] = {}
    for topic in topics:
        if topic not in known:
            out[topic] = Extent(topic, None, None)
            continue
        mine = [tp for tp in tps if tp.topic == topic]
        out[topic] = Extent(
            topic,
            {tp.partition: int(starts.get(tp, 0)) for tp in mine},
            {tp.partition: int(ends[tp]) for tp in mine},
        )
    return out


async def topic_list(settings: Settings) -> list[dict[str, Any]]:
    """`fulfil topics list --json`: every topic `fulfil topics create` makes."""
    found = await extents(settings, kafka.all_topics(settings))
    return [e.document(settings.fulfil_topic_prefix) for e in found.values()]


async def _committed(
    settings: Settings, group: str, tps: list[TopicPartition]
) -> dict[TopicPartition, int | None]:
    # assign, never subscribe: asking for offsets must not join (and rebalance) the group
    consumer = kafka.consumer(settings, group_id=group)
    consumer.assign(tps)
    await consumer.start()
    try:
        return {tp: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()


async def _newest_record_at(settings: Settings, extent: Extent) -> datetime | None:
    """The broker timestamp of the newest record of the topic (None when it is empty)."""
    starts = extent.starts or {}
    lasts = [
        (TopicPartition(extent.topic, p), end - 1)
        for p, end in sorted((extent.ends or {}).items())
        if end > starts.get(p, 0)
    ]
    if not lasts:  # (and a consumer stopped right after its start trips aiokafka)
        return None
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        stamps = [
            record.timestamp
            for tp, offset in lasts
            if (record := await kafka.read_at(consumer, tp, offset)) is not None
            and record.timestamp >= 0
        ]
    finally:
        await consumer.stop()
    return datetime.fromtimestamp(max(stamps) / 1000, UTC) if stamps else None


async def _read(
    database_url: str, query: Callable[[Any], Awaitable[T]]
) -> tuple[T | None, str | None]:
    """One query of a service's own query module; (None, why) when its tables are missing."""
    import asyncpg

    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        return await query(conn), None
    except asyncpg.UndefinedTableError:
        return None, "not migrated yet (the service never ran against this database)"
    finally:
        await conn.close()


def _consumer(
    *,
    service: str,
    group: str,
    stored_in: str,
    positions: dict[tuple[str, int], int | None],
    found: dict[str, Extent],
    topics: list[str],
    last_progress_at: datetime | None,
    progress: str,
    note: str | None = None,
) -> dict[str, Any]:
    partitions = []
    for topic in topics:
        extent = found[topic]
        for partition, end in sorted((extent.ends or {}).items()):
            position = positions.get((topic, partition))
            start = (extent.starts or {}).get(partition, 0)
            # no position yet: the group would start at the log start ("earliest")
            lag = max(0, end - (start if position is None else max(position, start)))
            partitions.append(
                {
                    "topic": topic,
                    "partition": partition,
                    "position": position,
                    "end": end,
                    "lag": lag,
                }
            )
    return {
        "service": service,
        "group": group,
        "positions_in": stored_in,
        "lag": sum(p["lag"] for p in partitions),
        "last_progress_at": last_progress_at,
        "last_progress": progress,
        "note": note,
        "partitions": partitions,
    }


async def collect(settings: Settings) -> dict[str, Any]:
    """The `fulfil status --json` document."""
    from services.notifier.adapters import queries as notifier_queries
    from services.notifier.entrypoints.app import NOTIFIER_GROUP
    from services.projector.adapters import queries as projector_queries
    from services.projector.service_layer.projector import GROUP_ID, INPUT_TOPICS

    database_url = settings.require_database()
    t = settings.topic
    dlqs = dlq_topics(settings)
    wanted = [t(ORDERS), t(INVENTORY), t(COMMANDS), t(ALLOCATIONS)]
    wanted += [d for dlq in dlqs for d in (dlq, dlq + REDRIVEN_SUFFIX)]
    found = await extents(settings, wanted)
    allocator = await _allocator_consumers(settings, found)
    projected, projector_note = await _read(database_url, projector_queries.live_positions)
    notified, notifier_note = await _read(database_url, notifier_queries.stored_positions)
    outbox, outbox_note = await _read(database_url, notifier_queries.outbox_counts)
    consumers = [
        *allocator,
        _consumer(
            service="projector",
            group=t(GROUP_ID),
            stored_in="postgresql",
            positions=_stored(projected),
            found=found,
            topics=[t(name) for name in INPUT_TOPICS],
            last_progress_at=_latest(projected),
            progress="last batch stored in PostgreSQL",
            note=projector_note,
        ),
        _consumer(
            service="notifier",
            group=t(NOTIFIER_GROUP),
            stored_in="postgresql",
            positions=_stored(notified),
            found=found,
            topics=[t(ALLOCATIONS)],
            last_progress_at=_latest(notified),
            progress="last batch stored in PostgreSQL",
            note=notifier_note,
        ),
    ]
    return {
        "checked_at": datetime.now(UTC),
        "topic_prefix": settings.fulfil_topic_prefix,
        "consumers": consumers,
        "dead_letters": _dead_letters(dlqs, found),
        "outbox": _outbox(outbox),
        "outbox_note": outbox_note,
    }


async def _allocator_consumers(
    settings: Settings, found: dict[str, Extent]
) -> list[dict[str, Any]]:
    """The router and the core: their groups' committed offsets, and the newest record each
    wrote as its last progress."""
    from services.allocator.entrypoints.core import CORE_GROUP
    from services.allocator.entrypoints.router import ROUTER_GROUP

    t = settings.topic

    def tps(*topics: str) -> list[TopicPartition]:
        return [
            TopicPartition(topic, p) for topic in topics for p in sorted(found[topic].ends or ())
        ]

    router_tps, core_tps = tps(t(ORDERS), t(INVENTORY)), tps(t(COMMANDS))
    router = await _committed(settings, t(ROUTER_GROUP), router_tps) if router_tps else {}
    core = await _committed(settings, t(CORE_GROUP), core_tps) if core_tps else {}
    return [
        _consumer(
            service="allocator-router",
            group=t(ROUTER_GROUP),
            stored_in="kafka",
            positions={(tp.topic, tp.partition): o for tp, o in router.items()},
            found=found,
            topics=[t(ORDERS), t(INVENTORY)],
            last_progress_at=await _newest_record_at(settings, found[t(COMMANDS)]),
            progress=f"newest record on {COMMANDS}",
        ),
        _consumer(
            service="allocator-core",
            group=t(CORE_GROUP),
            stored_in="kafka",
            positions={(tp.topic, tp.partition): o for tp, o in core.items()},
            found=found,
            topics=[t(COMMANDS)],
            last_progress_at=await _newest_record_at(settings, found[t(ALLOCATIONS)]),
            progress=f"newest record on {ALLOCATIONS}",
        ),
    ]


def _stored(rows: list[dict[str, Any]] | None) -> dict[tuple[str, int], int | None]:
    return {(r["topic"], r["partition"]): r["next_offset"] for r in rows or ()}


def _latest(rows: list[dict[str, Any]] | None) -> datetime | None:
    return max((r["updated_at"] for r in rows or () if r["updated_at"]), default=None)


def _dead_letters(dlqs: list[str], found: dict[str, Extent]) -> list[dict[str, Any]]:
    return [
        {
            "topic": dlq,
            "exists": found[dlq].exists,
            "dead_letters": found[dlq].records,
            "redriven": found[dlq + REDRIVEN_SUFFIX].records,
        }
        for dlq in dlqs
    ]


def _outbox(outbox: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The outbox's rows per channel and status, and when each channel last sent."""
    if outbox is None:
        return None
    by_channel: dict[str, dict[str, int]] = {}
    for row in outbox:
        by_channel.setdefault(row["channel"], {})[row["status"]] = row["n"]
    return {
        "pending": sum(by.get("pending", 0) for by in by_channel.values()),
        "failed": sum(by.get("failed", 0) for by in by_channel.values()),
        "channels": by_channel,
        "last_sent_at": max((r["last_sent_at"] for r in outbox if r["last_sent_at"]), default=None),
        "last_sent_by_channel": {
            r["channel"]: r["last_sent_at"] for r in outbox if r["last_sent_at"]
        },
    }
