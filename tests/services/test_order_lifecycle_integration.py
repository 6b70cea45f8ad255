"""The order's whole life end to end, on the real broker (issue "The order's whole life").

One warehouse, with the delay-consent rule on (FULFIL_DELAY_CONSENT=ftc), walked through
a real allocator (router + core), the projector (PostgreSQL read models) and the
notifier (a real SMTP server):

- a part cancel ("keep the lamp, drop the chairs still on backorder");
- a ship_complete customer switching to ship_partial: what is held ships now;
- a first delay (silence is consent), a second delay without consent: the backordered
  part is cancelled on the first tick after the promised date, not before;
- the same two delays with consent given: nothing is cancelled;
- a back-in-stock alert for a SKU that could not be ordered, told once when stock comes;
- an invalid order: its dead letter, and an OrderRejected upstream can hear.

Every input is published only once the previous one reached the command log, so the
log's order is the story's (see test_supply_side_integration).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from typing import Any

import orjson
import pytest

from fulfil_platform import kafka
from fulfil_platform.config import Settings
from schemas.registry import COMMANDS, ORDERS
from services.projector.service_layer.projector import Projector
from tests.builders.samples import VALID
from tests.kafka_helpers import TopicWatcher, publish, read_topic, wait_for
from tests.services.notifier.conftest import SmtpServer, notifier_settings_for
from tests.services.notifier.helpers import outbox, running_notifier
from tests.services.test_supply_side_integration import (
    Story,
    line_of,
    of,
    only_line,
    outputs,
    until_output,
)

WH = "supply-wh"  # the helpers of the supply-side test read this warehouse
START = date(2026, 11, 2)
D1 = date(2026, 11, 16)


def day(n: int) -> date:
    return D1 + timedelta(days=n)


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
    import asyncio

    from services.allocator.entrypoints.app import run_allocator

    settings = settings.model_copy(
        update={"database_url": test_database, "fulfil_delay_consent": "ftc"}
    )
    await kafka.create_topics(settings)
    stop = asyncio.Event()
    allocator = asyncio.create_task(run_allocator(settings, "all", stop))
    projecting = asyncio.create_task(Projector(settings).run(stop))
    notifier_settings = notifier_settings_for(
        settings, test_database, smtp_url=smtp.url, webhook_url=None
    )
    try:
        async with running_notifier(notifier_settings):
            yield notifier_settings
            for task in (allocator, projecting):
                if task.done():
                    task.result()
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(allocator, projecting, return_exceptions=True), 60)


async def test_the_order_lifecycle_through_allocator_projector_and_notifier(
    services: Settings, smtp: SmtpServer
) -> None:
    settings = services
    async with TopicWatcher(settings, COMMANDS) as commands:
        story = Story(settings, commands)
        ev = story.ev
        await story.tick(START)

        # ------------------------------------------------ a part cancel
        await story.send(ev.order_placed("ord-part", WH, [("LAMP", 3, "49.00", "EUR")]))
        await until_output(settings, "Backordered", "ord-part")
        await story.send(ev.order_lines_cancelled("ord-part", WH, [(1, 2)], reason="too late"))
        (part,) = await until_output(settings, "OrderCancellationProcessed", "ord-part")
        assert (only_line(part).cancelled, only_line(part).backordered) == (2, 1)

        # ------------------------------------------------ a policy switch
        await story.send(ev.stock_received(WH, "DESK", 1))
        await story.send(ev.order_placed("ord-switch", WH, [("DESK", 2)], policy="ship_complete"))
        await until_output(settings, "Backordered", "ord-switch")
        await story.send(ev.order_policy_changed("ord-switch", WH, "ship_partial"))
        (switched,) = await until_output(settings, "PartiallyShipped", "ord-switch")
        assert (only_line(switched).shipped, only_line(switched).backordered) == (1, 1)

        # ------------------------------------------------ delays, with and without consent
        await story.send(ev.inbound_scheduled("po-1", WH, [("CHAIR", 10)], D1))
        await story.send(ev.order_placed("ord-silent", WH, [("CHAIR", 2)]))
        await story.send(ev.order_placed("ord-agrees", WH, [("CHAIR", 2)]))
        (told,) = await until_output(settings, "Backordered", "ord-silent")
        assert (only_line(told).eta, only_line(told).promised_eta) == (D1, D1)
        await story.send(ev.shipment_delayed("po-1", WH, day(10), reason="port congestion"))
        (first,) = await until_output(settings, "BackorderEtaChanged", "ord-silent")
        assert (only_line(first).consent, only_line(first).promised_eta) == ("offered", day(10))
        await story.send(ev.shipment_delayed("po-1", WH, day(20), reason="still congested"))
        second = (await until_output(settings, "BackorderEtaChanged", "ord-silent", 2))[-1]
        assert (only_line(second).consent, only_line(second).promised_eta) == (
            "required",
            day(10),
        )
        await story.send(ev.backorder_consent_given("ord-agrees", WH))
        (agreed,) = await until_output(settings, "BackorderConsentRecorded", "ord-agrees")
        assert only_line(agreed).consent == "given"
        await story.tick(day(10))  # the promised day itself: nothing is cancelled yet
        await story.tick(day(11))
        (refused,) = await until_output(settings, "OrderCancellationProcessed", "ord-silent")
        assert refused.data.reason == "no_consent" and only_line(refused).cancelled == 2
        # Caused by the tick of the day after the promised one, not by the one before.
        cause = next(
            orjson.loads(r.value)
            for rs in (await read_topic(settings, COMMANDS)).values()
            for r in rs
            if orjson.loads(r.value)["id"] == refused.causation_id
        )
        assert (cause["type"], cause["data"]["now"][:10]) == ("ClockTicked", str(day(11)))
        assert of(await outputs(settings), "OrderCancellationProcessed", "ord-agrees") == []

        # ------------------------------------------------ a back-in-stock alert
        await story.send(ev.sku_policy_set(WH, "VASE", backorderable=False))
        await story.send(ev.stock_alert_requested("alert-1", WH, "VASE"))
        await story.send(ev.stock_received(WH, "VASE", 4))

        async def alerts() -> list[Any] | None:
            found = [o for o in await outputs(settings) if o.type == "StockAlertTriggered"]
            return found or None

        (told_alert,) = await wait_for(alerts, timeout=60, what="the back-in-stock alert")
        assert (told_alert.data.alert_id, told_alert.data.available) == ("alert-1", 4)
        await story.send(ev.stock_received(WH, "VASE", 2))  # told once, not again

        # ------------------------------------------------ an invalid order
        order = VALID["OrderPlaced"]
        bad = {
            **order,
            "id": "bad-1",
            "data": {
                **order["data"],
                "order_id": "ord-bad",
                "warehouse_id": WH,
                "lines": [{"line_no": 1, "sku": "LAMP", "quantity": 0}],
            },
        }
        await publish(settings, [orjson.dumps(bad)], topic=ORDERS)
        await story._routed(1, "the refusal of ord-bad")
        (rejected,) = await until_output(settings, "OrderRejected", "ord-bad")
        assert rejected.data.reason == "invalid" and rejected.data.customer is None
        dlq = await read_topic(settings, ORDERS + ".dlq")
        assert sum(len(r) for r in dlq.values()) == 1

    # ------------------------------------------------ the read model
    async def part_line() -> dict[str, Any] | None:
        found = await line_of(settings, "ord-part")
        return found if found and found["cancelled"] == 2 else None

    await wait_for(part_line, timeout=60, what="the part cancel in the read model")

    # ------------------------------------------------ the emails
    everything = await outputs(settings)
    alerts_told = [o for o in everything if o.type == "StockAlertTriggered"]
    assert len(alerts_told) == 1
    sendable = {
        o.id
        for o in everything
        if o.type != "StockPositionChanged"
        and not (o.type == "OrderRejected" and o.data.reason == "invalid")
    }

    async def all_sent() -> bool:
        sent = await outbox(services, status="sent", channel="email")
        return {r["event_id"] for r in sent} >= sendable

    await wait_for(all_sent, timeout=120, what="an email for every order event and alert")
    sent = await outbox(services, channel="email")
    assert rejected.id not in {r["event_id"] for r in sent}
    assert len([r for r in sent if r["event_id"] == told_alert.id]) == 1
    mails = {m.message_id: m for m in smtp.mails}

    def mail(event: Any) -> Any:
        return mails[f"<{event.id}.email@fulfil>"]

    assert "refund" in mail(refused).text.lower()
    assert "agree" in mail(second).text.lower()
    assert "VASE" in mail(told_alert).text
