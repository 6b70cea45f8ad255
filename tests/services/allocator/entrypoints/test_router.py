"""The router alone on the real broker: records it cannot decode never cost the batch around them."""

from __future__ import annotations

import asyncio
import base64

import orjson
import pytest
from aiokafka import TopicPartition

from fulfil_platform import kafka
from fulfil_platform.dead_letter_writer import (
    H_KIND,
    H_OFFSET,
    H_REASON,
    H_TOPIC,
    MAX_REASON_BYTES,
    dead_letter_headers,
)
from fulfil_platform.metrics import Health
from schemas.registry import COMMANDS, ORDERS, parse_input
from services.allocator.entrypoints.app import run_allocator
from services.allocator.entrypoints.router import ROUTER_GROUP
from tests.builders.samples import VALID
from tests.kafka_helpers import committed_offsets, read_topic, wait_for

NOT_UTF8 = b"\xff\xfe\x80 caf\xe9"


def _order(event_id: str) -> bytes:
    return orjson.dumps({**VALID["OrderPlaced"], "id": event_id})


def _order_with(event_id: str, field: str, value: object) -> bytes:
    return orjson.dumps(
        {
            **VALID["OrderPlaced"],
            "id": event_id,
            "data": {**VALID["OrderPlaced"]["data"], field: value},
        }
    )


@pytest.fixture
async def running_router(settings):
    await kafka.create_topics(settings)
    stop = asyncio.Event()
    task: list[asyncio.Task] = []
    health = Health()

    def start() -> Health:
        task.append(asyncio.create_task(run_allocator(settings, "router", stop, health)))
        return health

    yield start
    stop.set()
    if task:
        await asyncio.wait_for(task[0], 60)


async def _send_all(settings, records: list[tuple[bytes | None, bytes, list]]) -> None:
    """One partition, one produce batch: the router fetches them together."""
    producer = kafka.producer(settings, linger_ms=50)
    await producer.start()
    try:
        futures = [
            await producer.send(
                settings.topic(ORDERS), value, key=key, headers=headers, partition=0
            )
            for key, value, headers in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def test_undecodable_headers_are_dead_lettered_and_the_batch_around_them_is_routed(
    settings, running_router
) -> None:
    good_ids = [f"good-{i}" for i in range(40)]
    records: list[tuple[bytes | None, bytes, list]] = [
        (b"wh-1", _order(i), []) for i in good_ids[:20]
    ]
    # In the middle of the batch: a valid envelope with a non-UTF-8 header value (FastStream's
    # batch parser raised on it and the whole batch was lost), one with a binary key (orders.v1
    # keys are the upstream's choice and the router never reads them: routed), one with a
    # header without value (legal in Kafka), and a value that is not UTF-8 at all.
    records.append((b"wh-1", _order("bad-header"), [("traceparent", NOT_UTF8), ("shop", b"ok")]))
    records.append((NOT_UTF8, _order("binary-key"), [("shop", b"ok")]))
    records.append((None, _order("null-header"), [("empty", None)]))
    records.append((b"wh-1", NOT_UTF8, []))
    # Valid JSON the stores downstream could not hold: the contract stops it here (defect 3).
    records.append(
        (
            b"wh-1",
            _order_with(
                "nul-name",
                "customer",
                {"customer_id": "c-1", "email": "a@b.example", "name": "Ann\x00"},
            ),
            [],
        )
    )
    records.append((b"wh-1", _order_with("year-one", "placed_at", "0001-01-01T00:00:00+14:00"), []))
    records += [(b"wh-1", _order(i), []) for i in good_ids[20:]]
    await _send_all(settings, records)
    health = running_router()

    async def batch_consumed():
        progress = health.components.get("allocator-router")
        return (
            progress is not None
            and progress.lag.get(TopicPartition(settings.topic(ORDERS), 0)) == 0
        )

    await wait_for(batch_consumed, timeout=60, what="the router to consume the batch")
    # A later batch: its ack commits whatever the consumer has passed, the batch above included.
    await _send_all(settings, [(b"wh-1", _order("later"), [])])
    records.append((b"wh-1", _order("later"), []))
    routed_ids = good_ids + ["binary-key", "null-header", "later"]

    async def all_dead_lettered():
        letters = [r for rs in (await read_topic(settings, ORDERS + ".dlq")).values() for r in rs]
        return letters if len(letters) >= 4 else None

    async def committed_past_all():
        offsets = await committed_offsets(settings, settings.topic(ROUTER_GROUP), ORDERS)
        return offsets if sum(offsets.values()) == len(records) else None

    await wait_for(
        committed_past_all, timeout=60, what="router offsets committed past every record"
    )
    # Committed only after the batch's sends were acknowledged: everything routed is there now.
    commands = [r for rs in (await read_topic(settings, COMMANDS)).values() for r in rs]
    # Every good record exactly once; the refused orders whose ids can be read are told
    # to the core (InvalidOrderReceived, for an OrderRejected upstream can hear); nothing else.
    refusals = [
        orjson.loads(r.value)
        for r in commands
        if orjson.loads(r.value)["type"] == "InvalidOrderReceived"
    ]
    assert sorted(r["data"]["event_id"] for r in refusals) == ["nul-name", "year-one"]
    assert b"Ann" not in b"".join(r.value for r in commands if b"InvalidOrderReceived" in r.value)
    routed = [r for r in commands if b"InvalidOrderReceived" not in r.value]
    assert sorted(parse_input(r.value).id for r in routed) == sorted(routed_ids)

    letters = await wait_for(
        all_dead_lettered, timeout=30, what="the undecodable records in the DLQ"
    )
    assert len(letters) == 4
    for letter in letters:
        # A dead letter's own headers are text: any reader (FastStream's parser included) can open it.
        headers = {k: v.decode("utf-8") for k, v in letter.headers}
        assert headers[H_TOPIC] == settings.topic(ORDERS)
        assert int(headers[H_OFFSET]) >= 0
        assert headers[H_REASON]
    reasons = {
        orjson.loads(letter.value)["id"]: dict(letter.headers)[H_REASON].decode()
        for letter in letters
        if letter.value != NOT_UTF8
    }
    assert "data.customer.name" in reasons["nul-name"]
    assert "data.placed_at" in reasons["year-one"]
    by_kind = {dict(letter.headers)[H_KIND].decode(): letter for letter in letters}
    assert set(by_kind) == {"bad_header", "bad_json", "schema_violation"}
    header_letter = by_kind["bad_header"]
    assert header_letter.value == _order("bad-header")  # original bytes, untouched
    assert header_letter.key == b"wh-1"
    headers = {k: v.decode() for k, v in header_letter.headers}
    assert "traceparent" in headers[H_REASON]
    # The original header survives in a safe form, the valid ones as they were.
    assert base64.b64decode(headers["fulfil-dlq-b64.traceparent"]) == NOT_UTF8
    assert "traceparent" not in headers
    assert headers["shop"] == "ok"
    assert by_kind["bad_json"].value == NOT_UTF8


def test_a_dead_letters_own_headers_are_always_utf8() -> None:
    headers = dead_letter_headers(
        reason="€" * 5_000,
        kind="schema_violation",
        topic="orders.v1",
        partition=0,
        offset=7,
        stage="allocator-router",
        original=[("bin", NOT_UTF8), ("ok", b"x"), ("null", None)],
    )
    for _, value in headers:
        value.decode("utf-8")  # a cut reason ends on a character boundary
    as_dict = dict(headers)
    assert len(as_dict[H_REASON]) <= MAX_REASON_BYTES
    assert base64.b64decode(as_dict["fulfil-dlq-b64.bin"]) == NOT_UTF8
    assert as_dict["ok"] == b"x"
