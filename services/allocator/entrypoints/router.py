"""The router: validates inputs and re-keys them by stock pool onto the command log.

Each valid input from `orders.v1` / `inventory.v1` is re-published unchanged,
keyed by `warehouse_id`, so every decision about one stock pool is made from
one ordered partition. Invalid input goes to `<topic>.dlq` with the reason;
nothing behind it waits. Offsets are committed only after every publish of
the batch is acknowledged (at-least-once; the core drops duplicates by id).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from faststream import AckPolicy, Context, FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaAckableMessage
from faststream.kafka.subscriber.usecase import BatchSubscriber

from fulfil_platform import kafka
from fulfil_platform.config import Settings
from fulfil_platform.dead_letter_writer import dead_letter_headers
from fulfil_platform.faststream_broker import broker as make_broker
from fulfil_platform.logs import bound_record, get_logger
from fulfil_platform.metrics import Progress, watch_lag
from schemas import wire
from schemas.decode import decode_input
from schemas.registry import COMMANDS, DLQ_SUFFIX, INVENTORY, ORDERS, ContractError
from services.allocator.service_layer.refusal import refused_order

log = get_logger("allocator.router")

ROUTER_GROUP = "fulfil-allocator-router"


async def _raw_body(message: Any) -> Any:
    # The router forwards bytes untouched; FastStream's default JSON decode would be wasted work.
    return message.body


def undecodable_header(headers: Iterable[tuple[str, bytes | None]] | None) -> str | None:
    """The name of the first header whose value is not UTF-8 text, if any (a null value is fine)."""
    for name, value in headers or ():
        if value is not None:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return name
    return None


class RouterStats:
    def __init__(self, progress: Progress) -> None:
        self.routed = 0
        self.dead_lettered = 0
        self.progress = progress


def build_router(
    settings: Settings,
    broker: KafkaBroker | None = None,
    progress: Progress | None = None,
    *,
    on_startup: Sequence[Callable[[], Awaitable[None]]] = (),
    after_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
) -> tuple[FastStream, RouterStats]:
    """The router app. `on_startup` hooks run before its own (which start its producer),
    `after_shutdown` ones before it stops the producer (see router_app.create_app)."""
    broker = broker or make_broker(settings)
    app = FastStream(broker, on_startup=on_startup, after_shutdown=after_shutdown)
    stats = RouterStats(
        progress or Progress("allocator-router", settings.fulfil_ready_stall_seconds)
    )
    commands = settings.topic(COMMANDS)
    max_bytes = settings.fulfil_max_message_bytes
    # The hot path sends through a plain aiokafka producer in per-partition
    # batches (one future per batch): FastStream's per-message publish costs
    # more than routing itself. FastStream still owns consumption and acks.
    producers: list[Any] = []  # created on startup: aiokafka clients need a running loop
    subscriber = _subscribe(broker, settings, max_bytes)
    _manage(app, settings, stats, producers, lambda: subscriber.consumer)

    @subscriber
    async def route(_: list[Any], message: Any = Context("message")) -> None:  # noqa: B008 - FastStream DI
        raw = message.raw_message
        records = raw if isinstance(raw, tuple) else (raw,)
        with stats.progress.batch():
            await _route(records, producers[0], commands, max_bytes, stats)

    return app, stats


def _subscribe(broker: KafkaBroker, settings: Settings, max_bytes: int) -> BatchSubscriber:
    """The router's one subscriber: both input topics, in batches, acked after routing."""

    async def parse_batch(records: tuple[Any, ...], _faststream_parser: Any) -> KafkaAckableMessage:
        # FastStream's own batch parser decodes every header value as UTF-8: one
        # that is not (or a null value) raises, FastStream logs it, neither acks
        # nor rewinds, and the next batch's commit passes the whole batch
        # unrouted. The router reads no input header, so the message carries
        # none; `_route` checks each record's headers itself and dead-letters
        # the record that fails, never its neighbours.
        first, last = records[0], records[-1]
        return KafkaAckableMessage(
            raw_message=records,
            body=[],
            message_id=f"{first.offset}-{last.offset}-{first.timestamp}",
            consumer=subscriber.consumer,
        )

    subscriber = broker.subscriber(
        settings.topic(ORDERS),
        settings.topic(INVENTORY),
        batch=True,
        # prefixed: environments sharing a cluster stay apart
        group_id=settings.topic(ROUTER_GROUP),
        auto_offset_reset="earliest",
        max_records=5_000,
        batch_timeout_ms=100,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=max_bytes + 64 * 1024,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        parser=parse_batch,
        decoder=_raw_body,
        title="allocator-router",
        description="Validate inputs and re-key them by warehouse_id onto the command log.",
    )
    return subscriber


def _manage(
    app: FastStream,
    settings: Settings,
    stats: RouterStats,
    producers: list[Any],
    consumer: Callable[[], Any],
) -> None:
    """Start the producer and the lag watcher with the app; stop them with it."""
    lag_stop = asyncio.Event()
    lag_watchers: list[asyncio.Task[None]] = []

    @app.on_startup
    async def _start_producer() -> None:
        producers.append(kafka.producer(settings))
        await producers[0].start()

    @app.after_startup
    async def _watch_lag() -> None:
        lag_stop.clear()
        lag_watchers.append(
            asyncio.create_task(watch_lag(stats.progress, consumer, lag_stop), name="router-lag")
        )

    @app.on_shutdown
    async def _stop_watching() -> None:
        lag_stop.set()
        while lag_watchers:
            await lag_watchers.pop()

    @app.after_shutdown
    async def _stop_producer() -> None:
        while producers:
            await producers.pop().stop()


async def _route(
    records: tuple[Any, ...], producer: Any, commands: str, max_bytes: int, stats: RouterStats
) -> None:
    stats.progress.count_records(records)
    sender = kafka.BatchSender(producer)
    for record in records:
        value = record.value or b""
        try:
            event = _checked(record, value, max_bytes)
        except ContractError as exc:
            await _dead_letter(sender, record, value, exc)
            stats.dead_lettered += 1
            stats.progress.dead_lettered(record.topic + DLQ_SUFFIX, exc.kind)
            refusal = refused_order(value, exc, record.topic, record.partition, record.offset)
            if refusal is not None:  # upstream hears of it too (OrderRejected, invalid)
                await sender.add(
                    commands,
                    refusal[1],
                    key=refusal[0],
                    headers=[
                        ("fulfil-source-topic", record.topic.encode()),
                        ("fulfil-event-type", b"InvalidOrderReceived"),
                    ],
                )
            continue
        await sender.add(
            commands,
            value,
            key=event.data.warehouse_id.encode(),
            headers=[
                ("fulfil-source-topic", record.topic.encode()),
                ("fulfil-event-type", event.type.encode()),
            ],
        )
        stats.routed += 1
    # Acked (offsets committed) by FastStream only after this returns.
    await sender.flush()
    stats.progress.produced(commands, sender.records_per_topic.get(commands, 0))


def _checked(record: Any, value: bytes, max_bytes: int) -> wire.InputEvent:
    """The input the record carries; ContractError if it may not go onto the command log."""
    if len(value) > max_bytes:
        raise ContractError(
            f"message is {len(value)} bytes, more than the limit of {max_bytes}",
            "oversize",
        )
    if (name := undecodable_header(record.headers)) is not None:
        # Headers are text by contract: a binary one means a producer other
        # than the one the contract describes; its owner should see it.
        raise ContractError(f"header {name!r}: value is not UTF-8 text", "bad_header")
    return decode_input(value)


async def _dead_letter(
    sender: kafka.BatchSender, record: Any, value: bytes, exc: ContractError
) -> None:
    with bound_record(record):  # its ids, as far as its bytes have them
        log.warning("input dead-lettered", reason=exc.reason, kind=exc.kind)
    await sender.add(
        record.topic + DLQ_SUFFIX,
        value,
        key=record.key,
        headers=dead_letter_headers(
            reason=exc.reason,
            kind=exc.kind,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            stage="allocator-router",
            original=record.headers,
        ),
    )


def describe(broker: KafkaBroker, settings: Settings) -> None:
    """Documentation only (`make asyncapi`): what the router publishes through its plain
    aiokafka producer, which FastStream cannot see. The broker given is never started."""
    from fulfil_platform.asyncapi_docs import DeadLetter, events_on

    broker.publisher(
        settings.topic(COMMANDS),
        title=f"allocator-router:{COMMANDS}",
        description="Every valid input, bytes unchanged, re-keyed by data.warehouse_id (headers "
        "fulfil-source-topic, fulfil-event-type). Internal to the allocator.",
        schema=events_on(COMMANDS),
    )
    for source in (ORDERS, INVENTORY):
        broker.publisher(
            settings.topic(source) + DLQ_SUFFIX,
            title=f"allocator-router:{source}{DLQ_SUFFIX}",
            description=f"Input from {source} that failed the contract (bad JSON, unknown type, "
            "schema violation, oversize, a header value that is not UTF-8), with its original "
            "key and value bytes.",
            schema=DeadLetter,
        )
