"""Weekly reminders from the projector's read model, with a fake clock: one per order and period."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import date, timedelta

import asyncpg

from services.notifier.adapters.migrate import apply_migrations
from services.notifier.adapters.outbox import OutboxStore
from services.notifier.adapters.read_model import ReadModel
from services.notifier.adapters.smtp import EmailChannel
from services.notifier.adapters.webhook import WebhookChannel
from services.notifier.domain.decide import Policy
from services.notifier.service_layer.clock import SystemClock
from services.notifier.service_layer.messages import renderer
from services.notifier.service_layer.reminders import ReminderScheduler
from services.notifier.service_layer.sender import ChannelSender
from services.projector.adapters.migrate import MIGRATIONS_DIR
from services.projector.adapters.migrate import migrate as migrate_read_model
from tests.services.notifier.conftest import WEBHOOK_SECRET, FakeClock, notifier_settings_for
from tests.services.notifier.helpers import assert_no_pii


async def _read_model(database_url: str, schema: str) -> None:
    """The projector's own migration, applied the way the projector applies it: a
    column the reminder query needs that the projector drops or renames fails here."""
    applied = await asyncio.to_thread(migrate_read_model, database_url, schema)
    assert applied, f"the projector's migrations in {MIGRATIONS_DIR} applied nothing"


async def _order(
    conn, order_id: str, since, *, email: str, name: str, locale: str = "en", eta=None, qty: int = 2
):
    await conn.execute(
        "INSERT INTO projection.orders (order_id, warehouse_id, customer_id, customer_email, customer_name,"
        " customer_locale, status, placed_at, updated_at, backordered_since)"
        " VALUES ($1, 'wh-1', $1, $2, $3, $4, 'backordered', $5, $5, $5)",
        order_id,
        email,
        name,
        locale,
        since,
    )
    await conn.execute(
        "INSERT INTO projection.order_lines (order_id, line_no, warehouse_id, sku, quantity, backordered, eta,"
        " unit_price, currency, updated_at) VALUES ($1, 1, 'wh-1', 'SKU-R', $2, $2, $3, 10.5, 'EUR', $4)",
        order_id,
        qty,
        eta,
        since,
    )


async def test_one_reminder_per_period_per_waiting_order_and_none_after_it_ships_or_is_cancelled(
    settings, test_database, smtp_server, webhook_receiver, captured_logs
) -> None:
    clock = FakeClock()
    t0 = clock.now()
    notifier = notifier_settings_for(
        settings,
        test_database,
        smtp_url=smtp_server.url,
        webhook_url=webhook_receiver.url,
        webhook_secret=WEBHOOK_SECRET,
        fulfil_notifier_reminder_days=7,
    )
    await apply_migrations(test_database)
    conn = await asyncpg.connect(test_database)
    pool = await asyncpg.create_pool(test_database, min_size=1, max_size=4)
    senders = [
        ChannelSender(EmailChannel(notifier), OutboxStore(pool), notifier, clock),
        # Weeks of fake time move the reminders; the signature takes real time, as a receiver checks it.
        ChannelSender(
            WebhookChannel(notifier, SystemClock().now), OutboxStore(pool), notifier, clock
        ),
    ]
    try:
        await _read_model(test_database, notifier.fulfil_read_model_schema)
        await _order(
            conn,
            "ord-a",
            t0,
            email="anna@reminded.example",
            name="Anna Remind",
            eta=date(2026, 4, 20),
        )
        await _order(
            conn, "ord-b", t0 + timedelta(days=1), email="ben@reminded.example", name="Ben Remind"
        )
        await _order(
            conn,
            "ord-c",
            t0,
            email="cleo@reminded.example",
            name="Cleo Remind",
            eta=date(2026, 5, 1),
        )
        await _order(
            conn,
            "ord-e",
            t0 + timedelta(days=3),
            email="emil@reminded.example",
            name="Emil Erinnerung",
            locale="de-AT",
            eta=date(2026, 4, 30),
        )
        # Placed and shipped at once: never waiting, never reminded.
        await _order(conn, "ord-d", t0, email="dora@reminded.example", name="Dora Remind")
        await conn.execute(
            "UPDATE projection.order_lines SET backordered = 0, allocated = quantity WHERE order_id = 'ord-d'"
        )

        policy = Policy.from_settings(notifier)
        store = OutboxStore(pool)

        def scheduler() -> ReminderScheduler:  # a fresh one = a restarted notifier
            return ReminderScheduler(
                ReadModel(pool, notifier.fulfil_read_model_schema), store, policy, renderer(), clock
            )

        async def deliver() -> None:
            for sender in senders:
                while await sender.run_once():
                    pass

        for sender in senders:
            await sender.channel.start()

        clock.advance(days=6, hours=23)
        assert await scheduler().tick() == 0  # nobody has waited a week yet
        clock.advance(hours=2)  # t0 + 7d 1h: a and c are due (b went on backorder a day later)
        assert await scheduler().tick() == 4
        assert await scheduler().tick() == 0  # the same period again: nothing, even after a restart
        await deliver()
        clock.advance(days=1, hours=1)  # t0 + 8d 2h: b's first week
        assert await scheduler().tick() == 2

        # a ships, c is cancelled.
        await conn.execute(
            "UPDATE projection.order_lines SET backordered = 0, allocated = quantity WHERE order_id = 'ord-a'"
        )
        await conn.execute(
            "UPDATE projection.order_lines SET backordered = 0, cancelled = quantity WHERE order_id = 'ord-c'"
        )
        await conn.execute(
            "UPDATE projection.orders SET status = 'cancelled' WHERE order_id = 'ord-c'"
        )
        clock.advance(
            days=6
        )  # t0 + 14d 2h: second week of a and c, but they no longer wait; e's first week
        assert await scheduler().tick() == 2
        clock.advance(days=1)  # t0 + 15d 2h: b's second week
        assert await scheduler().tick() == 2
        clock.advance(days=30)  # a long outage: one reminder for the current period, not a backlog
        assert await scheduler().tick() == 4
        await deliver()
    finally:
        for sender in senders:
            await sender.channel.close()
        await pool.close()
        await conn.close()

    mails = smtp_server.mails
    per_order = Counter(m.to.split("@")[0] for m in mails)
    assert per_order == {"anna": 1, "cleo": 1, "ben": 3, "emil": 2}
    assert len({m.message_id for m in mails}) == len(mails)  # one id per (order, period)
    hooks = webhook_receiver.received()
    assert len(hooks) == len(mails) and all(h.verified for h in hooks)
    assert {h.json["kind"] for h in hooks} == {"reminder"}

    anna = next(m for m in mails if m.to.startswith("anna"))
    assert anna.subject == "Update on the backordered items of your order ord-a"
    assert "2 × SKU-R: expected to ship on 20 April 2026" in anna.text
    assert "https://shop.example/orders/ord-a/cancel" in anna.text
    ben = sorted((m for m in mails if m.to.startswith("ben")), key=lambda m: m.text)
    assert all("no date yet" in m.text for m in ben)
    # The promise of the next update matches the reminder cadence: a week after this one.
    assert any("We will write to you again by 17 March 2026 at the latest" in m.text for m in ben)
    emil = next(m for m in mails if m.to.startswith("emil"))
    assert emil.subject == "Neuigkeiten zu den nachbestellten Artikeln Ihrer Bestellung ord-e"
    assert (
        "voraussichtlicher Versand am 30. April 2026" in emil.text
        and "Hallo Emil Erinnerung," in emil.text
    )
    assert_no_pii(captured_logs.getvalue(), "Remind", "Erinnerung")
