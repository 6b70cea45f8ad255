"""Allocator benchmarks on a real embedded broker, each against a baseline from the same run.

1. throughput: router + core over a 200 k-event mixed stream, divided by a bare
   aiokafka consume -> produce passthrough of the same messages (goal >= 0.5);
2. latency: p50/p99 input -> first output at a steady 1 k events/s (allocator
   in its own process);
3. memory: RSS of the core's state after 1 M orders with ~5 % backordered (goal < 1 GB).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fulfil import embedded, kafka
from fulfil.config import Settings, load_settings
from schemas.registry import ALLOCATIONS, COMMANDS, INVENTORY, ORDERS, encode, spec_for
from services.allocator.entrypoints.core import AllocatorCore
from services.allocator.entrypoints.replay import replay
from services.allocator.entrypoints.router import build_router
from tests.conftest import settings_as_env
from tests.services.allocator.domain.streams import mixed_stream

EVENTS = int(os.environ.get("BENCH_ALLOCATOR_EVENTS", 200_000))
LATENCY_SECONDS = float(os.environ.get("BENCH_LATENCY_SECONDS", 15))
MEMORY_ORDERS = int(os.environ.get("BENCH_MEMORY_ORDERS", 1_000_000))


def _settings(bootstrap: str, prefix: str, state_dir: Path) -> Settings:
    return load_settings(
        kafka_bootstrap_servers=bootstrap,
        fulfil_topic_prefix=prefix,
        fulfil_partitions=6,
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=300,
        fulfil_state_dir=state_dir,
        fulfil_log_level="WARNING",
    )


async def _publish_all(settings: Settings, messages: list[tuple[str, bytes, bytes]]) -> None:
    producer = kafka.producer(settings, linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(settings.topic(t), v, key=k) for t, k, v in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _passthrough(settings: Settings, total: int) -> float:
    """Bare aiokafka: consume inputs, produce each unchanged, one flush + commit per batch."""
    consumer = kafka.consumer(settings, settings.topic(ORDERS), settings.topic(INVENTORY), group_id="bench-passthrough")
    producer = kafka.producer(settings)
    await consumer.start()
    await producer.start()
    out = settings.topic(COMMANDS)
    seen = 0
    first = None
    try:
        while seen < total:
            batches = await consumer.getmany(timeout_ms=200, max_records=5_000)
            if not batches:
                continue
            first = first or time.perf_counter()
            futures = []
            for records in batches.values():
                for r in records:
                    futures.append(await producer.send(out, r.value, key=r.key))
                seen += len(records)
            await asyncio.gather(*futures)
            await consumer.commit()
        return total / (time.perf_counter() - first)
    finally:
        await consumer.stop()
        await producer.stop()


async def _allocator(settings: Settings, total: int) -> tuple[float, int]:
    app, stats = build_router(settings)
    core = AllocatorCore(settings)
    stop = asyncio.Event()
    await app.start()
    task = asyncio.create_task(core.run(stop))
    first = None
    try:
        while core.processed < total:
            if task.done():
                task.result()
            if first is None and (stats.routed or core.processed):
                first = time.perf_counter()
            await asyncio.sleep(0.005)  # poll interval
        return total / (time.perf_counter() - first), core.emitted
    finally:
        stop.set()
        await task
        await app.stop()


async def _latency(settings: Settings, rate: int, seconds: float) -> dict[str, float]:
    env = {**settings_as_env(settings), "FULFIL_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen([sys.executable, "-m", "fulfil", "allocator"], env=env, stdout=subprocess.DEVNULL)
    consumer = kafka.consumer(settings, settings.topic(ALLOCATIONS), group_id="bench-latency")
    producer = kafka.producer(settings, linger_ms=0)
    await consumer.start()
    await producer.start()
    try:
        events = mixed_stream(int(rate * seconds) + 2_000, seed=99, prefix="lat")
        # Warm up: wait until the allocator answers at all (group joins, recovery).
        sent: dict[str, float] = {}
        first_seen: dict[str, float] = {}

        async def drain() -> None:
            while True:
                batches = await consumer.getmany(timeout_ms=100)
                now = time.perf_counter()
                for records in batches.values():
                    for r in records:
                        cause = json.loads(r.value)["causation_id"]
                        first_seen.setdefault(cause, now)

        reader = asyncio.create_task(drain())
        warm = events[:2_000]
        for e in warm:
            spec = spec_for(e)
            await producer.send(settings.topic(spec.topic), encode(e), key=spec.key(e))
        await producer.flush()
        while len(first_seen) < 100:
            await asyncio.sleep(0.1)  # poll interval
        start = time.perf_counter()
        for i, e in enumerate(events[2_000:]):
            target = start + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing to the target rate, poll-free by design
            spec = spec_for(e)
            sent[e.id] = time.perf_counter()
            await producer.send(settings.topic(spec.topic), encode(e), key=spec.key(e))
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline and sum(1 for k in sent if k in first_seen) < len(sent) * 0.98:
            await asyncio.sleep(0.2)  # poll until the inputs were answered (duplicates never are)
        reader.cancel()
        latencies = sorted((first_seen[k] - t) * 1000 for k, t in sent.items() if k in first_seen)
        if not latencies:
            return {"measured_inputs": 0}
        return {
            "rate_per_s": rate,
            "measured_inputs": len(latencies),
            "p50_ms": latencies[len(latencies) // 2],
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        }
    finally:
        process.terminate()
        process.wait(timeout=60)
        await consumer.stop()
        await producer.stop()


def _memory(orders: int) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-m", "tests.services.allocator.domain.bench_decide", "--events", "0", "--orders", str(orders)],
        capture_output=True, text=True, check=True,
    )
    memory = json.loads(result.stdout)["memory"]
    return {k: v for k, v in memory.items() if isinstance(v, int | float)}


async def bench_allocator() -> list[tuple[str, dict[str, float]]]:
    root = Path(tempfile.mkdtemp(prefix="fulfil-bench-"))
    broker = embedded.start_broker(root / "tansu")
    try:
        events = mixed_stream(EVENTS, seed=3)
        messages = []
        for e in events:
            spec = spec_for(e)
            messages.append((spec.topic, spec.key(e), encode(e)))

        baseline = _settings(broker.bootstrap, "pt.", root / "pt")
        await kafka.create_topics(baseline)
        await _publish_all(baseline, messages)
        passthrough = await _passthrough(baseline, len(messages))

        live = _settings(broker.bootstrap, "al.", root / "al")
        await kafka.create_topics(live)
        await _publish_all(live, messages)
        allocator, emitted = await _allocator(live, len(messages))
        started = time.perf_counter()
        report = await replay(live, verify=True)
        replayed = sum(p.commands for p in report.partitions) / (time.perf_counter() - started)
        verified = report.divergence is None

        latency_settings = _settings(broker.bootstrap, "lat.", root / "lat")
        await kafka.create_topics(latency_settings)
        latency = await _latency(latency_settings, 1_000, LATENCY_SECONDS)
    finally:
        embedded.stop_broker(broker)
        shutil.rmtree(root, ignore_errors=True)
    return [
        (
            f"allocator throughput / bare aiokafka passthrough ({len(messages):,} events, goal >= 0.5)",
            {"passthrough_events_per_s": passthrough, "allocator_events_per_s": allocator,
             "allocator_outputs": emitted, "ratio": allocator / passthrough},
        ),
        (
            "fulfil replay --verify on the same log / live allocator (goal >= 1)",
            {"replay_commands_per_s": replayed, "allocator_events_per_s": allocator,
             "verified": float(verified), "ratio": replayed / allocator},
        ),
        ("allocator latency input -> first output at 1 k events/s", latency),
        (f"allocator core memory after {MEMORY_ORDERS:,} orders, ~5 % backordered (goal < 1024 MB)", _memory(MEMORY_ORDERS)),
    ]
