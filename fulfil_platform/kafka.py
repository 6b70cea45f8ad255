"""Thin aiokafka plumbing: clients built from Settings, topic creation, tail reads."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from fulfil_platform.config import Settings
from fulfil_platform.dead_letter_writer import QUARANTINE_TOPICS, REDRIVEN_SUFFIX
from fulfil_platform.topic_reader import read_all
from schemas.registry import ALLOCATIONS, COMMANDS, DLQ_SUFFIX, INVENTORY, ORDERS, base_topics

Headers = list[tuple[str, bytes]] | tuple[()]


class _Producer(AIOKafkaProducer):  # type: ignore[misc]  # aiokafka is untyped
    """A producer that closes itself when `start()` fails (no broker, a stop request), so a
    failed start never leaves an unclosed client behind."""

    async def start(self) -> None:
        try:
            await super().start()
        except BaseException:
            await asyncio.shield(self.stop())
            raise


class _Consumer(AIOKafkaConsumer):  # type: ignore[misc]  # aiokafka is untyped
    """A consumer that closes itself when `start()` fails (see _Producer), and whose `stop()`
    does not fail when the broker is gone."""

    async def start(self) -> None:
        try:
            await super().start()
        except BaseException:
            await asyncio.shield(self.stop())
            raise

    async def stop(self) -> None:
        try:
            await super().stop()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled
            # aiokafka 0.14's fetcher cancels its pending fetches on close and awaits them;
            # one waiting out its retry back-off after a failed fetch (the broker is gone)
            # re-raises that cancellation, and stop() ends there. Finish closing instead.
            await self._close_after_fetcher_failure()

    async def _close_after_fetcher_failure(self) -> None:
        fetcher = self._fetcher
        for pending in list(getattr(fetcher, "_pending_tasks", ()) or ()):
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending
        await self._client.close()


def producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    # KAFKA_ENABLE_IDEMPOTENCE: on Apache Kafka the broker drops a batch the producer
    # resends after a lost response; Tansu rejects idempotent producers (InitProducerId
    # fails), so `fulfil dev` and the tests turn it off and rely on consumers ignoring
    # an output id they already applied.
    options: dict[str, Any] = {
        "acks": "all",
        "enable_idempotence": settings.kafka_enable_idempotence,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "max_request_size": settings.fulfil_max_message_bytes + 64 * 1024,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
    }
    options.update(overrides)
    return _Producer(**settings.kafka_client_options(), **options)


def consumer(
    settings: Settings, *topics: str, group_id: str | None, **overrides: Any
) -> AIOKafkaConsumer:
    options: dict[str, Any] = {
        "group_id": group_id,
        "enable_auto_commit": False,
        # New groups start at the beginning: Tansu's "latest" is wrong after
        # batched produce, and our services rely on committed offsets anyway.
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": settings.fulfil_max_message_bytes + 64 * 1024,
        "fetch_max_bytes": 16 * 1024 * 1024,
        # Tansu answers a fetch only after max-wait when the log is idle; a
        # short wait keeps input -> output latency low at modest rates.
        "fetch_max_wait_ms": 50,
        **settings.consumer_group_options(),
    }
    options.update(overrides)
    return _Consumer(*topics, **settings.kafka_client_options(), **options)


def all_topics(settings: Settings) -> list[str]:
    """Every topic, the consumers' quarantines and the redrive ledgers of every DLQ
    included (clusters may not auto-create)."""
    topics = base_topics() + list(QUARANTINE_TOPICS)
    ledgers = [t + REDRIVEN_SUFFIX for t in topics if t.endswith(DLQ_SUFFIX)]
    return [settings.topic(t) for t in topics + ledgers]


# The projector's sources: `fulfil rebuild` folds them from offset 0 (and refuses
# when retention has moved a start).
REBUILD_SOURCES = frozenset({ALLOCATIONS, ORDERS, INVENTORY})


def topic_configs(settings: Settings, topic: str) -> dict[str, str]:
    """Kept forever: the command log (a partition without a snapshot is folded from
    offset 0), every source topic of a read-model rebuild, and the redrive ledgers
    (a forgotten entry would allow a second redrive)."""
    base = topic.removeprefix(settings.fulfil_topic_prefix)
    if base == COMMANDS or base in REBUILD_SOURCES or base.endswith(REDRIVEN_SUFFIX):
        return {"retention.ms": "-1"}
    return {}


async def create_topics(
    settings: Settings, names: Iterable[str] | None = None, replication_factor: int | None = None
) -> tuple[list[str], list[str]]:
    """Create the topics that do not exist yet; returns (created, existing)."""
    wanted = list(names) if names is not None else all_topics(settings)
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        t,
                        num_partitions=settings.fulfil_partitions,
                        replication_factor=replication_factor or settings.fulfil_replication_factor,
                        topic_configs=topic_configs(settings, t),
                    )
                    for t in missing
                ]
            )
        return missing, [t for t in wanted if t in existing]
    finally:
        await admin.close()


def header(headers: Iterable[tuple[str, bytes | None]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name and value is not None:
            return value.decode("utf-8", "replace")
    return None


async def read_ranges(
    consumer_: AIOKafkaConsumer,
    starts: dict[TopicPartition, int],
    timeout_ms: int = 200,
    deadline_s: float = 30.0,
) -> dict[TopicPartition, list[Any]]:
    """Every record of each partition from its start offset to the log end
    (ends from fetch high watermarks: see fulfil_platform.topic_reader)."""
    return await read_all(consumer_, starts, timeout_ms=timeout_ms, deadline_s=deadline_s)


async def cluster_id(settings: Settings) -> str | None:
    """The broker's cluster id (Metadata v2+), or None when it does not say."""
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    await admin.start()
    try:
        return (await admin.describe_cluster()).get("cluster_id") or None
    finally:
        await admin.close()


async def read_at(
    consumer_: AIOKafkaConsumer, tp: TopicPartition, offset: int, deadline_s: float = 10.0
) -> Any | None:
    """The record at `offset` of `tp`, or None when the log has none there."""
    consumer_.assign([tp])
    consumer_.seek(tp, offset)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline_s
    while True:
        batch = await consumer_.getmany(tp, timeout_ms=100, max_records=1)
        for record in batch.get(tp, []):
            return record if record.offset == offset else None
        highwater = consumer_.highwater(tp)
        if highwater is not None and highwater <= offset:
            return None
        if loop.time() > give_up:
            raise TimeoutError(f"no fetch response for {tp} in {deadline_s}s")


async def log_ends(
    consumer_: AIOKafkaConsumer, tps: list[TopicPartition], deadline_s: float = 10.0
) -> dict[TopicPartition, int]:
    """The end offset of each partition, from fetch high watermarks (see read_ranges)."""
    consumer_.assign(tps)
    for tp in tps:
        consumer_.seek(tp, 0)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline_s
    while any(consumer_.highwater(tp) is None for tp in tps):
        if loop.time() > give_up:
            raise TimeoutError(
                f"no fetch response for {sorted(str(tp) for tp in tps)} in {deadline_s}s"
            )
        await consumer_.getmany(*tps, timeout_ms=50, max_records=1)
    return {tp: consumer_.highwater(tp) for tp in tps}


async def read_range(
    consumer_: AIOKafkaConsumer, tp: TopicPartition, start: int, timeout_ms: int = 200
) -> list[Any]:
    """Every record of `tp` from `start` to the log end (see read_ranges)."""
    return (await read_ranges(consumer_, {tp: start}, timeout_ms))[tp]


class BatchSender:
    """Collects records into one batch per (topic, partition) and sends them together.

    One future per batch instead of one per record: on the hot paths (router,
    core) per-record futures cost more than the records. `flush()` waits for
    every batch and raises if any failed, so callers commit only after it.
    """

    def __init__(self, producer_: AIOKafkaProducer):
        self.producer = producer_
        self.partitioner = DefaultPartitioner()
        self.open: dict[tuple[str, int], Any] = {}
        self.sent: list[tuple[str, int, Any, int]] = []
        self.partition_counts: dict[str, list[int]] = {}
        self.records_per_topic: dict[str, int] = {}  # for metrics
        # After flush: (topic, partition, base offset, record count) per batch, in send order.
        self.landed: list[tuple[str, int, int, int]] = []

    async def partition_for(self, topic: str, key: bytes) -> int:
        partitions = self.partition_counts.get(topic)
        if partitions is None:
            partitions = self.partition_counts[topic] = sorted(
                await self.producer.partitions_for(topic)
            )
        partition: int = self.partitioner(key, partitions, partitions)
        return partition

    async def add(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None,
        partition: int | None = None,
        headers: Headers = (),
    ) -> None:
        if partition is None:
            partition = await self.partition_for(topic, key or b"")
        self.records_per_topic[topic] = self.records_per_topic.get(topic, 0) + 1
        batch = self.open.get((topic, partition))
        if batch is None:
            batch = self.open[(topic, partition)] = self.producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=list(headers)) is None:
            await self._send(topic, partition, batch)
            batch = self.open[(topic, partition)] = self.producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=list(headers)) is None:
                raise ValueError(f"a record of {len(value)} bytes does not fit in an empty batch")

    async def _send(self, topic: str, partition: int, batch: Any) -> None:
        count = batch.record_count()
        future = await self.producer.send_batch(batch, topic, partition=partition)
        self.sent.append((topic, partition, future, count))

    async def flush(self) -> dict[tuple[str, int], int]:
        """Send what is open, wait for all; returns the offset after the last record per partition."""
        for (topic, partition), batch in self.open.items():
            if batch.record_count():
                await self._send(topic, partition, batch)
        self.open.clear()
        sent, self.sent = self.sent, []
        # Wait for every batch even when one fails: a batch still in flight could land
        # after the caller has re-read the log to recover, and be written twice.
        results = await asyncio.gather(
            *(future for _, _, future, _ in sent), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        ends: dict[tuple[str, int], int] = {}
        landed: list[Any] = results
        for (topic, partition, _, count), metadata in zip(sent, landed, strict=True):
            self.landed.append((topic, partition, metadata.offset, count))
            end = metadata.offset + count
            if end > ends.get((topic, partition), -1):
                ends[(topic, partition)] = end
        return ends
