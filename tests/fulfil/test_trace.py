"""`fulfil trace ORDER_ID` against a real run of the allocator."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import asyncpg
import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from fulfil_platform import kafka
from schemas.registry import ALLOCATIONS, COMMANDS, INVENTORY, ORDERS, parse_output
from services.allocator.entrypoints.app import run_allocator
from services.notifier.adapters.migrate import apply_migrations
from tests.builders.inputs import Events
from tests.fulfil.helpers import fulfil
from tests.kafka_helpers import TopicWatcher, publish, read_topic, wait_for

WH = "trace-wh"
ORDER = "ord-trace-1"
EMAIL = "mara.jensen@example.org"
NAME = "Mara Jensen"


def _scenario() -> tuple[list, dict[str, str]]:
    """An order backordered on an inbound that is then delayed, then received."""
    ev = Events(prefix="tr", start=datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
    customer = {"customer_id": "cus-77", "email": EMAIL, "name": NAME, "locale": "de"}
    events = [
        ev.stock_received(WH, "LAMP-OAK", 2, receipt_id="rcpt-1"),
        ev.inbound_scheduled(
            "po-7781", WH, [("LAMP-OAK", 20)], date(2026, 11, 16), supplier="Nordic Lights"
        ),
        ev.order_placed(ORDER, WH, [("LAMP-OAK", 5, "89.00", "EUR")], customer=customer),
        ev.order_placed("ord-trace-2", WH, [("LAMP-OAK", 1)]),  # another order in the same pool
        ev.order_placed("ord-trace-3", "other-wh", [("LAMP-OAK", 1)]),  # and one elsewhere
        ev.shipment_delayed("po-7781", WH, date(2026, 11, 23), reason="port congestion"),
        ev.stock_adjusted(
            WH, "LAMP-OAK", -1, reason="damaged in storage"
        ),  # touches nothing of the order
        ev.stock_received(WH, "LAMP-OAK", 20, receipt_id="rcpt-2", inbound_id="po-7781"),
    ]
    ids = {
        "placed": events[2].id,
        "delayed": events[5].id,
        "scheduled": events[1].id,
        "received": events[7].id,
    }
    return events, ids


@pytest.fixture
async def traced(settings, test_database):
    """The scenario processed by a real allocator, plus a dead letter and outbox rows for the order."""
    settings = settings.model_copy(update={"database_url": test_database})
    await kafka.create_topics(settings)
    events, ids = _scenario()
    stop = asyncio.Event()
    task = asyncio.create_task(run_allocator(settings, "all", stop))
    try:
        # Orders and inventory are separate topics: publish one event at a time,
        # each once the previous one reached the command log.
        async with TopicWatcher(settings, COMMANDS) as commands:
            for count, event in enumerate(events, start=1):
                await publish(settings, [event])

                async def routed(count=count):
                    return await commands.total() >= count

                await wait_for(routed, timeout=60, what=f"command {count} routed")
        # An upstream bug: a cancellation of the order without a reason (dead-lettered).
        bad = {
            "id": "bad-cancel-1",
            "type": "OrderCancelled",
            "version": 1,
            "occurred_at": "2026-11-02T12:00:00+00:00",
            "source": "shop",
            "data": {
                "order_id": ORDER,
                "warehouse_id": WH,
                "cancelled_at": "2026-11-02T12:00:00+00:00",
            },
        }
        await publish(settings, [orjson.dumps(bad)], topic=ORDERS)

        async def settled():
            outputs = [
                parse_output(r.value)
                for records in (await read_topic(settings, ALLOCATIONS)).values()
                for r in records
            ]
            done = any(o.type == "BackorderAllocated" and o.data.order_id == ORDER for o in outputs)
            dead = sum(len(r) for r in (await read_topic(settings, ORDERS + ".dlq")).values())
            return outputs if done and dead else None

        outputs = await wait_for(
            settled, timeout=90, what="the receipt to fill the backorder and the dead letter"
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    mine = {o.type: o for o in outputs if getattr(o.data, "order_id", None) == ORDER}
    # The notifier's outbox, as the notifier would have left it (its migrations, its columns).
    await apply_migrations(test_database)
    conn = await asyncpg.connect(test_database)
    try:
        now = datetime(2026, 11, 3, tzinfo=UTC)
        for event_id, kind, event_type, status, attempts in (
            (mine["PartiallyShipped"].id, "partially_shipped", "PartiallyShipped", "sent", 1),
            (mine["BackorderEtaChanged"].id, "eta_changed", "BackorderEtaChanged", "failed", 24),
            ("reminder-1", "reminder", "Reminder", "pending", 0),
        ):
            await conn.execute(
                """INSERT INTO notifier_outbox (event_id, channel, kind, event_type, warehouse_id, order_id, message_id,
                       recipient, subject, body_text, facts, status, attempts, next_attempt_at, last_error, created_at, updated_at)
                   VALUES ($1, 'email', $2, $3, $4, $5, $6, $7, $8, $9, '{}'::jsonb, $10, $11, $12, $13, $12, $12)""",
                event_id,
                kind,
                event_type,
                WH,
                ORDER,
                f"<{event_id}.email@fulfil>",
                EMAIL,
                f"Hallo {NAME}",
                f"Liebe {NAME}, ...",
                status,
                attempts,
                now + timedelta(minutes=attempts),
                f"550 mailbox {EMAIL} unavailable" if status == "failed" else None,
            )
    finally:
        await conn.close()
    return settings, ids, mine


async def test_trace_shows_the_delay_and_the_eta_change_it_caused(
    traced, env_for_subprocess
) -> None:
    settings, ids, mine = traced
    env = env_for_subprocess(settings)
    result = fulfil("trace", ORDER, "--json", env=env)
    assert result.returncode == 0, result.stderr
    doc = orjson.loads(result.stdout)
    assert {"order_id", "warehouse_id", "command_partition", "timeline", "notifications"} <= set(
        doc
    )
    assert (doc["order_id"], doc["warehouse_id"]) == (ORDER, WH)
    everyone = list(range(settings.fulfil_partitions))
    assert doc["command_partition"] == DefaultPartitioner()(WH.encode(), everyone, everyone)
    for item in doc["timeline"]:
        assert {
            "topic",
            "partition",
            "offset",
            "type",
            "id",
            "causation_id",
            "occurred_at",
            "summary",
        } <= set(item)
    by_id = {item["id"]: item for item in doc["timeline"]}

    placed = by_id[ids["placed"]]
    assert (placed["type"], placed["topic"], placed["relation"]) == (
        "OrderPlaced",
        settings.topic(ORDERS),
        "order",
    )
    assert placed["command_offset"] is not None

    # The supplier delay, where it was published and where the allocator read it…
    delayed = by_id[ids["delayed"]]
    assert (delayed["type"], delayed["topic"], delayed["relation"]) == (
        "ShipmentDelayed",
        settings.topic(INVENTORY),
        "cause",
    )
    assert delayed["partition"] == DefaultPartitioner()(WH.encode(), everyone, everyone)
    assert delayed["command_offset"] is not None
    # …and the ETA change it caused, linked by causation_id, at its command position.
    changed = [i for i in doc["timeline"] if i["type"] == "BackorderEtaChanged"]
    assert len(changed) == 1
    assert changed[0]["causation_id"] == ids["delayed"]
    assert changed[0]["topic"] == settings.topic(ALLOCATIONS)
    assert changed[0]["command_offset"] == delayed["command_offset"]
    assert "2026-11-16 → 2026-11-23" in changed[0]["summary"]
    # The inbound the delay names is there from its start; the receipt filled the backorder.
    assert by_id[ids["scheduled"]]["relation"] in ("inbound", "cause")
    assert any(
        i["type"] == "BackorderAllocated" and i["causation_id"] == ids["received"]
        for i in doc["timeline"]
    )
    assert by_id[ids["received"]]["type"] == "StockReceived"
    # Only this order's outputs; nothing of the other orders or of the unrelated adjustment.
    outputs = [i for i in doc["timeline"] if i["relation"] == "output"]
    assert {i["id"] for i in outputs} == {o.id for o in mine.values()}
    assert "ord-trace-2" not in result.stdout and "ord-trace-3" not in result.stdout
    assert not any(i["type"] == "StockAdjusted" for i in doc["timeline"])
    # Time order: placed, then the delay's ETA change, then the receipt's shipment.
    order = [i["type"] for i in doc["timeline"] if i["relation"] == "output"]
    assert order == ["PartiallyShipped", "BackorderEtaChanged", "BackorderAllocated"]

    # The dead letter that names the order.
    dead = [i for i in doc["timeline"] if i["relation"] == "dead_letter"]
    assert len(dead) == 1 and dead[0]["topic"] == settings.topic(ORDERS) + ".dlq"
    assert dead[0]["dead_letter"]["kind"] == "schema_violation"

    # Notifications: status, channel, attempts; never the message or the address.
    rows = {row["event_id"]: row for row in doc["notifications"]}
    assert rows[mine["BackorderEtaChanged"].id]["status"] == "failed"
    assert rows[mine["BackorderEtaChanged"].id]["attempts"] == 24
    assert rows[mine["PartiallyShipped"].id]["channel"] == "email"
    assert "reminder-1" in rows
    for row in doc["notifications"]:
        assert not {"recipient", "subject", "body_text", "body_html", "body_json"} & set(row)

    # No customer data unless asked for.
    assert EMAIL not in result.stdout and "Mara" not in result.stdout
    shown = fulfil("trace", ORDER, "--json", "--show-pii", env=env)
    assert shown.returncode == 0 and EMAIL in shown.stdout and NAME in shown.stdout
    assert (
        "550 mailbox" in shown.stdout and f"mailbox {EMAIL}" not in shown.stdout
    )  # addresses never

    # The rich tree says the same, without PII.
    tree = fulfil("trace", ORDER, env={**env, "COLUMNS": "200"})
    assert tree.returncode == 0, tree.stderr
    assert "ShipmentDelayed" in tree.stdout and "BackorderEtaChanged" in tree.stdout
    assert "port congestion" in tree.stdout and "po-7781" in tree.stdout
    assert EMAIL not in tree.stdout and NAME not in tree.stdout

    # With the warehouse given, orders.v1 is not scanned: the order's inputs come from the command log.
    direct = orjson.loads(fulfil("trace", ORDER, "--warehouse", WH, "--json", env=env).stdout)
    placed_direct = next(i for i in direct["timeline"] if i["id"] == ids["placed"])
    assert placed_direct["topic"] == settings.topic(COMMANDS)
    assert {i["id"] for i in direct["timeline"] if i["relation"] == "output"} == {
        o.id for o in mine.values()
    }


async def test_unknown_order_exits_1_with_one_line(settings, env_for_subprocess) -> None:
    await kafka.create_topics(settings)
    result = fulfil("trace", "no-such-order", env=env_for_subprocess(settings))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-order" in lines[0]
    as_json = fulfil("trace", "no-such-order", "--json", env=env_for_subprocess(settings))
    assert as_json.returncode == 1 and as_json.stdout == ""
