"""Reading a topic from the beginning, optionally following it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        while True:
            # Print as records arrive: a topic can be far larger than memory.
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    show(r.partition, r.offset, r.value)
                    shown += 1
            if not follow and not batch and await _at_end(consumer, tps):
                return shown
    finally:
        await consumer.stop()


async def _at_end(consumer: Any, tps: list[TopicPartition]) -> bool:
    # Ends from fetch high watermarks, not ListOffsets (wrong on Tansu after batched produce).
    for tp in tps:
        highwater = consumer.highwater(tp)
        if highwater is None or await consumer.position(tp) < highwater:
            return False
    return True
