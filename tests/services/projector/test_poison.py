"""Records the read models cannot hold are quarantined, not a crash loop (issue 12, defect 3).

Each poison record is written straight to the topics (bypassing the router's
contract): NUL characters in a customer name, an order id and a SKU, a year
0001 timestamp with a +14:00 offset. The projector keeps running, puts each
one on `<group>.dlq` with the reason in headers, applies every good record
before and after it, and a restart does not quarantine them again. A quantity
beyond the contract's bound does not even decode (bounds are checked on the
allocator's own log too): it is skipped. Sums beyond 32 bits are not poison at
all: they fit.
"""

from __future__ import annotations

import copy

import asyncpg
import orjson

from fulfil_platform import dead_letter_writer
from schemas.registry import ALLOCATIONS, ORDERS
from tests.kafka_helpers import publish, read_topic
from tests.services.projector import reference
from tests.services.projector.helpers import (
    assert_tables_equal,
    dump,
    failed,
    normalise_reference,
    publish_scenario,
    running,
    scenario,
    wait_caught_up,
)

DLQ = "fulfil-projector.dlq"


def _template(outputs: list, kind: str = "Backordered") -> dict:
    event = next(o for o in outputs if o.type == kind)
    return orjson.loads(orjson.dumps(event.model_dump(mode="json")))


def _poison_allocations(outputs: list) -> list[tuple[str, dict]]:
    """Allocation events for orders of their own, each with one thing PostgreSQL refuses."""
    base = _template(outputs)
    made = []

    def variant(name: str, change) -> None:
        doc = copy.deepcopy(base)
        doc["id"] = f"poison-{name}"
        doc["data"]["order_id"] = f"poison-{name}"
        change(doc)
        made.append((name, doc))

    variant("nul-name", lambda d: d["data"]["customer"].update(name="Ada\x00Lovelace"))
    variant("nul-order-id", lambda d: d["data"].update(order_id="poison\x00order"))
    variant("nul-sku", lambda d: d["data"]["lines"][0].update(sku="SKU\x00X"))
    variant("year-1", lambda d: d.update(occurred_at="0001-01-01T00:00:00+14:00"))
    return made


def _out_of_bounds(outputs: list) -> dict:
    """A line quantity beyond 32 bits: beyond the contract's bound, so it does not decode."""
    doc = _template(outputs)
    doc["id"] = doc["data"]["order_id"] = "poison-int-overflow"
    doc["data"]["lines"][0].update(
        quantity=3_000_000_000,
        allocated=0,
        backordered=3_000_000_000,
        reserved=0,
        rejected=0,
        cancelled=0,
        shipped=0,
    )
    return doc


def _poison_order_placed(inputs: list) -> dict:
    placed = next(i for i in inputs if i.type == "OrderPlaced")
    doc = orjson.loads(orjson.dumps(placed.model_dump(mode="json")))
    doc["id"] = "poison-placed"
    doc["data"]["order_id"] = "poison-placed"
    doc["data"]["placed_at"] = "0001-01-01T00:00:00+14:00"
    return doc


async def _dead_letters(settings) -> list:
    return [r for records in (await read_topic(settings, DLQ)).values() for r in records]


async def test_poison_records_are_quarantined_and_the_good_ones_applied(pg_settings) -> None:
    inputs, outputs = scenario(240, seed=3)
    half = len(outputs) // 2
    await publish_scenario(pg_settings, inputs, outputs[:half])
    poisons = _poison_allocations(outputs)
    await publish(pg_settings, [orjson.dumps(doc) for _, doc in poisons], topic=ALLOCATIONS)
    await publish(pg_settings, [orjson.dumps(_out_of_bounds(outputs))], topic=ALLOCATIONS)
    await publish(pg_settings, [orjson.dumps(_poison_order_placed(inputs))], topic=ORDERS)
    await publish(pg_settings, outputs[half:])

    async with running(pg_settings, max_records=500) as projector:
        await wait_caught_up(pg_settings, check=lambda: failed(projector))
        # The contract now refuses a year-1 placed_at: the projector skips it like any
        # input the router dead-letters, so only the allocation poisons are quarantined;
        # the quantity out of bounds does not decode: skipped too.
        assert projector.quarantined == len(poisons)
        assert projector.skipped == 2

    assert_tables_equal(
        await dump(pg_settings.database_url), normalise_reference(reference.fold(inputs, outputs))
    )
    letters = await _dead_letters(pg_settings)
    assert len(letters) == len(poisons)
    ids = set()
    for record in letters:
        headers = dict(record.headers)
        ids.add(orjson.loads(record.value)["id"])
        assert headers[dead_letter_writer.H_KIND] == b"unstorable"
        assert headers[dead_letter_writer.H_STAGE] == b"projector"
        assert headers[dead_letter_writer.H_REASON]
        assert headers[dead_letter_writer.H_TOPIC] in (
            pg_settings.topic(ALLOCATIONS).encode(),
            pg_settings.topic(ORDERS).encode(),
        )
        assert int(headers[dead_letter_writer.H_OFFSET]) >= 0
        assert (
            b"Ada" not in headers[dead_letter_writer.H_REASON]
        )  # the reason names the problem, not the data
    assert ids == {doc["id"] for _, doc in poisons}

    # A restart starts after them: nothing quarantined twice, later records applied.
    more_inputs, more_outputs = scenario(60, seed=4)
    await publish_scenario(pg_settings, more_inputs, more_outputs)
    async with running(pg_settings) as projector:
        await wait_caught_up(pg_settings, check=lambda: failed(projector))
        assert projector.quarantined == 0
    assert len(await _dead_letters(pg_settings)) == len(poisons)


async def test_backlog_sums_beyond_32_bits_are_stored(pg_settings) -> None:
    inputs, outputs = scenario(240, seed=3)
    base = _template(outputs)
    big = []
    for n in range(3):
        doc = copy.deepcopy(base)
        doc["id"] = f"big-{n}"
        doc["data"]["order_id"] = f"big-{n}"
        # Within the contract (a line holds at most 1,000,000 units), beyond 32 bits summed.
        doc["data"]["lines"] = [
            dict(
                doc["data"]["lines"][0],
                line_no=line_no,
                sku="SKU-BIG",
                quantity=1_000_000,
                allocated=0,
                backordered=1_000_000,
                reserved=0,
                rejected=0,
                cancelled=0,
                shipped=0,
            )
            for line_no in range(1, 1_001)
        ]
        big.append(orjson.dumps(doc))
    await publish_scenario(pg_settings, inputs, outputs)
    await publish(pg_settings, big, topic=ALLOCATIONS)
    async with running(pg_settings) as projector:
        await wait_caught_up(pg_settings, check=lambda: failed(projector))
    conn = await asyncpg.connect(pg_settings.database_url)
    try:
        units, orders = await conn.fetchrow(
            "SELECT backordered_units, open_orders FROM projection.sku_backlog WHERE sku = 'SKU-BIG'"
        )
    finally:
        await conn.close()
    assert (units, orders) == (3_000_000_000, 3)
