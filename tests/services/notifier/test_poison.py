"""Records the notifier cannot apply are quarantined once, and the messages behind them are sent.

Poison is written straight to allocations.v1 (bypassing the router's contract),
in the same partition as good events before and after it: the notifier must
neither stall nor drop the good ones, and each poison record must land on the
notifier's own dead-letter topic (`<group>.dlq`) exactly once, with a reason.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from fulfil_platform import kafka
from fulfil_platform.dead_letter_writer import H_OFFSET, H_REASON, H_STAGE
from schemas.registry import ALLOCATIONS
from services.notifier.entrypoints.app import NOTIFIER_GROUP
from tests.builders import allocations as b
from tests.kafka_helpers import publish, read_topic, wait_for
from tests.services.notifier.helpers import outbox, running_notifier

QUARANTINE = NOTIFIER_GROUP + ".dlq"  # read_topic adds the prefix, as group_id() does


def _poisoned(event: Any, mutate: Any) -> bytes:
    doc = orjson.loads(event.model_dump_json())
    mutate(doc)
    return json.dumps(doc).encode()  # orjson refuses integers beyond 64 bits


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        target = doc
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


POISON = {
    "nul_in_customer_name": (("data", "customer", "name"), "Eve\u0000Mallory"),
    "nul_in_order_id": (("data", "order_id"), "ord-\u0000-1"),
    "nul_in_sku": (("data", "lines", 0, "sku"), "SKU-\u0000"),
    "quantity_beyond_bigint": (("data", "lines", 0, "quantity"), 2**70),
}
# Odd but valid for the notifier (it stores the time as it came): it must not stall
# anything, and ends up either sent or quarantined (if the contract refuses it), once.
ODD = {
    "year_one_plus_14h": (("occurred_at",), "0001-01-01T00:00:00+14:00"),
}


async def _quarantined(settings: Any) -> list[Any]:
    return [r for rs in (await read_topic(settings, QUARANTINE)).values() for r in rs]


async def test_poison_is_quarantined_once_and_the_good_messages_behind_it_are_sent(
    notifier_settings, smtp_server
) -> None:
    settings = notifier_settings
    await kafka.create_topics(settings)
    # One warehouse: everything in one partition, the poison between good events.
    before = b.order_allocated("ord-before", b.customer(1))
    after = [b.backordered(f"ord-after-{n}", b.customer(10 + n)) for n in range(len(POISON))]
    poison = {
        kind: _poisoned(b.partially_shipped(f"ord-p-{n}", b.customer(30 + n)), _set(path, value))
        for n, (kind, (path, value)) in enumerate(POISON.items())
    }
    odd_event = b.partially_shipped("ord-odd", b.customer(50))
    odd = _poisoned(odd_event, _set(*ODD["year_one_plus_14h"]))
    await publish(settings, [before])
    producer = kafka.producer(settings)
    await producer.start()
    try:
        # Key = the warehouse, as the allocator writes them: same partition as the good events.
        sends = []
        for n, raw in enumerate(poison.values()):
            sends.append(
                await producer.send(settings.topic(ALLOCATIONS), raw, key=b.WAREHOUSE.encode())
            )
            sends.append(
                await producer.send(
                    settings.topic(ALLOCATIONS),
                    after[n].model_dump_json().encode(),
                    key=b.WAREHOUSE.encode(),
                )
            )
        metadata = [await s for s in sends]
        await (await producer.send(settings.topic(ALLOCATIONS), odd, key=b.WAREHOUSE.encode()))
        last = b.order_allocated("ord-last", b.customer(60))
        await (
            await producer.send(
                settings.topic(ALLOCATIONS),
                last.model_dump_json().encode(),
                key=b.WAREHOUSE.encode(),
            )
        )
    finally:
        await producer.stop()
    poison_offsets = {m.offset for m in metadata[0::2]}

    good = [before, *after, last]
    odd_mail = f"<{odd_event.id}.email@fulfil>"
    async with running_notifier(settings):

        async def all_good_mail():
            got = {m.message_id for m in smtp_server.mails}
            return {f"<{e.id}.email@fulfil>" for e in good} <= got

        await wait_for(all_good_mail, timeout=90, what="every good message behind the poison")

        async def all_quarantined():
            records = await _quarantined(settings)
            odd_done = odd_mail in {m.message_id for m in smtp_server.mails} or any(
                r.value == odd for r in records
            )
            return odd_done and len(records) >= len(poison) and records

        await wait_for(all_quarantined, timeout=30, what="every poison record quarantined")
    records = await _quarantined(settings)
    headers = [{k: v.decode() for k, v in r.headers} for r in records]
    odd_sent = odd_mail in {m.message_id for m in smtp_server.mails}
    expected = sorted([*poison.values(), *([] if odd_sent else [odd])])
    assert sorted(r.value for r in records) == expected, "each poison record exactly once"
    assert poison_offsets <= {int(h[H_OFFSET]) for h in headers}
    assert all(h[H_REASON] and h[H_STAGE] == "notifier" for h in headers)
    # Nothing of the poison was sent, and every good event was sent once.
    mails = [m.message_id for m in smtp_server.mails]
    assert sorted(mails) == sorted(
        [*(f"<{e.id}.email@fulfil>" for e in good), *([odd_mail] if odd_sent else [])]
    )
    rows = await outbox(settings, channel="email")
    assert {r["event_id"] for r in rows} == {e.id for e in good} | (
        {odd_event.id} if odd_sent else set()
    )
