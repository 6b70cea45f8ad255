"""The order lifecycle's messages end to end: real broker, PostgreSQL, SMTP server and HTTP
receiver. A back-in-stock alert and a delay that needs the customer's consent each become
exactly one email (and one webhook), also when the events are read again; an order refused
as invalid becomes none, and is no failure and no dead letter."""

from __future__ import annotations

from collections import Counter

import asyncpg

from fulfil_platform import kafka
from tests.builders import allocations as b
from tests.kafka_helpers import publish, wait_for
from tests.services.notifier.helpers import (
    assert_no_pii,
    log_ends,
    outbox,
    running_notifier,
    stored_offsets,
)


async def _caught_up(settings) -> bool:
    ends = await log_ends(settings)
    stored = await stored_offsets(settings)
    return bool(ends) and all(stored.get(p, 0) >= end for p, end in ends.items())


async def _dead_letter_rows(settings) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM notifier_dead_letters"))
    finally:
        await conn.close()


async def test_an_alert_and_a_consent_request_send_one_email_each_and_an_invalid_rejection_none(
    notifier_settings, smtp_server, webhook_receiver, captured_logs
) -> None:
    settings = notifier_settings
    await kafka.create_topics(settings)
    delay = b.delay_notice("ord-1", b.customer(1, name="Ada Lovelace"), "required")
    invalid = b.invalid_order_rejected("ord-bad")
    alert = b.stock_alert_triggered(
        "alert-1", b.customer(2, locale="de", name="Jürgen Weiß"), sku="SKU-7", available=3
    )
    # One warehouse, one partition: the alert is read after the invalid rejection.
    events = [delay, invalid, alert]
    await publish(settings, events)

    async def all_sent():
        rows = await outbox(settings)
        return len(rows) == 4 and all(r["status"] == "sent" for r in rows) and rows

    async with running_notifier(settings):
        rows = await wait_for(all_sent, timeout=60, what="both messages sent on both channels")
        await wait_for(
            lambda: _true(len(webhook_receiver.received()) >= 2), timeout=10, what="webhooks"
        )
        # Read again (a redelivery, a replay): nothing is added, nothing is sent twice.
        await publish(settings, events)
        await wait_for(lambda: _caught_up(settings), timeout=60, what="the resent events read")
        assert len(await outbox(settings)) == 4

    assert {(r["event_id"], r["channel"]) for r in rows} == {
        (e.id, c) for e in (delay, alert) for c in ("email", "webhook")
    }
    alert_rows = [r for r in rows if r["event_id"] == alert.id]
    assert all(r["order_id"] is None and r["alert_id"] == "alert-1" for r in alert_rows)
    assert all(r["kind"] == "back_in_stock" for r in alert_rows)
    assert await _dead_letter_rows(settings) == 0, "an invalid rejection is not poison"

    sent = Counter(m.message_id for m in smtp_server.mails)
    assert sent == {f"<{delay.id}.email@fulfil>": 1, f"<{alert.id}.email@fulfil>": 1}
    mails = {m.message_id: m for m in smtp_server.mails}
    consent = mails[f"<{delay.id}.email@fulfil>"]
    assert consent.to == "customer1@shop-customers.example"
    assert consent.subject == "Your agreement is needed: new expected date for your order ord-1"
    assert "3 × SKU-1: by 14 April 2026" in consent.text
    assert "https://shop.example/orders/ord-1/consent" in consent.text
    assert 'href="https://shop.example/orders/ord-1/cancel"' in consent.html
    back = mails[f"<{alert.id}.email@fulfil>"]
    assert back.to == "customer2@shop-customers.example"
    assert back.subject == "SKU-7 ist wieder bestellbar"
    assert "Der Artikel ist jetzt auf Lager" in back.text

    hooks = Counter(h.idempotency_key for h in webhook_receiver.received())
    assert hooks == {delay.id: 1, alert.id: 1}
    body = next(h.json for h in webhook_receiver.received() if h.idempotency_key == alert.id)
    assert body["order_id"] is None and body["alert"]["alert_id"] == "alert-1"
    assert all(h.verified for h in webhook_receiver.received())

    assert_no_pii(captured_logs.getvalue(), "Ada", "Lovelace", "Jürgen", "Weiß")


async def _true(value):
    return value
