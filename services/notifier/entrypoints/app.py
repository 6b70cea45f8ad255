"""`fulfil notifier`: the consumer, one sender per channel, the reminder scheduler.

The consumer runs on the shared consumer runtime (fulfil_platform.consumer):
the runtime polls, pauses a partition until its position is recovered,
backs off and reads a failed batch again, commits to Kafka and stops
gracefully; the notifier supplies its positions and its batch handler.

Positions live in PostgreSQL (`notifier_offsets`), written in the same
transaction as the outbox rows; Kafka's committed offsets are only a
courtesy for lag tooling (committed after the database). A partition with no
stored offset starts from Kafka's committed offset, or from the beginning.
When PostgreSQL cannot be asked, the partition is not consumed, `/readyz`
says so, and recovery is retried with backoff.

Start: migrate the notifier's tables, publish dead letters left over from a
crash, join the consumer group, start the senders and the reminder
scheduler. Stop (SIGTERM/SIGINT): the consumer finishes its batch and
commits, the senders finish their round and mark it, then everything closes
and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import TopicPartition

from fulfil_platform import kafka
from fulfil_platform.consumer import Batch, ConsumerRuntime, Handler, stop_on_signals, wait_out
from fulfil_platform.logs import get_logger
from fulfil_platform.metrics import OUTBOX, Health, Progress, serving
from fulfil_platform.startup import wait_for_kafka
from schemas.registry import ALLOCATIONS, DLQ_SUFFIX
from services.notifier.adapters.channels import Channel
from services.notifier.adapters.migrate import apply_migrations
from services.notifier.adapters.outbox import BACKLOG_STATUSES, OutboxStore, Quarantined
from services.notifier.adapters.read_model import ReadModel
from services.notifier.adapters.smtp import EmailChannel
from services.notifier.adapters.webhook import WebhookChannel
from services.notifier.config import NotifierSettings
from services.notifier.domain.decide import Policy
from services.notifier.service_layer.clock import Clock, SystemClock
from services.notifier.service_layer.consumer import BatchHandler
from services.notifier.service_layer.messages import renderer
from services.notifier.service_layer.reminders import ReminderScheduler
from services.notifier.service_layer.sender import ChannelSender

log = get_logger("notifier")

NOTIFIER_GROUP = "fulfil-notifier"


def group_id(settings: NotifierSettings) -> str:
    # The topic prefix separates environments sharing a cluster; the group follows it,
    # so two environments never rebalance each other.
    return f"{settings.fulfil_topic_prefix}{NOTIFIER_GROUP}"


def quarantine_topic(settings: NotifierSettings) -> str:
    """Where the notifier puts what it cannot apply: named after its consumer group, so a
    record the projector dead-letters too is not mixed up with (or doubled by) ours."""
    return group_id(settings) + DLQ_SUFFIX


@dataclass
class NotifierRuntime:
    """The running notifier's parts; returned (with its counters) after a clean stop."""

    settings: NotifierSettings
    clock: Clock
    progress: Progress
    pool: asyncpg.Pool | None = None
    store: OutboxStore | None = None
    handler: BatchHandler | None = None
    consumer: ConsumerRuntime | None = None
    senders: list[ChannelSender] = field(default_factory=list)


class StoredPositions:
    """The runtime's position port: the next offsets stored with the outbox rows.

    Nothing is kept in memory per partition, so release and discard have nothing
    to do; a failed batch is simply read again from the stored offsets."""

    def __init__(self, store: OutboxStore, topic: str):
        self.store = store
        self.topic = topic
        self.runtime: ConsumerRuntime | None = None

    async def recover(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        assert self.runtime is not None and self.runtime.consumer is not None
        # PostgreSQL away: raised, and the runtime keeps the partitions paused and retries.
        stored = await self.store.stored_offsets(self.topic, [tp.partition for tp in partitions])
        offsets = {}
        for tp in partitions:
            if tp.partition in stored:
                offsets[tp] = stored[tp.partition]
            else:
                offsets[tp] = (await self.runtime.consumer.committed(tp)) or 0
        log.info(
            "partitions recovered",
            partitions=sorted(tp.partition for tp in partitions),
            offsets={
                str(tp.partition): o
                for tp, o in sorted(offsets.items(), key=lambda i: i[0].partition)
            },
            stored=sorted(stored),
        )
        return offsets

    async def release(self, partitions: list[TopicPartition]) -> None:
        pass

    async def discard(self, partitions: list[TopicPartition]) -> None:
        pass


def batch_handler(handler: BatchHandler, progress: Progress) -> Handler:
    """The runtime's handler: one batch, one transaction (see BatchHandler)."""

    async def handle(batch: Batch) -> None:
        records = [record for records in batch.records.values() for record in records]
        # A member evicted while stalled writes nothing: its rows would be the new owner's too.
        await batch.fence()
        await handler.handle(records)
        progress.count_records(records)

    return handle


def describe(broker: Any, settings: NotifierSettings) -> None:
    """Documentation only (`make asyncapi`): the notifier consumes with the platform's runtime
    (raw aiokafka) and publishes dead letters with a plain producer, so FastStream cannot see
    it; this declares both on a broker that is never started."""
    from fulfil_platform.asyncapi_docs import DeadLetter, events_on, receives

    receives(
        broker,
        settings.topic(ALLOCATIONS),
        title="notifier",
        description="Turn allocation events into customer messages: one PostgreSQL transaction per "
        "batch stores the outbox rows (one per event and channel) and the next offsets.",
        payload=events_on(ALLOCATIONS),
    )
    broker.publisher(
        quarantine_topic(settings),
        title=f"notifier:{NOTIFIER_GROUP}{DLQ_SUFFIX}",
        description="Allocation events the notifier could not apply (contract, template or storage), "
        "with their original key; published once each.",
        schema=DeadLetter,
    )


def channels_for(settings: NotifierSettings, clock: Clock) -> list[Channel]:
    channels: list[Channel] = []
    if settings.email_enabled:
        channels.append(EmailChannel(settings))
    if settings.webhook_enabled:
        channels.append(WebhookChannel(settings, clock.now))
    return channels


async def run_notifier(
    settings: NotifierSettings,
    stop: asyncio.Event | None = None,
    *,
    clock: Clock | None = None,
    ready: asyncio.Event | None = None,
    handle_signals: bool = True,
    health: Health | None = None,
) -> NotifierRuntime:
    """Run until SIGTERM/SIGINT (or `stop`); returns the runtime (counters) after a clean stop."""
    health = health or Health()
    stop = stop or asyncio.Event()
    log.info("notifier configuration", settings=settings.loggable())
    signals = stop_on_signals(stop) if handle_signals else contextlib.nullcontext()
    async with serving(health, settings.fulfil_metrics_host, settings.fulfil_metrics_port):
        with signals:
            return await _run(settings, stop, clock, ready, health)


async def _run(
    settings: NotifierSettings,
    stop: asyncio.Event,
    clock: Clock | None,
    ready: asyncio.Event | None,
    health: Health,
) -> NotifierRuntime:
    settings.require_kafka()
    url = settings.require_database()
    settings.require_channels()
    progress = health.add(Progress("notifier", settings.fulfil_ready_stall_seconds))
    runtime = NotifierRuntime(settings=settings, clock=clock or SystemClock(), progress=progress)
    # Starting while PostgreSQL restarts or the broker is away waits, it does not exit.
    if not await wait_for_kafka(settings, stop):
        return runtime
    started = await wait_out(lambda: _connect(settings, url), stop, what="notifier start")
    if started is None:
        return runtime
    runtime.pool, producer = pool, producer = started
    try:
        await _serve(runtime, producer, stop, ready)
    finally:
        stop.set()
        await producer.stop()
        await pool.close()
        # Flat counter names: a key called "email" would be taken for an address by the redactor.
        counts = {
            f"{s.channel.name}_{k}": getattr(s, k)
            for s in runtime.senders
            for k in ("sent", "failed")
        }
        log.info(
            "notifier stopped", events=runtime.handler.records if runtime.handler else 0, **counts
        )
    return runtime


async def _connect(settings: NotifierSettings, url: str) -> tuple[asyncpg.Pool, Any]:
    """Migrations, the pool, the producer and the dead-letter topic: all or nothing."""
    await apply_migrations(url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=10)
    producer = kafka.producer(settings)
    try:
        await producer.start()
        # Clusters may not auto-create topics; ours is not in `fulfil topics create`'s list.
        await kafka.create_topics(settings, [quarantine_topic(settings)])
    except BaseException:
        await producer.stop()
        await pool.close()
        raise
    return pool, producer


def _wire(runtime: NotifierRuntime, producer: Any) -> ReminderScheduler:
    """The handler, the consumer runtime and the senders, sharing one store."""
    settings, progress = runtime.settings, runtime.progress
    assert runtime.pool is not None
    store = runtime.store = OutboxStore(runtime.pool)
    policy = Policy.from_settings(settings)
    render = renderer(settings.fulfil_notifier_message_id_domain)
    runtime.senders = [
        ChannelSender(c, store, settings, runtime.clock)
        for c in channels_for(settings, runtime.clock)
    ]
    wakers = [sender.wake for sender in runtime.senders]
    dlq = quarantine_topic(settings)

    async def publish_dead_letter(letter: Quarantined) -> None:
        await producer.send_and_wait(
            dlq, letter.value, key=letter.key, headers=list(letter.headers)
        )
        progress.dead_lettered(dlq, letter.kind)

    runtime.handler = BatchHandler(
        store, policy, render, runtime.clock, wakers=wakers, publish_dead_letter=publish_dead_letter
    )
    topic = settings.topic(ALLOCATIONS)
    positions = StoredPositions(store, topic)
    runtime.consumer = positions.runtime = ConsumerRuntime(
        settings,
        name="notifier",
        topics=[topic],
        group_id=group_id(settings),
        positions=positions,
        handler=batch_handler(runtime.handler, progress),
        progress=progress,
        max_records=settings.fulfil_notifier_batch_size,
        commit_offsets=True,
    )
    return ReminderScheduler(
        ReadModel(runtime.pool, settings.fulfil_read_model_schema),
        store,
        policy,
        render,
        runtime.clock,
        wakers=wakers,
    )


async def _serve(
    runtime: NotifierRuntime, producer: Any, stop: asyncio.Event, ready: asyncio.Event | None
) -> None:
    settings = runtime.settings
    reminders = _wire(runtime, producer)
    assert (
        runtime.handler is not None and runtime.consumer is not None and runtime.store is not None
    )
    # Dead letters recorded before a crash (committed, not yet published) go out now.
    await runtime.handler.publish_dead_letters()
    tasks = [
        asyncio.create_task(runtime.consumer.run(stop), name="notifier-consumer"),
        asyncio.create_task(
            _watch_outbox(runtime.store, [s.channel.name for s in runtime.senders], stop),
            name="notifier-outbox-metrics",
        ),
        *(
            asyncio.create_task(s.run(stop), name=f"notifier-sender-{s.channel.name}")
            for s in runtime.senders
        ),
    ]
    if settings.fulfil_notifier_reminder_days > 0:
        tasks.append(
            asyncio.create_task(
                reminders.run(stop, settings.fulfil_notifier_reminder_check_seconds),
                name="notifier-reminders",
            )
        )
    joined = asyncio.create_task(runtime.consumer.ready.wait())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([joined, stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if joined.done():
            log.info(
                "notifier started",
                channels=[s.channel.name for s in runtime.senders],
                group=group_id(settings),
            )
            if ready is not None:
                ready.set()
            await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.set()  # the consumer finishes its batch (rows and offsets commit together), the senders their round
        joined.cancel()
        stopper.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


async def _watch_outbox(
    store: OutboxStore, channels: list[str], stop: asyncio.Event, interval: float = 5.0
) -> None:
    """Keep the outbox gauges (pending and failed per channel) current."""
    while not stop.is_set():
        try:
            counts = await store.backlog_counts()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("outbox counts unavailable", error=type(exc).__name__)
        else:
            for channel in {*channels, *(c for c, _ in counts)}:
                for status in BACKLOG_STATUSES:
                    OUTBOX.labels(channel, status).set(counts.get((channel, status), 0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
