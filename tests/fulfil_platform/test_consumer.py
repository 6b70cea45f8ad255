"""The consumer runtime's failure semantics, on the real broker with a position port of the test's own."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from fulfil_platform import kafka
from fulfil_platform.consumer import Batch, ConsumerRuntime
from fulfil_platform.metrics import Progress
from tests.kafka_helpers import committed_offsets, publish, wait_for

TOPIC = "runtime.test.v1"


class FlakyPositions:
    """Recovery fails `failures` times (a timeout, an unreadable file...), then starts at 0."""

    def __init__(self, failures: int):
        self.failures = failures
        self.recovered: list[TopicPartition] = []
        self.discarded: list[TopicPartition] = []

    async def recover(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        if self.failures:
            self.failures -= 1
            raise TimeoutError("recovery timed out")
        self.recovered += partitions
        return {tp: 0 for tp in partitions}

    async def release(self, partitions: list[TopicPartition]) -> None:
        pass

    async def discard(self, partitions: list[TopicPartition]) -> None:
        self.discarded += partitions


async def test_failed_recovery_is_not_ready_then_retried_and_a_failed_batch_is_read_again(
    settings,
) -> None:
    topic = settings.topic(TOPIC)
    await kafka.create_topics(settings, [topic])
    await publish(settings, [b"%d" % i for i in range(50)], topic=TOPIC)
    positions = FlakyPositions(failures=3)
    seen: list[bytes] = []
    batch_failures = 1

    async def handler(batch: Batch) -> None:
        nonlocal batch_failures
        await batch.fence()
        if batch_failures:
            batch_failures -= 1
            raise ConnectionError("broker away")  # transient: nothing committed, read again
        for records in batch.records.values():
            seen.extend(r.value for r in records)

    progress = Progress("runtime-test", 60.0)
    runtime = ConsumerRuntime(
        settings,
        name="runtime-test",
        topics=[topic],
        group_id=settings.topic("runtime-test"),
        positions=positions,
        handler=handler,
        progress=progress,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    try:

        async def not_ready_for_recovery() -> bool:
            reason = progress.unhealthy_reason or ""
            return "not recovered" in reason and "TimeoutError" in reason

        await wait_for(
            not_ready_for_recovery,
            timeout=30,
            interval=0.02,
            what="/readyz to name the failed recovery",
        )

        async def all_seen() -> bool:
            assert not task.done(), task.exception()
            return len(seen) >= 50

        await wait_for(all_seen, timeout=60, what="every record handled")

        async def healthy() -> bool:  # the flag clears on the loop turn after the retried batch
            return progress.unhealthy_reason is None

        await wait_for(healthy, timeout=30, interval=0.02, what="/readyz ready again")
        assert positions.discarded, "the failed batch's partitions are discarded"
        assert sorted(seen, key=int) == [b"%d" % i for i in range(50)] and len(seen) == 50
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_commit_interval_defers_commits_and_a_graceful_stop_flushes_them(settings) -> None:
    """Offsets wait for the interval (lag tooling only), and are not lost at a graceful stop."""
    topic = settings.topic(TOPIC)
    group = settings.topic("runtime-interval")
    await kafka.create_topics(settings, [topic])
    await publish(settings, [b"%d" % i for i in range(40)], topic=TOPIC)
    seen: list[bytes] = []

    async def handler(batch: Batch) -> None:
        for records in batch.records.values():
            seen.extend(r.value for r in records)

    runtime = ConsumerRuntime(
        settings,
        name="runtime-interval",
        topics=[topic],
        group_id=group,
        positions=FlakyPositions(failures=0),
        handler=handler,
        progress=Progress("runtime-interval", 60.0),
        commit_interval=3600.0,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    try:

        async def first_batch_committed() -> bool:
            assert not task.done(), task.exception()
            return sum((await committed_offsets(settings, group, TOPIC)).values()) > 0

        # The first commit is due at once; later batches wait an hour.
        await wait_for(first_batch_committed, timeout=60, what="the first batch's commit")
        first = await committed_offsets(settings, group, TOPIC)
        await publish(settings, [b"%d" % i for i in range(40, 80)], topic=TOPIC)
        await wait_for(lambda: _at_least(seen, 80), timeout=60, what="every record handled")
        assert await committed_offsets(settings, group, TOPIC) == first, (
            "inside the interval nothing is committed"
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert sum((await committed_offsets(settings, group, TOPIC)).values()) == 80, (
        "a graceful stop commits"
    )


async def _at_least(seen: list[bytes], n: int) -> bool:
    return len(seen) >= n
