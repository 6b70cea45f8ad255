"""Reading a topic from the beginning, optionally following it."""

from __future__ import annotations

from collections.abc import Callable

from aiokafka import TopicPartition

from fulfil_platform import kafka
from fulfil_platform.config import Settings
from fulfil_platform.topic_reader import read_chunks


class UnknownTopic(ValueError):
    """The topic is not on the cluster (a typo, or `fulfil topics create` not run)."""


async def tail_topic(
    settings: Settings, topic: str, show: Callable[[int, int, bytes], None], *, follow: bool
) -> int:
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    shown = 0
    try:
        partitions = (
            sorted(consumer.partitions_for_topic(topic) or ())
            if topic in await consumer.topics()
            else []
        )
        if not partitions:
            raise UnknownTopic(topic)
        # Print as records arrive: a topic can be far larger than memory.
        starts = {TopicPartition(topic, p): 0 for p in partitions}
        async for chunk in read_chunks(consumer, starts, follow=follow, timeout_ms=500):
            for records in chunk.values():
                for r in records:
                    show(r.partition, r.offset, r.value)
                    shown += 1
        return shown
    finally:
        await consumer.stop()
