"""`fulfil notifier`: the FastStream consumer, one sender per channel, the reminder scheduler.

Start: migrate the notifier's tables, join the consumer group (each assigned
partition is moved to the offset stored in PostgreSQL with the outbox rows),
start the senders and the reminder scheduler. Stop (SIGTERM/SIGINT): the
consumer finishes its batch and commits, the senders finish their round and
mark it, then everything closes and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import ConsumerRebalanceListener, TopicPartition
from faststream import AckPolicy, Context, FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.schemas import Topic

from fulfil.faststream_broker import broker as make_broker
from fulfil.kafka import create_topics
from fulfil.logs import get_logger
from fulfil.metrics import OUTBOX, Health, Progress, serving, watch_lag
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
    """What the FastStream handler and the rebalance listener need once started."""

    settings: NotifierSettings
    clock: Clock
    pool: asyncpg.Pool | None = None
    store: OutboxStore | None = None
    handler: BatchHandler | None = None
    subscriber: Any = None
    senders: list[ChannelSender] = field(default_factory=list)
    assigned: set[int] = field(default_factory=set)
    progress: Progress | None = None


# FastStream injects the raw message through this marker (a module-level singleton).
_MESSAGE = Context("message")


async def _raw_body(message: Any) -> Any:
    # Records are parsed by the contract in the handler; FastStream's JSON decode would be wasted.
    return message.body


class _SeekToStoredOffsets(ConsumerRebalanceListener):
    """On (re)assignment, continue where the outbox transaction says we are.

    Kafka's committed offsets are only a courtesy for lag tooling (committed
    after the database); PostgreSQL is the truth. A partition with no stored
    offset starts from Kafka's committed offset, or from the beginning.
    """

    def __init__(self, runtime: NotifierRuntime, topic: str):
        self.runtime = runtime
        self.topic = topic

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.runtime.assigned -= {tp.partition for tp in revoked if tp.topic == self.topic}

    async def on_partitions_assigned(self, assigned: Any) -> None:
        mine = [tp for tp in assigned if tp.topic == self.topic]
        self.runtime.assigned |= {tp.partition for tp in mine}
        store, subscriber = self.runtime.store, self.runtime.subscriber
        if not mine or store is None or subscriber is None or subscriber.consumer is None:
            return
        stored = await store.stored_offsets(self.topic, [tp.partition for tp in mine])
        for tp in mine:
            if tp.partition in stored:
                subscriber.consumer.seek(TopicPartition(tp.topic, tp.partition), stored[tp.partition])
        log.info("partitions assigned", partitions=sorted(tp.partition for tp in mine),
                 stored_offsets={str(p): o for p, o in sorted(stored.items())})


def build_app(settings: NotifierSettings, runtime: NotifierRuntime | None = None,
              broker: KafkaBroker | None = None) -> tuple[FastStream, NotifierRuntime]:
    """The FastStream app (importable without a database, e.g. for AsyncAPI docs)."""
    runtime = runtime or NotifierRuntime(settings=settings, clock=SystemClock())
    if runtime.progress is None:
        runtime.progress = Progress("notifier", settings.fulfil_ready_stall_seconds)
    progress = runtime.progress
    broker = broker or make_broker(settings)
    topic = settings.topic(ALLOCATIONS)
    max_bytes = settings.fulfil_max_message_bytes

    subscriber = broker.subscriber(
        Topic(topic, declare=False),  # topics are provisioned by `fulfil topics create`
        batch=True,
        group_id=group_id(settings),
        auto_offset_reset="earliest",
        max_records=settings.fulfil_notifier_batch_size,
        batch_timeout_ms=200,
        max_partition_fetch_bytes=max_bytes + 64 * 1024,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        listener=_SeekToStoredOffsets(runtime, topic),
        # Success: commit to Kafka too (after PostgreSQL). Failure: rewind and read again.
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=_raw_body,
        title="notifier",
        description="Turn allocation events into customer messages (outbox in PostgreSQL).",
    )

    @subscriber
    async def notify(_: list[Any], message: Any = _MESSAGE) -> None:
        records = message.raw_message if isinstance(message.raw_message, tuple) else (message.raw_message,)
        assert runtime.handler is not None, "run_notifier() wires the handler before starting"
        with progress.batch():
            progress.count_records(records)
            await runtime.handler.handle(records)

    runtime.subscriber = subscriber
    return FastStream(broker), runtime


def describe(broker: KafkaBroker, settings: NotifierSettings) -> None:
    """Documentation only (`make asyncapi`): the dead letters `run_notifier` publishes with
    `broker.publish`, which FastStream cannot document by itself. The broker is never started."""
    from schemas.asyncapi import DeadLetter

    # TODO(schemas owner): the notifier now dead-letters to quarantine_topic(settings)
    # (`fulfil-notifier.dlq`), not allocations.v1.dlq; the AsyncAPI document, base_topics()
    # and tests/schemas/test_asyncapi.py still expect the old address, so it is kept here
    # until they move together (publisher address → quarantine_topic(settings)).
    broker.publisher(
        settings.topic(ALLOCATIONS) + DLQ_SUFFIX,
        title=f"notifier:{ALLOCATIONS}{DLQ_SUFFIX}",
        description="Allocation events the notifier could not parse, with their original key.",
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
    log.info("notifier configuration", settings=settings.loggable())
    async with serving(health, settings.fulfil_metrics_host, settings.fulfil_metrics_port):
        return await _run(settings, stop or asyncio.Event(), clock, ready, handle_signals, health)


async def _run(settings: NotifierSettings, stop: asyncio.Event, clock: Clock | None, ready: asyncio.Event | None,
               handle_signals: bool, health: Health) -> NotifierRuntime:
    settings.require_kafka()
    url = settings.require_database()
    settings.require_channels()
    await apply_migrations(url)

    progress = health.add(Progress("notifier", settings.fulfil_ready_stall_seconds))
    runtime = NotifierRuntime(settings=settings, clock=clock or SystemClock(), progress=progress)
    app, runtime = build_app(settings, runtime)
    broker = app.broker
    assert broker is not None
    runtime.pool = pool = await asyncpg.create_pool(url, min_size=1, max_size=10)
    store = runtime.store = OutboxStore(pool)
    policy = Policy.from_settings(settings)
    render = renderer(settings.fulfil_notifier_message_id_domain)

    wakers = []
    for channel in channels_for(settings, runtime.clock):
        sender = ChannelSender(channel, store, settings, runtime.clock)
        runtime.senders.append(sender)
        wakers.append(sender.wake)

    dlq = quarantine_topic(settings)

    async def publish_dead_letter(letter: Quarantined) -> None:
        await broker.publish(
            letter.value, dlq, key=letter.key,
            headers={k: v.decode("utf-8", "replace") for k, v in letter.headers},
        )
        progress.dead_lettered(dlq, letter.kind)

    runtime.handler = BatchHandler(store, policy, render, runtime.clock, wakers=wakers,
                                   publish_dead_letter=publish_dead_letter)
    reminders = ReminderScheduler(ReadModel(pool, settings.fulfil_read_model_schema), store, policy,
                                  render, runtime.clock, wakers=wakers)

    tasks: list[asyncio.Task[Any]] = []
    loop = asyncio.get_running_loop()
    signals = []
    for signum in (signal.SIGTERM, signal.SIGINT) if handle_signals else ():
        try:
            loop.add_signal_handler(signum, stop.set)
            signals.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
    try:
        # Clusters may not auto-create topics; ours is not in `fulfil topics create`'s list.
        await create_topics(settings, [dlq])
        await broker.start()
        # Dead letters recorded before a crash (committed, not yet published) go out now.
        await runtime.handler.publish_dead_letters()
        tasks.append(asyncio.create_task(
            watch_lag(progress, lambda: runtime.subscriber.consumer, stop), name="notifier-lag"))
        tasks.append(asyncio.create_task(
            _watch_outbox(store, [s.channel.name for s in runtime.senders], stop), name="notifier-outbox-metrics"))
        for sender in runtime.senders:
            tasks.append(asyncio.create_task(sender.run(stop), name=f"notifier-sender-{sender.channel.name}"))
        if settings.fulfil_notifier_reminder_days > 0:
            tasks.append(asyncio.create_task(
                reminders.run(stop, settings.fulfil_notifier_reminder_check_seconds), name="notifier-reminders"))
        log.info("notifier started", channels=list(policy.channels), group=group_id(settings))
        if ready is not None:
            ready.set()
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        stop.set()
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        stop.set()
        await broker.stop()  # waits for the batch in hand: rows and offsets commit together
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await pool.close()
        for signum in signals:
            loop.remove_signal_handler(signum)
        # Flat counter names: a key called "email" would be taken for an address by the redactor.
        counts = {f"{s.channel.name}_{k}": getattr(s, k) for s in runtime.senders for k in ("sent", "failed")}
        log.info("notifier stopped", events=runtime.handler.records, **counts)
    return runtime


async def _watch_outbox(store: OutboxStore, channels: list[str], stop: asyncio.Event, interval: float = 5.0) -> None:
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
