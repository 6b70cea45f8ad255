"""Helpers for tests that talk to the real broker: read topics, wait for conditions."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from aiokafka import TopicPartition

from fulfil import log_audit
from fulfil_platform import kafka
from fulfil_platform.config import Settings
from schemas.contract import Envelope
from schemas.registry import COMMANDS, ContractError, encode, parse_input, parse_output, spec_for
from services.allocator.service_layer.partition import PartitionFold

T = TypeVar("T")


async def wait_for(
    condition: Callable[[], Awaitable[T]],
    *,
    timeout: float = 60.0,
    interval: float = 0.2,
    what: str = "condition",
) -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await condition()
        if last:
            return last
        await asyncio.sleep(interval)  # poll interval, not synchronisation
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})"[:2000])


async def read_topic(settings: Settings, base_topic: str) -> dict[int, list[Any]]:
    """Every record of every partition of `base_topic` (prefixed), in offset order."""
    topic = settings.topic(base_topic)
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        out = {}
        for partition in range(settings.fulfil_partitions):
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            out[partition] = await kafka.read_range(consumer, tp, 0, timeout_ms=300)
        return out
    finally:
        await consumer.stop()


async def committed_offsets(settings: Settings, group: str, base_topic: str) -> dict[int, int]:
    topic = settings.topic(base_topic)
    consumer = kafka.consumer(settings, group_id=group)
    tps = [TopicPartition(topic, p) for p in range(settings.fulfil_partitions)]
    consumer.assign(tps)  # assign, not subscribe: reading offsets must not join the group
    await consumer.start()
    try:
        return {tp.partition: (await consumer.committed(tp)) or 0 for tp in tps}
    finally:
        await consumer.stop()


async def publish(
    settings: Settings, events: Iterable[Envelope | bytes], topic: str | None = None
) -> int:
    """Publish envelopes to their topics (or raw bytes to `topic`), acknowledged."""
    producer = kafka.producer(settings)
    await producer.start()
    try:
        pending = []
        for event in events:
            if isinstance(event, bytes):
                assert topic is not None
                pending.append(await producer.send(settings.topic(topic), event))
            else:
                spec = spec_for(event)
                pending.append(
                    await producer.send(
                        settings.topic(topic or spec.topic), encode(event), key=spec.key(event)
                    )
                )
        await asyncio.gather(*pending)
        return len(pending)
    finally:
        await producer.stop()


def fold_command_log(commands: dict[int, list[Any]]) -> dict[int, list[bytes]]:
    """What a clean run writes to each allocations partition for this command log."""
    expected: dict[int, list[bytes]] = {}
    for partition, records in commands.items():
        fold = PartitionFold(partition)
        out = expected.setdefault(partition, [])
        for record in records:
            emissions, _ = fold.apply(record.offset, record.value)
            out.extend(e.value for e in emissions)
    return expected


async def expected_and_actual(
    settings: Settings,
) -> tuple[dict[int, list[bytes]], dict[int, list[bytes]]]:
    """A clean fold of the command log and what is on `allocations.v1`, per partition.

    Also checks DESIGN §5's invariants on what is actually on the output topic
    (every line's quantities add up to what was ordered; no SKU releases more
    than it received), so every test comparing the two checks them too."""
    commands = await read_topic(settings, COMMANDS)
    expected = fold_command_log(commands)
    actual = {
        p: [r.value for r in records]
        for p, records in (await read_topic(settings, "allocations.v1")).items()
    }
    inputs = []
    for records in commands.values():
        for record in records:
            with contextlib.suppress(ContractError):
                inputs.append(parse_input(record.value))
    report = log_audit.check(
        inputs, [parse_output(v) for values in actual.values() for v in values]
    )
    assert report.ok, f"{len(report.problems)} invariant violations, e.g. {report.problems[:5]}"
    return expected, actual


class TopicWatcher:
    """Counts the records of a topic incrementally (highwater from fetches, see notes/tansu.md)."""

    def __init__(self, settings: Settings, base_topic: str):
        self.settings = settings
        self.topic = settings.topic(base_topic)
        self.counts: dict[int, int] = {}

    async def __aenter__(self) -> TopicWatcher:
        self.consumer = kafka.consumer(self.settings, group_id=None)
        await self.consumer.start()
        self.tps = [TopicPartition(self.topic, p) for p in range(self.settings.fulfil_partitions)]
        self.consumer.assign(self.tps)
        for tp in self.tps:
            self.consumer.seek(tp, 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def ends(self) -> dict[int, int]:
        """Per-partition log end, after reading whatever arrived since the last call."""
        deadline = time.monotonic() + 30
        while True:
            batch = await self.consumer.getmany(timeout_ms=10, max_records=50_000)
            for tp, records in batch.items():
                self.counts[tp.partition] = records[-1].offset + 1
            known = all(self.consumer.highwater(tp) is not None for tp in self.tps)
            if not batch and (known or time.monotonic() > deadline):
                return {
                    tp.partition: max(
                        self.counts.get(tp.partition, 0), self.consumer.highwater(tp) or 0
                    )
                    for tp in self.tps
                }

    async def total(self) -> int:
        return sum((await self.ends()).values())
