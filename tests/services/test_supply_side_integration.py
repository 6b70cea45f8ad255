"""Honest dates from the supply side (issue 15) end to end, on the real broker.

One warehouse, five stories, walked through a real allocator (router + core), the
projector (PostgreSQL read models) and the notifier (a real SMTP server):

- a cancelled purchase order (InboundCancelled): its customer loses the date;
- an overdue inbound (a ClockTicked past ETA + grace): its customer loses the date;
- shrinkage of reserved units (a negative StockAdjusted beyond `available`) takes
  a ship_complete order's reservation, later replaced by a receipt;
- a capped SKU (SkuPolicySet backorder_limit): units beyond the cap are rejected;
- a pre-order (SkuPolicySet release_date): stock received early is held until a
  tick reaches the release date.

Orders and inventory are separate topics and ticks go straight onto the command
log, so every input is published only once the previous one reached the command
log: the router cannot interleave them, and the log's order is the story's.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import orjson
import pytest

from fulfil_platform import kafka
from fulfil_platform.config import Settings
from schemas.registry import ALLOCATIONS, COMMANDS, parse_output
from services.allocator.entrypoints.app import run_allocator
from services.allocator.service_layer.clock import tick, write_ticks
from services.projector.adapters import queries
from services.projector.adapters import store as pg
from services.projector.service_layer.projector import LIVE_SCHEMA, Projector
from tests.builders.inputs import Events
from tests.kafka_helpers import TopicWatcher, expected_and_actual, publish, read_topic, wait_for
from tests.services.notifier.conftest import SmtpServer, notifier_settings_for
from tests.services.notifier.helpers import outbox, running_notifier

WH = "supply-wh"
START = date(2026, 11, 2)
LATE_ETA = date(2026, 11, 5)  # the overdue inbound
CANCELLED_ETA = date(2026, 11, 16)  # the cancelled purchase order
REFILL_ETA = date(2026, 11, 23)  # replaces the shrunk units
RELEASE = date(2026, 11, 20)  # the pre-order's release date
GERMAN = {
    "customer_id": "cus-de",
    "email": "ord-late@shop.example",
    "name": "Jürgen Weiß",
    "locale": "de",
}


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def services(
    settings: Settings, test_database: str, smtp: SmtpServer
) -> AsyncIterator[Settings]:
    """Allocator, projector and notifier running in-process on one database; all stopped."""
    settings = settings.model_copy(update={"database_url": test_database})
    await kafka.create_topics(settings)
    stop = asyncio.Event()
    allocator = asyncio.create_task(run_allocator(settings, "all", stop))
    projector = Projector(settings)
    projecting = asyncio.create_task(projector.run(stop))
    notifier_settings = notifier_settings_for(
        settings, test_database, smtp_url=smtp.url, webhook_url=None
    )
    try:
        async with running_notifier(notifier_settings):
            yield notifier_settings
            for task in (allocator, projecting):
                if task.done():
                    task.result()  # a service that died fails the test with its own error
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(allocator, projecting, return_exceptions=True), 60)


class Story:
    """Feeds the allocator one input at a time, each after the previous one was routed."""

    def __init__(self, settings: Settings, commands: TopicWatcher):
        self.settings = settings
        self.commands = commands
        self.ev = Events(prefix="sup", start=midnight(START))
        self.routed = 0

    async def _routed(self, count: int, what: str) -> None:
        self.routed += count

        async def done() -> bool:
            return await self.commands.total() >= self.routed

        await wait_for(done, timeout=60, what=what)

    async def send(self, event: Any) -> Any:
        await publish(self.settings, [event])
        await self._routed(1, f"{event.type} {event.id} routed")
        return event

    async def tick(self, day: date) -> None:
        written = await write_ticks(self.settings, midnight(day))
        await self._routed(written, f"the tick of {day}")


async def outputs(settings: Settings) -> list[Any]:
    return [
        parse_output(r.value)
        for records in (await read_topic(settings, ALLOCATIONS)).values()
        for r in records
    ]


def of(found: list[Any], type_: str, order_id: str) -> list[Any]:
    return [o for o in found if o.type == type_ and getattr(o.data, "order_id", None) == order_id]


async def rows(settings: Settings, sql: str, *args: Any) -> list[dict[str, Any]]:
    conn = await pg.connect(settings.require_database(), LIVE_SCHEMA, timeout=10)
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    except asyncpg.UndefinedTableError:
        return []  # the projector has not migrated yet
    finally:
        await conn.close()


async def line_of(settings: Settings, order_id: str, line_no: int = 1) -> dict[str, Any] | None:
    found = await rows(
        settings,
        "SELECT * FROM order_lines WHERE warehouse_id = $1 AND order_id = $2 AND line_no = $3",
        WH,
        order_id,
        line_no,
    )
    return found[0] if found else None


async def backlog(settings: Settings, sku: str) -> dict[str, Any] | None:
    found = await rows(
        settings, "SELECT * FROM sku_backlog WHERE warehouse_id = $1 AND sku = $2", WH, sku
    )
    return found[0] if found else None


async def until_line(
    settings: Settings, order_id: str, what: str, **expected: Any
) -> dict[str, Any]:
    """The order line once the projector shows `expected` in it."""

    async def shown() -> dict[str, Any] | None:
        found = await line_of(settings, order_id)
        return found if found and all(found[k] == v for k, v in expected.items()) else None

    return await wait_for(shown, timeout=60, what=f"order_lines of {order_id}: {what}")


async def until_output(settings: Settings, type_: str, order_id: str, count: int = 1) -> list[Any]:
    async def emitted() -> list[Any] | None:
        found = of(await outputs(settings), type_, order_id)
        return found if len(found) >= count else None

    return await wait_for(emitted, timeout=60, what=f"{type_} for {order_id}")


def only_line(event: Any) -> Any:
    assert len(event.data.lines) == 1, event
    return event.data.lines[0]


def fulfil(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fulfil", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


async def test_supply_side_stories_through_allocator_projector_and_notifier(
    services: Settings, smtp: SmtpServer, env_for_subprocess: Callable[[Settings], dict[str, str]]
) -> None:
    settings = services
    async with TopicWatcher(settings, COMMANDS) as commands:
        story = Story(settings, commands)
        ev = story.ev
        await story.tick(START)

        # ------------------------------------------------ a cancelled purchase order
        await story.send(
            ev.inbound_scheduled(
                "po-cancel", WH, [("LAMP", 10)], CANCELLED_ETA, supplier="Nordic Lights"
            )
        )
        await story.send(ev.order_placed("ord-cancel", WH, [("LAMP", 3, "89.00", "EUR")]))
        (placed,) = await until_output(settings, "Backordered", "ord-cancel")
        assert only_line(placed).eta == CANCELLED_ETA
        cancel = await story.send(
            ev.inbound_cancelled("po-cancel", WH, reason="supplier closed the order")
        )
        (undated,) = await until_output(settings, "BackorderEtaChanged", "ord-cancel")
        assert (only_line(undated).previous_eta, only_line(undated).eta) == (CANCELLED_ETA, None)
        assert (undated.data.cause.event_type, undated.data.cause.event_id) == (
            "InboundCancelled",
            cancel.id,
        )
        assert undated.data.cause.inbound_id == "po-cancel"

        # ------------------------------------------------ an overdue inbound
        await story.send(
            ev.inbound_scheduled("po-late", WH, [("CHAIR", 5)], LATE_ETA, supplier="Slow Freight")
        )
        await story.send(ev.order_placed("ord-late", WH, [("CHAIR", 2)], customer=GERMAN))
        (placed,) = await until_output(settings, "Backordered", "ord-late")
        assert only_line(placed).eta == LATE_ETA
        await story.tick(date(2026, 11, 7))  # late, but the last day of the grace: expected today
        await story.tick(date(2026, 11, 8))  # ETA + 2 days passed, nothing received: overdue
        changes = await until_output(settings, "BackorderEtaChanged", "ord-late", count=2)
        today_then_gone = [(only_line(c).eta, c.data.cause.reason) for c in changes]
        assert today_then_gone == [(date(2026, 11, 7), None), (None, "inbound_overdue")]
        assert changes[-1].data.cause.event_type == "ClockTicked"
        assert changes[-1].data.cause.inbound_id == "po-late"

        # ------------------------------------------------ shrinkage of reserved units
        await story.send(ev.stock_received(WH, "VASE", 3, receipt_id="rcpt-vase"))
        await story.send(
            ev.inbound_scheduled("po-refill", WH, [("VASE", 5), ("BOWL", 1)], REFILL_ETA)
        )
        await story.send(
            ev.order_placed("ord-shrink", WH, [("VASE", 3), ("BOWL", 1)], policy="ship_complete")
        )
        (held,) = await until_output(settings, "Backordered", "ord-shrink")
        assert held.data.reason == "ship_complete_hold"
        assert [(ln.reserved, ln.backordered) for ln in held.data.lines] == [
            (3, 3),
            (0, 1),
        ]  # held whole
        await story.send(
            ev.stock_adjusted(
                WH, "VASE", -3, adjustment_id="adj-damaged", reason="damaged in storage"
            )
        )
        held, lost = await until_output(settings, "Backordered", "ord-shrink", count=2)
        assert lost.data.reason == "reservation_lost"
        vase = lost.data.lines[0]
        assert (vase.sku, vase.reserved, vase.backordered, vase.eta) == ("VASE", 0, 3, REFILL_ETA)

        # ------------------------------------------------ a capped SKU
        await story.send(ev.sku_policy_set(WH, "MUG", backorder_limit=2))
        await story.send(ev.order_placed("ord-cap", WH, [("MUG", 5, "12.00", "EUR")]))
        (rejected,) = await until_output(settings, "OrderRejected", "ord-cap")
        (capped,) = await until_output(settings, "Backordered", "ord-cap")
        assert (only_line(rejected).rejected, only_line(rejected).reason) == (3, "backorder_limit")
        assert only_line(capped).backordered == 2

        # ------------------------------------------------ a pre-order
        await story.send(ev.sku_policy_set(WH, "GAME", backorderable=False, release_date=RELEASE))
        await story.send(ev.order_placed("ord-pre", WH, [("GAME", 1, "59.00", "EUR")]))
        (pre,) = await until_output(settings, "Backordered", "ord-pre")
        assert pre.data.reason == "pre_order"
        await story.send(
            ev.stock_received(WH, "GAME", 4, receipt_id="rcpt-game-early")
        )  # early: held
        (dated,) = await until_output(settings, "BackorderEtaChanged", "ord-pre")
        assert only_line(dated).eta == RELEASE
        await until_line(
            settings, "ord-pre", "dated the release, still waiting", eta=RELEASE, allocated=0
        )
        assert (await backlog(settings, "GAME") or {}).get("promise_eta") == RELEASE
        await story.tick(date(2026, 11, 19))  # the day before: still held
        await story.tick(RELEASE)
        (shipped,) = await until_output(settings, "BackorderAllocated", "ord-pre")
        assert (only_line(shipped).shipped, only_line(shipped).backordered) == (1, 0)
        ticks = {tick(midnight(RELEASE), p).id for p in range(settings.fulfil_partitions)}
        assert shipped.causation_id in ticks  # released by the tick, not by the early receipt

        # The shrunk units are replaced: the ship_complete order ships whole only now.
        await story.send(
            ev.stock_received(WH, "VASE", 5, receipt_id="rcpt-po-refill", inbound_id="po-refill")
        )
        await story.send(
            ev.stock_received(WH, "BOWL", 1, receipt_id="rcpt-po-refill-b", inbound_id="po-refill")
        )
        (whole,) = await until_output(settings, "BackorderAllocated", "ord-shrink")
        assert [(ln.sku, ln.shipped) for ln in whole.data.lines] == [("VASE", 3), ("BOWL", 1)]

    everything = await outputs(settings)
    before = [o for o in everything if o.type != "StockPositionChanged"]
    # Nothing shipped before the release date, and the held pre-order stock was never released early.
    assert not [o for o in of(everything, "BackorderAllocated", "ord-pre") if o.id != shipped.id]
    # The command log folds to what is on allocations.v1, and the §5 invariants hold (extended for shrinkage).
    expected, actual = await expected_and_actual(settings)
    assert expected == actual
    assert {o.type for o in before} >= {
        "Backordered",
        "BackorderEtaChanged",
        "OrderRejected",
        "BackorderAllocated",
    }

    # ------------------------------------------------ the read models
    await until_line(settings, "ord-pre", "shipped on the release date", allocated=1, backordered=0)
    await until_line(settings, "ord-shrink", "shipped after the refill", allocated=3, backordered=0)
    cancelled_line = await until_line(settings, "ord-cancel", "undated", backordered=3)
    assert (cancelled_line["eta"], cancelled_line["eta_reason"]) == (None, "inbound_cancelled")
    late_line = await until_line(settings, "ord-late", "undated", backordered=2)
    assert (late_line["eta"], late_line["eta_reason"]) == (None, "inbound_overdue")
    capped_line = await until_line(settings, "ord-cap", "capped", rejected=3)
    assert (capped_line["backordered"], capped_line["reason"]) == (2, "backorder_limit")

    conn = await pg.connect(settings.require_database(), LIVE_SCHEMA, timeout=10)
    try:
        inbounds = {
            r["inbound_id"]: r
            for r in await queries.inbound(conn, as_of=midnight(RELEASE), grace_days=2)
        }
        late = {
            r["inbound_id"]
            for r in await queries.inbound(conn, as_of=midnight(RELEASE), late_only=True)
        }
    finally:
        await conn.close()
    assert inbounds["po-cancel"]["status"] == "cancelled"
    assert inbounds["po-cancel"]["cancel_reason"] == "supplier closed the order"
    assert inbounds["po-cancel"]["quantity_cancelled"] == 10
    assert inbounds["po-late"]["overdue"] is True and "po-late" in late
    assert inbounds["po-refill"]["overdue"] is False and "po-refill" not in late
    # Nothing covers LAMP (cancelled) nor CHAIR (overdue): a new order gets no date.
    for sku in ("LAMP", "CHAIR"):
        row = await backlog(settings, sku)
        assert row is not None and row["promise_eta"] is None, (sku, row)
    mug = await backlog(settings, "MUG")
    assert mug is not None and mug["backordered_units"] == 2 and mug["promise_eta"] is None

    # ------------------------------------------------ the emails
    def sendable(event: Any) -> bool:
        return event.type != "StockPositionChanged"

    async def all_sent() -> bool:
        sent = await outbox(services, status="sent", channel="email")
        return {r["event_id"] for r in sent} >= {o.id for o in everything if sendable(o)}

    await wait_for(all_sent, timeout=120, what="an email for every order event")
    mails = {m.message_id: m for m in smtp.mails}

    def mail(event: Any) -> Any:
        return mails[f"<{event.id}.email@fulfil>"]

    gone = mail(undated)
    assert gone.subject == "New expected date for your order ord-cancel"
    assert (
        "3 × LAMP: no date yet: the supplier delivery these items were coming with has been cancelled"
        in gone.text
    )
    assert "16 November 2026 we last told you no longer holds" in gone.text
    assert "https://shop.example/orders/ord-cancel/cancel" in gone.text
    assert "supplier closed the order" not in gone.text  # purchasing's note is internal

    overdue = mail(changes[-1])
    assert overdue.subject == "Neuer voraussichtlicher Versandtermin für Ihre Bestellung ord-late"
    assert (
        "noch kein Termin: Die Lieferung unseres Lieferanten, die wir zum 7. November 2026 erwartet hatten, "
        "ist nicht eingetroffen" in overdue.text
    )
    assert overdue.text.startswith("Hallo Jürgen Weiß,")

    again = mail(lost)
    assert again.subject == "Items of your order ord-shrink are on backorder again"
    assert "turned out to be damaged or missing" in again.text
    assert "23 November 2026" in again.text

    refused = mail(rejected)
    assert refused.subject == "Items from your order ord-cap cannot be delivered"
    assert (
        "3 × MUG: out of stock, and we cannot take more of it on backorder right now"
        in refused.text
    )
    assert "36.00" in refused.text  # the refund of the rejected units

    confirmed = mail(pre)
    assert confirmed.subject == "Your pre-order ord-pre is confirmed"
    assert (
        "not released yet" in confirmed.text
        and "cancel your pre-order at any time before it ships" in confirmed.text
    )
    assert "backorder" not in confirmed.text.lower()
    assert "20 November 2026" in mail(dated).text
    assert mail(shipped).subject == "The rest of your order ord-pre is on its way"
    assert not re.search(
        r"\b5\. November 2026", overdue.text
    )  # no date in the past relative to the log's today
    assert (
        "15. November 2026" in overdue.text
    )  # the next update: a week after the tick that caused it

    # ------------------------------------------------ fulfil trace
    env = env_for_subprocess(settings)
    late_trace = fulfil("trace", "ord-late", "--json", env=env)
    assert late_trace.returncode == 0, late_trace.stderr
    timeline = orjson.loads(late_trace.stdout)["timeline"]
    tick_ids = {i["id"] for i in timeline if i["type"] == "ClockTicked"}
    assert tick_ids == {
        c.causation_id for c in changes
    }  # the two ticks that moved the date, no other
    last = timeline[-1]
    assert (last["type"], last["id"]) == ("BackorderEtaChanged", changes[-1].id)
    assert "2026-11-07 → no date" in last["summary"] and "inbound_overdue" in last["summary"]
    assert any(i["type"] == "InboundScheduled" and i["relation"] == "inbound" for i in timeline)
    cancel_trace = orjson.loads(fulfil("trace", "ord-cancel", "--json", env=env).stdout)["timeline"]
    assert [i["type"] for i in cancel_trace if i["relation"] == "cause"] == ["InboundCancelled"]
    pre_trace = orjson.loads(fulfil("trace", "ord-pre", "--json", env=env).stdout)["timeline"]
    assert [i["type"] for i in pre_trace if i["relation"] in ("order", "output", "cause")] == [
        "OrderPlaced",
        "Backordered",
        "StockReceived",
        "BackorderEtaChanged",
        "ClockTicked",
        "BackorderAllocated",
    ]
