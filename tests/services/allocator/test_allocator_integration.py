"""Router + core end to end on the real broker, including every kind of bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from fulfil_platform import kafka
from fulfil_platform.dead_letter_writer import H_KIND, H_OFFSET, H_REASON, H_TOPIC
from schemas.registry import ALLOCATIONS, COMMANDS, INVENTORY, ORDERS, parse_input, parse_output
from services.allocator.entrypoints.app import run_allocator
from tests.builders.samples import VALID
from tests.kafka_helpers import (
    TopicWatcher,
    committed_offsets,
    expected_and_actual,
    publish,
    read_topic,
    wait_for,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "store.jsonl"


def _headers(record) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers or ()}


@pytest.fixture
async def running_allocator(settings):
    await kafka.create_topics(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(run_allocator(settings, "all", stop))
    yield task
    stop.set()
    await asyncio.wait_for(task, 60)


async def _outputs(settings) -> list:
    records = await read_topic(settings, ALLOCATIONS)
    return [parse_output(r.value) for p in sorted(records) for r in records[p]]


async def test_example_scenario_end_to_end(settings, running_allocator) -> None:
    inputs = [parse_input(line) for line in EXAMPLES.read_bytes().splitlines()]
    # Orders and inventory are separate topics with no order between them: publish the
    # scenario one event at a time, each once the previous one reached the command log.
    async with TopicWatcher(settings, COMMANDS) as commands:
        for count, event in enumerate(inputs, start=1):
            await publish(settings, [event])

            async def routed(count=count):
                return await commands.total() >= count

            await wait_for(routed, timeout=30, what=f"command {count} routed")

    async def settled():
        outs = await _outputs(settings)
        return (
            outs
            if any(o.type == "BackorderAllocated" and o.data.order_id == "ord-1001" for o in outs)
            else None
        )

    outputs = await wait_for(settled, timeout=90, what="the final receipt to fill ord-1001")
    by_order: dict[str, list] = {}
    for out in outputs:
        if hasattr(out.data, "order_id"):
            by_order.setdefault(out.data.order_id, []).append(out)

    # An order for 10 with 4 in stock, ship_partial: 4 ship now, 6 backordered until the inbound.
    first = by_order["ord-1001"][0]
    assert first.type == "PartiallyShipped"
    line = first.data.lines[0]
    assert (line.shipped, line.backordered, str(line.eta)) == (4, 6, "2026-11-16")
    # The supplier delay moves its date, and only for orders waiting on that inbound.
    moved = [o for o in by_order["ord-1001"] if o.type == "BackorderEtaChanged"]
    assert moved and str(moved[0].data.lines[0].previous_eta) == "2026-11-16"
    assert str(moved[0].data.lines[0].eta) == "2026-11-23"
    # Not backorderable: the unavailable unit is rejected, the 2 on the shelf ship.
    assert {o.type for o in by_order["ord-1003"]} == {"OrderRejected", "OrderAllocated"}
    # Causation: every order output names the input that caused it.
    input_ids = {e.id for e in inputs}
    assert all(o.causation_id in input_ids for o in outputs)
    # Outputs are headed with their command position, and equal a clean fold of the command log.
    expected, actual = await expected_and_actual(settings)
    assert actual == expected
    for records in (await read_topic(settings, ALLOCATIONS)).values():
        for record in records:
            assert {
                "fulfil-command-partition",
                "fulfil-command-offset",
                "fulfil-output-index",
            } <= set(_headers(record))


BAD = {
    "bad_json": b'{"id": "x", "type": "OrderPlaced", ',
    "unknown_type": orjson.dumps(
        {**VALID["OrderPlaced"], "id": "bad-type", "type": "OrderTeleported"}
    ),
    "schema_violation": orjson.dumps(
        {**VALID["OrderPlaced"], "id": "bad-schema", "data": {"order_id": "o"}}
    ),
    "bad_quantity": orjson.dumps(
        {
            **VALID["StockReceived"],
            "id": "bad-qty",
            "data": {**VALID["StockReceived"]["data"], "quantity": -4},
        }
    ),
    "oversize": orjson.dumps({**VALID["StockAdjusted"], "id": "big", "padding": "x" * 1_010_000}),
}


async def test_bad_input_goes_to_the_dlq_and_good_input_around_it_is_processed(
    settings, running_allocator
) -> None:
    good_before = parse_input(orjson.dumps({**VALID["StockReceived"], "id": "good-1"}))
    good_after = parse_input(orjson.dumps({**VALID["OrderPlaced"], "id": "good-2"}))
    await publish(settings, [good_before])
    for kind, raw in BAD.items():
        await publish(
            settings, [raw], topic=INVENTORY if kind in ("bad_quantity", "oversize") else ORDERS
        )
    await publish(settings, [good_after])

    async def both_good_processed():
        outs = await _outputs(settings)
        return {o.causation_id for o in outs} >= {"good-1", "good-2"}

    await wait_for(both_good_processed, timeout=90, what="good inputs around the bad ones")

    async def dead_letters():
        found = []
        for base in (ORDERS, INVENTORY):
            for records in (await read_topic(settings, base + ".dlq")).values():
                found.extend(records)
        return found if len(found) == len(BAD) else None

    letters = await wait_for(dead_letters, timeout=60, what="every bad input in a DLQ")
    by_kind = {_headers(r)[H_KIND]: r for r in letters}
    assert set(by_kind) == set(BAD)
    for kind, record in by_kind.items():
        headers = _headers(record)
        assert record.value == BAD[kind]  # the original bytes, untouched
        assert headers[H_REASON]
        assert headers[H_TOPIC] in (settings.topic(ORDERS), settings.topic(INVENTORY))
        assert int(headers[H_OFFSET]) >= 0
    assert "data.quantity" in _headers(by_kind["bad_quantity"])[H_REASON]
    assert "limit" in _headers(by_kind["oversize"])[H_REASON]
    # Nothing invalid reached the command log.
    commands = [r for rs in (await read_topic(settings, COMMANDS)).values() for r in rs]
    assert sorted(parse_input(r.value).id for r in commands) == ["good-1", "good-2"]

    async def router_committed():
        offsets = await committed_offsets(
            settings, settings.topic("fulfil-allocator-router"), ORDERS
        )
        return sum(offsets.values()) == 4  # every message on orders.v1 is consumed, bad or good

    await wait_for(router_committed, timeout=30, what="router offsets committed past the bad input")


async def test_a_shortfall_is_reported_on_the_topic_and_logged_for_operators(
    settings, running_allocator
) -> None:
    from structlog.testing import capture_logs

    received = {
        **VALID["StockReceived"],
        "id": "sf-receipt",
        "data": {
            **VALID["StockReceived"]["data"],
            "receipt_id": "sf-r",
            "sku": "SF-1",
            "quantity": 5,
        },
    }
    adjusted = {
        **VALID["StockAdjusted"],
        "id": "sf-adjust",
        "data": {
            **VALID["StockAdjusted"]["data"],
            "adjustment_id": "sf-a",
            "sku": "SF-1",
            "delta": -8,
        },
    }
    with capture_logs() as logs:
        await publish(
            settings, [parse_input(orjson.dumps(received)), parse_input(orjson.dumps(adjusted))]
        )

        async def shortfall_reported():
            positions = [
                o
                for o in await _outputs(settings)
                if o.type == "StockPositionChanged" and o.causation_id == "sf-adjust"
            ]
            return positions or None

        [position] = await wait_for(
            shortfall_reported, timeout=60, what="the adjustment's stock position"
        )

        async def logged():
            return [entry for entry in logs if entry["event"] == "stock shortfall"] or None

        [entry] = await wait_for(logged, timeout=10, what="the shortfall log line")
    assert (position.data.available, position.data.shortfall) == (0, 3)
    assert entry["log_level"] == "warning"
    assert (entry["sku"], entry["shortfall"], entry["causation_id"]) == ("SF-1", 3, "sf-adjust")


async def test_clock_ticks_reach_every_core_partition_and_never_come_from_inventory(
    settings, running_allocator
) -> None:
    """`fulfil clock tick` writes a ClockTicked on every command partition; the core folds
    it (an overdue inbound loses its customers' date); the router dead-letters a tick
    sent to inventory.v1 (an internal command is never accepted from upstream)."""
    from datetime import UTC, datetime

    from services.allocator.service_layer.clock import tick, write_ticks
    from tests.builders.inputs import Events

    ev = Events(prefix="clock")
    await publish(settings, [ev.inbound_scheduled("IN-C", "WH-C", [("SKU-C", 5)], "2026-11-16")])
    async with TopicWatcher(settings, COMMANDS) as commands:
        await wait_for(lambda: _at_least(commands, 1), timeout=30, what="the inbound routed")
        await publish(settings, [ev.order_placed("ord-c", "WH-C", [("SKU-C", 2)])])
        await wait_for(lambda: _at_least(commands, 2), timeout=30, what="the order routed")
    forged = tick(datetime(2030, 1, 1, tzinfo=UTC), 0)
    await publish(settings, [forged], topic=INVENTORY)
    assert (
        await write_ticks(settings, datetime(2026, 11, 20, 8, tzinfo=UTC))
        == settings.fulfil_partitions
    )

    async def undated():
        for out in await _outputs(settings):
            if out.type == "BackorderEtaChanged" and out.data.order_id == "ord-c":
                return out
        return None

    changed = await wait_for(undated, timeout=60, what="the overdue inbound's customer told")
    assert changed.data.lines[0].eta is None and changed.data.cause.reason == "inbound_overdue"
    dead = await wait_for(
        lambda: _records(settings, INVENTORY + ".dlq"),
        timeout=30,
        what="the forged tick dead-lettered",
    )
    assert _headers(dead[0])[H_KIND] == "unknown_type"
    ticks = [
        r
        for rs in (await read_topic(settings, COMMANDS)).values()
        for r in rs
        if _headers(r).get("fulfil-event-type") == "ClockTicked"
    ]
    assert sorted(r.partition for r in ticks) == list(range(settings.fulfil_partitions))
    expected, actual = await expected_and_actual(settings)
    assert actual == expected


async def _at_least(watcher: TopicWatcher, count: int) -> bool:
    return await watcher.total() >= count


async def _records(settings, base_topic: str) -> list | None:
    found = [r for rs in (await read_topic(settings, base_topic)).values() for r in rs]
    return found or None


async def test_a_refused_order_is_dead_lettered_and_told_upstream_without_its_values(
    settings, running_allocator
) -> None:
    order = VALID["OrderPlaced"]
    refused = orjson.dumps(
        {
            **order,
            "id": "bad-order-1",
            "data": {
                **order["data"],
                "order_id": "o-refused",
                "customer": {"customer_id": "c-9", "email": "ann.secret@@shop.example"},
                "lines": [{"line_no": 1, "sku": "SKU-1", "quantity": 0}],
            },
        }
    )
    # A producer retry sends it twice; a valid order of the same warehouse follows (the
    # same command partition, so its output means both refusals were folded before it).
    after = parse_input(orjson.dumps({**order, "id": "good-after"}))
    await publish(settings, [refused, refused], topic=ORDERS)
    await publish(settings, [after])

    async def folded():
        outputs = await _outputs(settings)
        return outputs if any(o.causation_id == "good-after" for o in outputs) else None

    outputs = await wait_for(folded, timeout=90, what="the order published after the refusal")
    found = [o for o in outputs if o.type == "OrderRejected"]
    assert len(found) == 1, "one rejection, however often the refused order came"
    letters = await wait_for(
        lambda: _records(settings, ORDERS + ".dlq"), timeout=60, what="the dead letters"
    )
    assert [r.value for r in letters] == [refused, refused]
    rejected = found[0]
    data = rejected.data
    assert (data.order_id, data.warehouse_id, data.reason) == (
        "o-refused",
        order["data"]["warehouse_id"],
        "invalid",
    )
    assert data.customer is None and data.lines == []
    paths = {issue.path for issue in data.errors}
    assert {"data.customer.email", "data.lines.0.quantity"} <= paths
    assert b"ann.secret" not in orjson.dumps(rejected.model_dump(mode="json"))
    assert rejected.correlation_id == "bad-order-1"
