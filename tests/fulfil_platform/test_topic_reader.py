"""The bounded topic reader on the real broker: log ends from fetches, limits, following."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from fulfil_platform import kafka
from fulfil_platform.topic_reader import read_all, read_chunks, read_partition

TOPIC = "reader.test.v1"


async def _produce(settings, topic: str, partition: int, singles: int, batched: int) -> None:
    """`singles` records one send each, then `batched` in one batch (Tansu's ListOffsets then lags)."""
    producer = kafka.producer(settings)
    await producer.start()
    try:
        for i in range(singles):
            await producer.send_and_wait(topic, b"s%d" % i, partition=partition)
        sender = kafka.BatchSender(producer)
        for i in range(batched):
            await sender.add(topic, b"b%d" % i, key=None, partition=partition)
        await sender.flush()
    finally:
        await producer.stop()


async def test_reads_to_the_log_end_after_batched_produce(settings) -> None:
    topic = settings.topic(TOPIC)
    await kafka.create_topics(settings, [topic])
    await _produce(settings, topic, 0, singles=3, batched=10)
    await _produce(settings, topic, 1, singles=0, batched=5)
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.fulfil_partitions)]
        found = await read_all(consumer, {tp: 0 for tp in parts})
        assert [r.offset for r in found[parts[0]]] == list(range(13))
        assert [r.value for r in found[parts[1]]] == [b"b%d" % i for i in range(5)]
        assert all(found[tp] == [] for tp in parts[2:])  # empty partitions end too
        # From an offset, up to a limit (exclusive), one fetch at a time.
        values = [
            r.value
            async for chunk in read_partition(consumer, parts[0], 2, ends={parts[0]: 6})
            for r in chunk
        ]
        assert values == [b"s2", b"b0", b"b1", b"b2"]
        # A start at the limit reads nothing and does not wait.
        assert await read_all(consumer, {parts[0]: 6}, ends={parts[0]: 6}) == {parts[0]: []}
    finally:
        await consumer.stop()


async def test_follow_keeps_reading_past_the_end(settings) -> None:
    topic = settings.topic(TOPIC)
    await kafka.create_topics(settings, [topic])
    await _produce(settings, topic, 0, singles=2, batched=0)
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    seen: list[bytes] = []
    try:
        tp = TopicPartition(topic, 0)

        async def follow() -> None:
            async for chunk in read_chunks(consumer, {tp: 0}, follow=True, timeout_ms=50):
                seen.extend(r.value for r in chunk[tp])
                if len(seen) >= 5:
                    return

        task = asyncio.create_task(follow())
        await _produce(settings, topic, 0, singles=0, batched=3)
        await asyncio.wait_for(task, 60)
        assert seen == [b"s0", b"s1", b"b0", b"b1", b"b2"]
    finally:
        await consumer.stop()
