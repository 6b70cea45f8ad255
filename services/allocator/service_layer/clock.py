"""The allocator's clock: ClockTicked commands written onto every command partition.

The core's only notion of today is the latest tick in its own log, so a replay
sees exactly the days the original run saw. `fulfil allocator` writes ticks on a
wall-clock schedule (FULFIL_CLOCK_TICK_SECONDS); `fulfil clock tick --now T`
writes one by hand. A tick never moves today backwards, and a tick of a day the
core already has changes nothing, so several writers are harmless.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from fulfil_platform import kafka
from fulfil_platform.config import Settings
from fulfil_platform.logs import get_logger
from schemas.contract import ClockTicked, ClockTickedData
from schemas.registry import COMMANDS, encode
from services.allocator.domain.ids import uuid5_str

log = get_logger("allocator.clock")

SOURCE = "fulfil-clock"


def tick(now: datetime, partition: int) -> ClockTicked:
    """The tick for `now` on one command partition (its id derives from both)."""
    if now.tzinfo is None:
        raise ValueError("a tick needs a timestamp with an offset")
    return ClockTicked(
        id=uuid5_str(f"clock/{partition}/{now.isoformat()}"),
        type="ClockTicked",
        occurred_at=now,
        source=SOURCE,
        data=ClockTickedData(now=now),
    )


async def write_ticks(
    settings: Settings, now: datetime, producer: AIOKafkaProducer | None = None
) -> int:
    """Write one tick for `now` on every command partition; returns how many."""
    topic = settings.topic(COMMANDS)
    own = producer is None
    client = kafka.producer(settings) if producer is None else producer
    if own:
        await client.start()
    try:
        futures = [
            await client.send(
                topic,
                encode(tick(now, p)),
                partition=p,
                headers=[("fulfil-event-type", b"ClockTicked")],
            )
            for p in range(settings.fulfil_partitions)
        ]
        await asyncio.gather(*futures)
    finally:
        if own:
            await client.stop()
    return len(futures)


async def run_clock(settings: Settings, stop: asyncio.Event) -> None:
    """Tick every FULFIL_CLOCK_TICK_SECONDS until `stop` (0: return at once)."""
    every = settings.fulfil_clock_tick_seconds
    if every <= 0:
        return
    client = kafka.producer(settings)
    await client.start()
    try:
        while not stop.is_set():
            try:
                await write_ticks(settings, datetime.now(UTC), client)
            except Exception as exc:  # noqa: BLE001 - the next tick tries again; nothing is lost
                log.warning(
                    "clock tick not written", error=type(exc).__name__, detail=str(exc)[:200]
                )
            try:
                await asyncio.wait_for(stop.wait(), timeout=every)
            except TimeoutError:
                pass
    finally:
        await client.stop()
