"""Projector benchmark on a real embedded broker and PostgreSQL, against a baseline
from the same run.

Projector events/s folding 200 k allocation events from allocations.v1 into
the read models (Kafka fetch, decode, fold, COPY + upsert, offsets, one
transaction per batch), divided by a raw asyncpg COPY of the same number of
order-line-shaped rows into a plain table (goal >= 0.3). Printed, never asserted.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg

from fulfil import embedded
from fulfil_platform import kafka
from fulfil_platform.config import Settings, load_settings
from schemas.registry import ALLOCATIONS, INVENTORY, ORDERS, encode, spec_for
from services.allocator.domain import fold
from services.projector.service_layer.projector import Projector, tune_gc
from tests.builders.streams import mixed_stream

EVENTS = int(os.environ.get("BENCH_PROJECTOR_EVENTS", 200_000))


def allocation_events(count: int) -> list[tuple[bytes, bytes]]:
    """`count` allocation events (key, value), folded from a realistic input stream."""
    out: list[tuple[bytes, bytes]] = []
    chunk = 0
    while len(out) < count:
        # Independent chunks keep each fold small; the ids are unique per seed.
        inputs = mixed_stream(50_000, seed=1000 + chunk, prefix=f"b{chunk}")
        _, outputs = fold(inputs)
        out.extend((spec_for(e).key(e), encode(e)) for e in outputs)
        chunk += 1
    return out[:count]


async def _publish(settings: Settings, messages: list[tuple[bytes, bytes]]) -> None:
    await kafka.create_topics(
        settings, [settings.topic(t) for t in (ALLOCATIONS, ORDERS, INVENTORY)]
    )
    producer = kafka.producer(settings, linger_ms=20)
    await producer.start()
    try:
        topic = settings.topic(ALLOCATIONS)
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _projector_rate(settings: Settings, total: int) -> float:
    stop = asyncio.Event()
    projector = Projector(settings)
    task = asyncio.create_task(projector.run(stop))
    try:
        # Clock starts at the first committed batch: group join and migrations excluded.
        while projector.records == 0:
            if task.done():
                task.result()
            await asyncio.sleep(0.001)  # poll interval
        start, first = time.perf_counter(), projector.records
        while projector.records < total:
            if task.done():
                task.result()
            await asyncio.sleep(0.001)  # poll interval
        return (total - first) / (time.perf_counter() - start)
    finally:
        stop.set()
        await task


async def _copy_rate(database_url: str, count: int) -> float:
    now = datetime(2026, 11, 2, tzinfo=UTC)
    rows = [
        (f"order-{i}", 1 + i % 3, f"SKU-{i % 500:04d}", 5, 2, 3, 0, 0, 0, date(2026, 11, 20), now)
        for i in range(count)
    ]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """CREATE TABLE bench_copy (order_id text, line_no integer, sku text, quantity integer,
                   allocated integer, backordered integer, reserved integer, rejected integer,
                   cancelled integer, eta date, updated_at timestamptz)"""
        )
        start = time.perf_counter()
        await conn.copy_records_to_table("bench_copy", records=rows)
        return count / (time.perf_counter() - start)
    finally:
        await conn.close()


async def bench_projector() -> list[tuple[str, dict[str, float]]]:
    root = Path(tempfile.mkdtemp(prefix="fulfil-bench-projector-"))
    broker = embedded.start_broker(root / "tansu")
    postgres = embedded.start_postgres(root / "pgdata")
    try:
        settings = load_settings(
            kafka_bootstrap_servers=broker.bootstrap,
            database_url=postgres.url,
            fulfil_partitions=6,
            kafka_session_timeout_ms=2000,
            kafka_heartbeat_interval_ms=300,
            kafka_enable_idempotence=False,  # Tansu has no idempotent producer
            fulfil_log_level="WARNING",
        )
        messages = allocation_events(EVENTS)
        await _publish(settings, messages)
        tune_gc()  # as `fulfil projector` does at start-up
        projector = await _projector_rate(settings, len(messages))
        copy = await _copy_rate(postgres.url, len(messages))
        return [
            (
                f"projector: events/s / raw asyncpg COPY rows/s ({len(messages) // 1000} k allocation events)",
                {
                    "projector_events_per_s": projector,
                    "copy_rows_per_s": copy,
                    "ratio": projector / copy,
                },
            )
        ]
    finally:
        embedded.stop_broker(broker)
        embedded.stop_postgres(postgres)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    for title, figures in asyncio.run(bench_projector()):
        print(f"\n== {title}")
        for key, value in figures.items():
            print(f"  {key:<40} {value:,.3f}")
