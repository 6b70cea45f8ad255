"""Reading a topic from the beginning, optionally following it."""

from __future__ import annotations

from collections.abc import Callable

from aiokafka import TopicPartition

from fulfil import kafka
from fulfil.config import Settings


async def tail_topic(settings: Settings, topic: str, show: Callable[[int, int, bytes], None], *, follow: bool) -> int:
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    shown = 0
    try:
        if topic not in await consumer.topics():
            raise ValueError(f"topic {topic} does not exist")
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            raise ValueError(f"topic {topic} does not exist")
        tps = [TopicPartition(topic, p) for p in partitions]
        if not follow:
            found = await kafka.read_ranges(consumer, {tp: 0 for tp in tps})
            for tp in tps:
                for r in found[tp]:
                    show(r.partition, r.offset, r.value)
                    shown += 1
            return shown
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    show(r.partition, r.offset, r.value)
                    shown += 1
    finally:
        await consumer.stop()
