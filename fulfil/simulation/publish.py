"""Writing simulated traffic to the topics (`fulfil simulate --publish`, the benchmarks).

Inputs go to orders.v1 / inventory.v1 as simulated (invalid ones too: the router
dead-letters them), in batches, keyed by warehouse_id. A `ClockTicked` ("today is
`now`" for the allocator core) is an internal command, which `fulfil publish` refuses:
it is written here as `fulfil clock tick --now` writes it, one tick per command
partition, after everything before it is acknowledged."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaProducer

from fulfil.simulation.model import SimRecord
from fulfil_platform import kafka
from fulfil_platform.config import Settings
from services.allocator.service_layer.clock import write_ticks

TICK = "ClockTicked"


async def publish_simulated(
    settings: Settings,
    records: Iterable[SimRecord],
    on_progress: Callable[[int], None] | None = None,
    rate: float = 0,
    producer: AIOKafkaProducer | None = None,
) -> dict[str, int]:
    """Publish the records in order; returns the records written per (prefixed) topic,
    each tick counted once per command partition. With `rate` (events/s) it flushes ~10
    times a second and keeps to the schedule, so a running router sees orders and
    inventory roughly in simulated order. `on_progress(n)` after each flush."""
    own = producer is None
    client = kafka.producer(settings) if producer is None else producer
    if own:
        await client.start()
    by_topic: Counter[str] = Counter()
    every = max(1, min(20_000, int(rate / 10))) if rate else 20_000
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        sender = kafka.BatchSender(client)
        for count, record in enumerate(records, start=1):
            topic = settings.topic(record.topic)
            if record.type == TICK:  # today, on every command partition
                await sender.flush()
                by_topic[topic] += await write_ticks(settings, record.occurred_at, client)
            else:
                await sender.add(topic, record.value, key=record.key)
                by_topic[topic] += 1
            if count % every == 0:
                await sender.flush()  # bounded memory, and progress means acknowledged
                if on_progress is not None:
                    on_progress(count)
                if rate:
                    ahead = started + count / rate - loop.time()
                    if ahead > 0:
                        await asyncio.sleep(ahead)  # pacing to --rate, not synchronisation
        await sender.flush()
    finally:
        if own:
            await client.stop()
    return dict(by_topic)
