"""`fulfil replay --verify` and `fulfil dlq list|show|redrive` against a real run."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import asynccontextmanager

import orjson
from aiokafka.partitioner import DefaultPartitioner

from fulfil.simulation import generate
from fulfil_platform import kafka
from schemas.allocation_headers import output_headers
from schemas.registry import ALLOCATIONS, COMMANDS, ORDERS, encode, parse_input, parse_output
from services.allocator.entrypoints.app import run_allocator
from services.allocator.service_layer.clock import write_ticks
from services.allocator.service_layer.partition import PartitionFold
from tests.builders.samples import VALID
from tests.builders.streams import mixed_stream
from tests.fulfil.helpers import fulfil
from tests.kafka_helpers import committed_offsets, publish, read_topic, wait_for


@asynccontextmanager
async def allocator(settings):
    stop = asyncio.Event()
    task = asyncio.create_task(run_allocator(settings, "all", stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def _core_caught_up(settings) -> bool:
    commands = await read_topic(settings, COMMANDS)
    ends = {p: (records[-1].offset + 1 if records else 0) for p, records in commands.items()}
    return (
        sum(ends.values()) > 0
        and await committed_offsets(settings, settings.topic("fulfil-allocator-core"), COMMANDS)
        == ends
    )


async def test_replay_verifies_a_real_run(settings, env_for_subprocess) -> None:
    await kafka.create_topics(settings)
    events = mixed_stream(1_500, seed=11)
    async with allocator(settings):
        await publish(settings, events)
        await wait_for(
            lambda: _core_caught_up(settings), timeout=120, what="the allocator to catch up"
        )
    result = fulfil("replay", "--verify", "--json", env=env_for_subprocess(settings))
    assert result.returncode == 0, result.stdout + result.stderr
    report = orjson.loads(result.stdout)
    assert report["verified"] is True
    assert report["commands"] >= len(events)
    assert report["compared"] == report["outputs"] > 0


async def test_replay_names_the_offset_of_an_altered_output(settings, env_for_subprocess) -> None:
    await kafka.create_topics(settings)
    events = mixed_stream(300, seed=12)
    # What the core will write first on some partition, altered, is put there first:
    # the core takes it for its own output (same position headers) and moves on, so
    # the topic now holds one altered output at a known offset.
    first = events[0]
    everyone = list(range(settings.fulfil_partitions))
    partition = DefaultPartitioner()(first.data.warehouse_id.encode(), everyone, everyone)
    outputs, _ = PartitionFold(partition).apply(0, encode(first))
    genuine = outputs[0]
    doc = orjson.loads(genuine.value)
    doc["data"]["available"] = (
        doc["data"].get("available", 0) + 999 if "available" in doc["data"] else 999
    )
    altered = orjson.dumps(doc)
    producer = kafka.producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic(ALLOCATIONS),
            altered,
            key=genuine.key,
            partition=partition,
            headers=output_headers(partition, 0, 0, genuine.event),
        )
    finally:
        await producer.stop()
    async with allocator(settings):
        await publish(settings, [first])
        await wait_for(
            lambda: _core_caught_up(settings), timeout=120, what="the allocator to catch up"
        )
        await publish(settings, events[1:])
        await wait_for(
            lambda: _core_caught_up(settings), timeout=120, what="the allocator to catch up"
        )

    result = fulfil("replay", "--verify", "--json", env=env_for_subprocess(settings))
    assert result.returncode == 1, result.stdout + result.stderr
    divergence = orjson.loads(result.stdout)["divergence"]
    assert divergence["partition"] == partition
    assert divergence["command_offset"] == 0 and divergence["output_index"] == 0
    assert divergence["output_offset"] == 0
    assert orjson.loads(divergence["expected"]) == orjson.loads(genuine.value)
    assert orjson.loads(divergence["actual"]) == doc
    text = fulfil("replay", "--verify", env=env_for_subprocess(settings))
    assert text.returncode == 1 and "command offset 0" in text.stdout


async def test_dead_letter_is_listed_redriven_after_a_fix_and_processed_once(
    settings, env_for_subprocess
) -> None:
    await kafka.create_topics(settings)
    strict = settings.model_copy(update={"fulfil_max_message_bytes": 1_024})
    order = orjson.loads(orjson.dumps(VALID["OrderPlaced"]))
    order["id"] = "big-order"
    order["data"]["lines"] = [
        {"line_no": i, "sku": f"SKU-{i}", "quantity": 1} for i in range(1, 31)
    ]
    raw = orjson.dumps(order)
    assert len(raw) > 1_024
    async with allocator(strict):
        await publish(settings, [raw], topic=ORDERS)

        async def listed():
            result = fulfil("dlq", "list", "--json", env=env_for_subprocess(settings))
            return (
                orjson.loads(result.stdout)
                if result.returncode == 0 and orjson.loads(result.stdout)["dead_letters"]
                else None
            )

        listing = await wait_for(listed, timeout=60, what="the oversize order in the DLQ")
    letter = listing["dead_letters"][0]
    assert letter["kind"] == "oversize" and "1024" in letter["reason"].replace(",", "")
    assert letter["event_id"] == "big-order" and letter["redriven"] is False
    assert listing["counts"] == [
        {"source_topic": settings.topic(ORDERS), "kind": "oversize", "count": 1}
    ]
    shown = fulfil("dlq", "show", letter["ref"], "--json", env=env_for_subprocess(settings))
    assert orjson.loads(shown.stdout)["original"].encode() == raw

    # The fix: the operator raises the message size limit; then redrives.
    async with allocator(settings):
        env = env_for_subprocess(settings)
        first = fulfil("dlq", "redrive", "--kind", "oversize", "--json", env=env)
        assert orjson.loads(first.stdout) == {
            "redriven": [letter["ref"]],
            "skipped_already_redriven": [],
        }

        async def processed():
            outs = [
                parse_output(r.value)
                for rs in (await read_topic(settings, ALLOCATIONS)).values()
                for r in rs
            ]
            return [o for o in outs if o.causation_id == "big-order"]

        caused = await wait_for(processed, timeout=60, what="the redriven order to be allocated")
        second = fulfil("dlq", "redrive", letter["ref"], "--json", env=env)
        assert orjson.loads(second.stdout) == {
            "redriven": [],
            "skipped_already_redriven": [letter["ref"]],
        }
        await wait_for(
            lambda: _core_caught_up(settings), timeout=60, what="the allocator to catch up"
        )
    outs = [
        parse_output(r.value)
        for rs in (await read_topic(settings, ALLOCATIONS)).values()
        for r in rs
    ]
    assert sorted(o.id for o in outs if o.causation_id == "big-order") == sorted(
        o.id for o in caused
    )
    commands = [
        parse_input(r.value) for rs in (await read_topic(settings, COMMANDS)).values() for r in rs
    ]
    assert [c.id for c in commands] == ["big-order"]
    relisted = orjson.loads(
        fulfil("dlq", "list", "--json", env=env_for_subprocess(settings)).stdout
    )
    assert relisted["dead_letters"][0]["redriven"] is True


async def test_tail_redacts_customer_data_unless_asked(settings, env_for_subprocess) -> None:
    await kafka.create_topics(settings)
    await publish(
        settings,
        [
            parse_input(orjson.dumps(VALID["OrderPlaced"])),
            parse_input(orjson.dumps(VALID["StockReceived"])),
        ],
    )
    env = env_for_subprocess(settings)
    redacted = fulfil("tail", "orders.v1", "--json", env=env)
    assert redacted.returncode == 0, redacted.stderr
    lines = [orjson.loads(line) for line in redacted.stdout.splitlines()]
    assert [d["type"] for d in lines] == ["OrderPlaced"]
    assert lines[0]["data"]["customer"] == "[redacted]"
    assert "ann@shop.example" not in redacted.stdout
    shown = fulfil("tail", "orders.v1", "--json", "--show-pii", env=env)
    assert (
        orjson.loads(shown.stdout.splitlines()[0])["data"]["customer"]["email"]
        == "ann@shop.example"
    )
    pretty = fulfil("tail", "inventory.v1", env=env)
    assert "StockReceived" in pretty.stdout and "SKU-1" in pretty.stdout


async def _write_as_routed(settings, records) -> Counter:
    """The simulated traffic onto the command log in simulated order, as the router would
    route it (bytes unchanged, key = warehouse_id, its headers); ticks on every partition.
    Through the real router, orders and inventory (two topics) would interleave at will."""
    producer = kafka.producer(settings)
    await producer.start()
    kinds: Counter = Counter()
    try:
        for record in records:
            if record.type.startswith("invalid:"):
                continue  # the router dead-letters these: they never reach the command log
            if record.type == "ClockTicked":
                await write_ticks(settings, record.occurred_at, producer)
            else:
                headers = [
                    ("fulfil-source-topic", settings.topic(record.topic).encode()),
                    ("fulfil-event-type", record.type.encode()),
                ]
                await producer.send_and_wait(
                    settings.topic(COMMANDS), record.value, key=record.key, headers=headers
                )
            kinds[record.type] += 1
    finally:
        await producer.stop()
    return kinds


async def test_replay_verifies_a_simulated_log_with_the_supply_side_rules(
    settings, env_for_subprocess
) -> None:
    """Issue 15: a simulated log with cancelled purchase orders, ticks that make inbounds
    overdue, shrinkage of reserved units, capped SKUs and pre-orders replays bit for bit."""
    await kafka.create_topics(settings)
    # A seed whose 6 000 events hold every case below (shrinkage of reserved units is rare).
    records = list(generate(events=6_000, seed=23))
    kinds = await _write_as_routed(settings, records)
    assert kinds["InboundCancelled"] and kinds["ClockTicked"] and kinds["SkuPolicySet"]
    async with allocator(settings):
        await wait_for(
            lambda: _core_caught_up(settings),
            timeout=240,
            what="the allocator to fold the simulated log",
        )
    outputs = [
        parse_output(r.value)
        for records in (await read_topic(settings, ALLOCATIONS)).values()
        for r in records
    ]
    backordered = Counter(o.data.reason for o in outputs if o.type == "Backordered")
    causes = Counter(o.data.cause.reason for o in outputs if o.type == "BackorderEtaChanged")
    rejects = Counter(
        line.reason for o in outputs if o.type == "OrderRejected" for line in o.data.lines
    )
    assert backordered["reservation_lost"] and backordered["pre_order"], (
        backordered
    )  # shrinkage, pre-orders
    assert causes["inbound_overdue"], causes  # ticks past ETA + grace
    assert rejects["backorder_limit"], rejects  # a capped SKU
    commands = [r for records in (await read_topic(settings, COMMANDS)).values() for r in records]
    types = Counter(dict(r.headers).get("fulfil-event-type", b"").decode() for r in commands)
    assert types["InboundCancelled"] == kinds["InboundCancelled"]
    assert types["ClockTicked"] == kinds["ClockTicked"] * settings.fulfil_partitions

    result = fulfil("replay", "--verify", "--json", env=env_for_subprocess(settings))
    assert result.returncode == 0, result.stdout + result.stderr
    report = orjson.loads(result.stdout)
    assert report["verified"] is True
    assert report["commands"] == len(commands)
    assert report["compared"] == report["outputs"] == len(outputs)


async def test_tail_of_a_topic_that_does_not_exist_is_a_usage_error(
    settings, env_for_subprocess
) -> None:
    """Issue 17: `tail nosuch.v1` said `ValueError`; it is a usage error naming the topics."""
    await kafka.create_topics(settings)
    result = fulfil("tail", "nosuch.v1", env=env_for_subprocess(settings))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Error" not in result.stderr
    assert "nosuch.v1" in result.stderr and "allocations.v1" in result.stderr
