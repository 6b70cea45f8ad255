"""The notifier's pure core: which messages, what they say, how bursts fold. No I/O."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import orjson
import pytest

from services.notifier.domain.decide import (
    Policy,
    decide,
    message_id,
    notice_for,
    reminder_id,
    reminder_notice,
    reminder_period_index,
)
from services.notifier.domain.model import ETA_CHANGED
from services.notifier.domain.plan import Consumed, Row, plan_batch
from services.notifier.domain.render import language, render_email, render_webhook
from tests.builders import allocations as b

POLICY = Policy(
    channels=("email", "webhook"),
    cancel_url_template="https://shop.example/orders/{order_id}/cancel",
    eta_hold_seconds=300,
)
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _email(event, policy=POLICY):
    notice = notice_for(event, policy)
    assert notice is not None
    return notice, render_email(notice)


def _no_internal_ids(event, *texts: str) -> None:
    for text in texts:
        assert event.id not in text
        assert event.causation_id not in text
        shipment = getattr(event.data, "shipment_id", None)
        assert shipment is None or shipment not in text
        assert "Traceback" not in text


def test_each_order_event_decides_one_message_per_channel_and_stock_positions_none() -> None:
    cust = b.customer()
    events = [
        b.order_allocated("o1", cust),
        b.partially_shipped("o1", cust),
        b.backordered("o1", cust),
        b.backorder_allocated("o1", cust),
        b.eta_changed("o1", cust),
        b.order_rejected("o1", cust),
        b.cancellation_processed("o1", cust),
    ]
    for event in events:
        decisions = decide(event, POLICY)
        assert [d.channel for d in decisions] == ["email", "webhook"], event.type
        hold = 300 if event.type == "BackorderEtaChanged" else 0
        assert all(d.hold_seconds == hold for d in decisions)
    assert decide(b.stock_position(), POLICY) == []
    quiet = Policy(
        channels=("email",),
        cancel_url_template=POLICY.cancel_url_template,
        order_confirmation=False,
    )
    assert decide(b.order_allocated("o1", cust), quiet) == []
    assert (
        decide(
            b.backordered("o1", cust),
            Policy(channels=(), cancel_url_template="https://x/{order_id}"),
        )
        == []
    )


def test_backorder_with_a_date_states_it_and_the_cancel_link() -> None:
    event = b.partially_shipped("ord-77", b.customer())
    notice, mail = _email(event)
    assert mail.subject == "Part of your order ord-77 is on its way"
    assert "1 × SKU-2" in mail.text and "3 × SKU-1: expected to ship on 14 April 2026" in mail.text
    assert "https://shop.example/orders/ord-77/cancel" in mail.text
    assert 'href="https://shop.example/orders/ord-77/cancel"' in mail.html
    assert "full refund" in mail.text
    assert "no date yet" not in mail.text.lower()
    _no_internal_ids(event, mail.subject, mail.text, mail.html)


def test_backorder_without_a_date_says_so_and_when_the_next_update_comes() -> None:
    event = b.backordered("ord-8", b.customer())
    _, mail = _email(event)
    assert mail.subject == "Your order ord-8 is on backorder"
    assert "2 × SKU-9: no date yet" in mail.text
    # The weekly reminder: at the latest 7 days after the event (2 March 2026).
    assert "We will write to you again by 9 March 2026 at the latest" in mail.text
    assert "https://shop.example/orders/ord-8/cancel" in mail.text
    hold = b.backordered(
        "ord-9",
        b.customer(),
        reason="ship_complete_hold",
        lines=[
            b.line(1, "A", 2, backordered=2, reserved=2),
            b.line(2, "B", 1, backordered=1, eta=date(2026, 5, 1)),
        ],
    )
    _, mail = _email(hold)
    assert mail.subject == "Your order ord-9 will ship in one delivery"
    assert "2 × A: in stock and set aside for you" in mail.text
    assert "1 × B: expected to ship on 1 May 2026" in mail.text
    assert "no date yet" not in mail.text.lower()


def test_every_backorder_message_carries_the_cancel_link_and_others_do_not() -> None:
    cust = b.customer()
    link = "https://shop.example/orders/o%2F1/cancel"  # the order id is URL-quoted
    with_link = [
        b.partially_shipped("o/1", cust),
        b.backordered("o/1", cust),
        b.eta_changed("o/1", cust),
        b.backorder_allocated(
            "o/1", cust, lines=[b.line(1, "S", 5, shipped=2, allocated=2, backordered=3)]
        ),
    ]
    for event in with_link:
        _, mail = _email(event)
        assert link in mail.text and f'href="{link}"' in mail.html, event.type
    for event in [
        b.order_allocated("o/1", cust),
        b.order_rejected("o/1", cust),
        b.cancellation_processed("o/1", cust),
        b.backorder_allocated("o/1", cust),
    ]:
        _, mail = _email(event)
        assert link not in mail.text, event.type


def test_other_messages_say_what_happened() -> None:
    cust = b.customer()
    _, mail = _email(b.order_allocated("o2", cust))
    assert mail.subject == "Your order o2 is on its way" and "3 × SKU-1" in mail.text
    _, mail = _email(b.backorder_allocated("o2", cust))
    assert (
        mail.subject == "The rest of your order o2 is on its way"
        and "That completes your order" in mail.text
    )
    _, mail = _email(b.order_rejected("o2", cust))
    assert "1 × SKU-OLD: no longer available (discontinued)" in mail.text
    assert "full refund of EUR 12.50" in mail.text
    _, mail = _email(b.cancellation_processed("o2", cust))
    assert mail.subject == "Your cancellation for order o2 is confirmed"
    assert "3 × SKU-1" in mail.text and "(EUR 59.70)" in mail.text
    assert "already been sent to you" in mail.text and "2 × SKU-1" in mail.text
    _, mail = _email(b.eta_changed("o2", cust))
    assert "now expected to ship on 21 April 2026 (we last told you 14 April 2026)" in mail.text
    assert "sorry for the delay" in mail.text


def test_customer_name_is_escaped_in_html_and_plain_in_text() -> None:
    cust = b.customer(name='<script>alert("x")</script> Bob')
    _, mail = _email(b.backordered("o3", cust))
    assert "<script>" not in mail.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; Bob" in mail.html
    assert 'Hello <script>alert("x")</script> Bob,' in mail.text  # plain text is not markup
    nameless = b.customer(name="")
    _, mail = _email(b.backordered("o3", nameless))
    assert mail.text.startswith("Hello,\n")


def test_german_locale_and_english_fallback() -> None:
    assert [language(x) for x in ("de", "de-AT", "de_DE", "DE", "fr-FR", None, "en-GB")] == [
        "de",
        "de",
        "de",
        "de",
        "en",
        "en",
        "en",
    ]
    _, mail = _email(b.partially_shipped("o4", b.customer(locale="de-DE", name="Jürgen")))
    assert mail.subject == "Ein Teil Ihrer Bestellung o4 ist unterwegs"
    assert mail.text.startswith("Hallo Jürgen,")
    assert "voraussichtlicher Versand am 14. April 2026" in mail.text
    assert "stornieren" in mail.text and "https://shop.example/orders/o4/cancel" in mail.text
    assert '<html lang="de">' in mail.html
    _, mail = _email(b.backordered("o4", b.customer(locale="de")))
    assert "noch kein Termin" in mail.text and "spätestens am 9. März 2026" in mail.text
    _, mail = _email(b.cancellation_processed("o4", b.customer(locale="de")))
    assert "(59,70 EUR)" in mail.text
    _, mail = _email(b.backordered("o4", b.customer(locale="fr")))
    assert mail.subject == "Your order o4 is on backorder"


def test_every_kind_renders_in_every_language_without_ids() -> None:
    for locale in ("en", "de"):
        cust = b.customer(locale=locale)
        for event in [
            b.order_allocated("o5", cust),
            b.partially_shipped("o5", cust),
            b.backordered("o5", cust),
            b.backorder_allocated("o5", cust),
            b.eta_changed("o5", cust),
            b.order_rejected("o5", cust),
            b.cancellation_processed("o5", cust),
        ]:
            _, mail = _email(event)
            assert mail.subject and mail.text and mail.html.startswith("<!DOCTYPE html>")
            _no_internal_ids(event, mail.subject, mail.text, mail.html)


def test_webhook_body_is_stable_json() -> None:
    event = b.eta_changed("o6", b.customer())
    notice = notice_for(event, POLICY)
    body = render_webhook(notice)
    assert body == render_webhook(notice)  # same bytes every time: resends verify too
    doc = orjson.loads(body)
    assert doc["notification_id"] == event.id and doc["kind"] == ETA_CHANGED
    assert (
        doc["lines"][0]["eta"] == "2026-04-21" and doc["lines"][0]["previous_eta"] == "2026-04-14"
    )
    assert doc["cancel_url"] == "https://shop.example/orders/o6/cancel"
    # Signatures: test_webhook_signing.py.


def test_message_ids_derive_from_the_event_id() -> None:
    assert message_id("2f1e-ab", "email") == "<2f1e-ab.email@fulfil>"
    odd = message_id("id with spaces/ü", "email")
    assert odd == message_id("id with spaces/ü", "email") and " " not in odd


# ---------------------------------------------------------------- anti-spam folding


def _consumed(events, policy=POLICY) -> list[Consumed]:
    """The batch as the consumer hands it to the planner: each event's notice, decided once."""
    notices = [(i, notice_for(e, policy)) for i, e in enumerate(events)]
    return [Consumed(n, "allocations.v1", 0, i) for i, n in notices if n is not None]


def test_a_burst_of_eta_changes_folds_into_one_message_with_the_latest_and_last_told_dates() -> (
    None
):
    cust = b.customer()
    first = b.eta_changed(
        "o7",
        cust,
        lines=[
            b.line(1, "A", 3, backordered=3, eta=date(2026, 4, 21), previous_eta=date(2026, 4, 14))
        ],
    )
    second = b.eta_changed(
        "o7",
        cust,
        lines=[b.line(2, "B", 1, backordered=1, eta=None, previous_eta=date(2026, 4, 10))],
    )
    third = b.eta_changed(
        "o7",
        cust,
        lines=[
            b.line(1, "A", 3, backordered=3, eta=date(2026, 4, 28), previous_eta=date(2026, 4, 21))
        ],
    )
    policy = Policy(
        channels=("email",), cancel_url_template=POLICY.cancel_url_template, eta_hold_seconds=300
    )
    held: dict = {}
    plan = plan_batch(
        _consumed([first, second], policy), existing=set(), held=held, policy=policy, now=NOW
    )
    assert [r.status for r in plan.inserts] == ["superseded", "pending"]
    assert plan.inserts[1].due == NOW + timedelta(seconds=300)
    # A later batch: the pending row is in the database now.
    pending = plan.inserts[1]
    pending.row_id = 41
    later = plan_batch(
        _consumed([third], policy),
        existing={(first.id, "email"), (second.id, "email")},
        held={("wh-1", "o7", "email"): [pending]},
        policy=policy,
        now=NOW + timedelta(seconds=200),
    )
    assert [u.row_id for u in later.updates] == [41] and later.updates[0].status == "superseded"
    (row,) = later.inserts
    # The window started with the first change: the later ones do not postpone it.
    assert row.status == "pending" and row.due == NOW + timedelta(seconds=300)
    lines = {x.sku: (x.previous_eta, x.eta) for x in row.notice.lines}
    assert lines == {"A": (date(2026, 4, 14), date(2026, 4, 28)), "B": (date(2026, 4, 10), None)}
    mail = render_email(row.notice)
    assert "now expected to ship on 28 April 2026 (we last told you 14 April 2026)" in mail.text
    assert "no date yet: our supplier can no longer confirm the 10 April 2026" in mail.text


def test_a_change_and_its_reversal_within_the_window_send_nothing() -> None:
    cust = b.customer()
    there = b.eta_changed(
        "o8",
        cust,
        lines=[
            b.line(1, "A", 3, backordered=3, eta=date(2026, 4, 21), previous_eta=date(2026, 4, 14))
        ],
    )
    back = b.eta_changed(
        "o8",
        cust,
        lines=[
            b.line(1, "A", 3, backordered=3, eta=date(2026, 4, 14), previous_eta=date(2026, 4, 21))
        ],
    )
    plan = plan_batch(_consumed([there, back]), existing=set(), held={}, policy=POLICY, now=NOW)
    assert {r.status for r in plan.inserts} == {"superseded"} and len(plan.inserts) == 4


def test_a_shipment_after_a_held_eta_change_drops_what_shipped_and_keeps_the_rest() -> None:
    cust = b.customer()
    change = b.eta_changed(
        "o9",
        cust,
        lines=[
            b.line(1, "A", 3, backordered=3, eta=date(2026, 4, 21), previous_eta=date(2026, 4, 14)),
            b.line(2, "B", 2, backordered=2, eta=date(2026, 5, 5), previous_eta=date(2026, 4, 14)),
        ],
    )
    shipped = b.backorder_allocated(
        "o9",
        cust,
        lines=[
            b.line(1, "A", 3, shipped=3, allocated=3),
            b.line(2, "B", 2, backordered=2, eta=date(2026, 5, 5)),
        ],
    )
    plan = plan_batch(_consumed([change, shipped]), existing=set(), held={}, policy=POLICY, now=NOW)
    eta_rows = [r for r in plan.inserts if r.notice.kind == ETA_CHANGED]
    assert {r.status for r in eta_rows} == {"pending"}
    assert all([x.sku for x in r.notice.lines] == ["B"] for r in eta_rows)
    everything = b.backorder_allocated(
        "o9", cust, lines=[b.line(2, "B", 2, shipped=2, allocated=2)]
    )
    plan = plan_batch(
        _consumed([change, shipped, everything]), existing=set(), held={}, policy=POLICY, now=NOW
    )
    eta_rows = [r for r in plan.inserts if r.notice.kind == ETA_CHANGED]
    assert {r.status for r in eta_rows} == {"superseded"}
    assert (
        sum(r.status == "pending" for r in plan.inserts) == 4
    )  # two shipment messages × two channels


def test_redelivered_events_add_nothing() -> None:
    event = b.backordered("o10", b.customer())
    plan = plan_batch(_consumed([event, event]), existing=set(), held={}, policy=POLICY, now=NOW)
    assert len(plan.inserts) == 2
    plan = plan_batch(
        _consumed([event]),
        existing={(event.id, "email"), (event.id, "webhook")},
        held={},
        policy=POLICY,
        now=NOW,
    )
    assert plan.inserts == [] and plan.updates == []


def test_held_rows_of_other_channels_are_untouched() -> None:
    cust = b.customer()
    pending = Row(
        channel="webhook", notice=notice_for(b.eta_changed("o11", cust), POLICY), due=NOW, row_id=5
    )
    policy = Policy(channels=("email",), cancel_url_template=POLICY.cancel_url_template)
    plan = plan_batch(
        _consumed([b.eta_changed("o11", cust)], policy),
        existing=set(),
        held={("wh-1", "o11", "webhook"): [pending]},
        policy=policy,
        now=NOW,
    )
    assert plan.updates == [] and pending.status == "pending"


# ---------------------------------------------------------------- reminders


def _order(**fields):
    return {
        "order_id": "o12",
        "warehouse_id": "wh-1",
        "customer_id": "c",
        "customer_email": "x@y.example",
        "customer_name": "N",
        "customer_locale": "de",
        "placed_at": NOW,
        "backordered_since": NOW,
        **fields,
    }


def test_reminder_periods_and_ids_are_deterministic() -> None:
    assert reminder_period_index(NOW, NOW + timedelta(days=6, hours=23), 7) == 0
    assert reminder_period_index(NOW, NOW + timedelta(days=7), 7) == 1
    assert reminder_period_index(NOW, NOW + timedelta(days=20), 7) == 2
    assert reminder_period_index(NOW, NOW - timedelta(days=1), 7) == 0
    assert reminder_period_index(NOW, NOW + timedelta(days=30), 0) == 0
    assert (
        reminder_id("wh-1", "o12", 1)
        == reminder_id("wh-1", "o12", 1)
        != reminder_id("wh-1", "o12", 2)
    )
    lines = [
        {"line_no": 1, "sku": "A", "quantity": 2, "backordered": 2, "eta": None},
        {"line_no": 2, "sku": "B", "quantity": 1, "backordered": 0, "eta": None},
    ]
    policy = Policy(
        channels=("email",), cancel_url_template=POLICY.cancel_url_template, reminder_days=7
    )
    assert reminder_notice(_order(), lines, NOW + timedelta(days=3), policy) is None
    notice = reminder_notice(_order(), lines, NOW + timedelta(days=8), policy)
    assert notice is not None and [x.sku for x in notice.lines] == ["A"]
    assert notice == reminder_notice(
        _order(), lines, NOW + timedelta(days=9), policy
    )  # same period, same message
    mail = render_email(notice)
    assert mail.subject == "Neuigkeiten zu den nachbestellten Artikeln Ihrer Bestellung o12"
    assert "noch kein Termin" in mail.text and "spätestens am 16. März 2026" in mail.text
    assert (
        reminder_notice(_order(), [dict(lines[0], backordered=0)], NOW + timedelta(days=8), policy)
        is None
    )
    assert (
        reminder_notice(_order(backordered_since=None), lines, NOW + timedelta(days=8), policy)
        is not None
    )


@pytest.mark.parametrize(
    "template", ["https://x.example/cancel", "https://x.example/{order}/c", "ftp://x/{order_id}"]
)
def test_bad_cancel_url_templates_are_configuration_errors(template) -> None:
    from fulfil_platform.config import ConfigError
    from services.notifier.config import load_notifier_settings

    with pytest.raises(ConfigError, match="FULFIL_CANCEL_URL_TEMPLATE"):
        load_notifier_settings(fulfil_cancel_url_template=template)


def test_a_webhook_without_secret_is_a_configuration_error() -> None:
    from fulfil_platform.config import ConfigError
    from services.notifier.config import load_notifier_settings

    with pytest.raises(ConfigError, match="WEBHOOK_SECRET is required"):
        load_notifier_settings(webhook_url="https://hooks.example/x", webhook_secret=None)
    settings = load_notifier_settings(
        webhook_url="https://hooks.example/x", webhook_secret="s", fulfil_notifier_webhook=False
    )
    assert settings.enabled_channels() == ()


def test_backoff_is_exponential_capped_and_jittered() -> None:
    from services.notifier.config import load_notifier_settings
    from services.notifier.service_layer.sender import ChannelSender

    settings = load_notifier_settings(
        fulfil_notifier_backoff_initial_seconds=2, fulfil_notifier_backoff_max_seconds=60
    )
    sender = ChannelSender(
        channel=SimpleNamespace(name="email"), store=None, settings=settings, clock=None
    )  # type: ignore[arg-type]
    first = [sender.delay(1) for _ in range(50)]
    assert (
        all(2 <= d <= 4 for d in first) and len(set(first)) > 1
    )  # jitter spreads a burst of failures
    assert all(8 <= sender.delay(3) <= 10 for _ in range(20))
    assert all(sender.delay(30) == 60 for _ in range(20))  # capped


# ---------------------------------------------------------------- supply side (issue 15)


def _plain(html: str) -> str:
    import re

    return re.sub(r"<[^>]+>", "", html)


@pytest.mark.parametrize("locale", ["en", "de"])
def test_a_cancelled_inbound_says_no_date_is_known_and_offers_cancelling(locale) -> None:
    notice, mail = _email(
        b.undated("o20", b.customer(locale=locale), "InboundCancelled", "supplier closed")
    )
    assert notice.reason == "inbound_cancelled" and notice.lines[0].reason == "inbound_cancelled"
    expected = {
        "en": (
            "no date yet: the supplier delivery these items were coming with has been cancelled",
            "14 April 2026 we last told you no longer holds",
        ),
        "de": (
            "noch kein Termin: Die Lieferung unseres Lieferanten, mit der diese Artikel kommen sollten, wurde storniert",
            "der 14. April 2026, den wir Ihnen genannt hatten, gilt nicht mehr",
        ),
    }[locale]
    for text in (mail.text, _plain(mail.html)):
        for phrase in expected:
            assert phrase in text, (phrase, text)
        assert "https://shop.example/orders/o20/cancel" in text  # the right to cancel
    assert ("full refund" if locale == "en" else "vollen Betrag") in mail.text
    assert "supplier closed" not in mail.text  # the purchasing note is internal


@pytest.mark.parametrize("locale", ["en", "de"])
def test_an_overdue_inbound_says_no_date_is_known_instead_of_a_past_date(locale) -> None:
    notice, mail = _email(
        b.undated("o21", b.customer(locale=locale), "ClockTicked", "inbound_overdue")
    )
    assert notice.reason == "inbound_overdue"
    phrase = {
        "en": "no date yet: the supplier delivery we expected for the 14 April 2026 has not arrived, and we would rather not guess a new date",
        "de": "noch kein Termin: Die Lieferung unseres Lieferanten, die wir zum 14. April 2026 erwartet hatten, ist nicht eingetroffen",
    }[locale]
    assert phrase in mail.text and phrase in _plain(mail.html)
    assert "https://shop.example/orders/o21/cancel" in mail.text
    # A date that only moved to today (the same tick) is an ordinary change.
    moved = b.eta_changed(
        "o21",
        b.customer(locale=locale),
        cause=b.c.EtaChangeCause(event_type="ClockTicked", event_id="t", reason=None),
    )
    notice, _ = _email(moved)
    assert notice.reason is None


def test_the_cause_of_an_undated_line_survives_folding_with_a_later_change() -> None:
    held = notice_for(b.undated("o22", b.customer(), "InboundCancelled"), POLICY)
    later = notice_for(
        b.eta_changed(
            "o22",
            b.customer(),
            lines=[
                b.line(
                    2,
                    "SKU-2",
                    1,
                    backordered=1,
                    eta=date(2026, 5, 1),
                    previous_eta=date(2026, 4, 20),
                )
            ],
        ),
        POLICY,
    )
    from services.notifier.domain.decide import fold

    _, merged = fold(held, later)
    assert merged is not None
    assert [(x.line_no, x.reason) for x in merged.lines] == [(1, "inbound_cancelled"), (2, None)]
    assert "has been cancelled" in render_email(merged).text


# A held notice as the outbox has stored it (`facts`) since before the notice's
# line became the contract's: it must load as it is and be written back unchanged.
STORED_FACTS = (
    '{"kind":"eta_changed","source_id":"e-1","event_type":"BackorderEtaChanged",'
    '"occurred_at":"2026-03-02T09:00:00Z","order_id":"o24","warehouse_id":"wh-1",'
    '"customer":{"customer_id":"c-1","email":"customer1@shop-customers.example",'
    '"name":null,"locale":"de"},"lines":[{"line_no":1,"sku":"SKU-1","quantity":5,'
    '"shipped":0,"allocated":2,"backordered":3,"reserved":0,"rejected":0,"cancelled":0,'
    '"eta":null,"previous_eta":"2026-04-14","reason":"inbound_overdue",'
    '"unit_price":"19.90","currency":"EUR"}],"reason":"inbound_overdue",'
    '"cancel_url":"https://shop.example/orders/o24/cancel","next_update":"2026-03-09"}'
)


def test_a_stored_notice_loads_and_is_stored_again_byte_for_byte() -> None:
    from services.notifier.domain.model import Notice

    notice = Notice.from_json(STORED_FACTS)
    assert notice.to_json() == STORED_FACTS
    assert notice.lines[0].reason == "inbound_overdue"
    assert "ist nicht eingetroffen" in render_email(notice).text
    assert orjson.loads(render_webhook(notice))["lines"][0]["reason"] == "inbound_overdue"


@pytest.mark.parametrize("locale", ["en", "de"])
def test_reservation_lost_says_the_units_are_backordered_again(locale) -> None:
    lines = [b.line(1, "SKU-1", 3, backordered=3, eta=date(2026, 4, 14))]
    _, mail = _email(
        b.backordered("o23", b.customer(locale=locale), lines, reason="reservation_lost")
    )
    subject, phrase = {
        "en": (
            "Items of your order o23 are on backorder again",
            "turned out to be damaged or missing",
        ),
        "de": (
            "Artikel Ihrer Bestellung o23 werden doch nachgeliefert",
            "beschädigt oder nicht auffindbar",
        ),
    }[locale]
    assert mail.subject == subject
    assert phrase in mail.text and phrase in _plain(mail.html)
    assert ("14 April 2026" if locale == "en" else "14. April 2026") in mail.text
    assert "https://shop.example/orders/o23/cancel" in mail.text


@pytest.mark.parametrize("locale", ["en", "de"])
def test_a_pre_order_gets_a_confirmation_not_a_backorder_notice(locale) -> None:
    lines = [b.line(1, "GAME-2", 1, backordered=1, eta=date(2026, 6, 1))]
    _, mail = _email(b.backordered("o24", b.customer(locale=locale), lines, reason="pre_order"))
    subject, phrase, cancel = {
        "en": (
            "Your pre-order o24 is confirmed",
            "not released yet",
            "cancel your pre-order at any time before it ships",
        ),
        "de": (
            "Ihre Vorbestellung o24 ist bestätigt",
            "erscheinen erst noch",
            "jederzeit vor dem Versand kostenlos stornieren",
        ),
    }[locale]
    assert mail.subject == subject
    for text in (mail.text, _plain(mail.html)):
        assert phrase in text and cancel in text
        assert "backorder" not in text.lower() and "rückstand" not in text.lower()
    assert ("1 June 2026" if locale == "en" else "1. Juni 2026") in mail.text


@pytest.mark.parametrize("locale", ["en", "de"])
def test_backorder_limit_and_not_covered_rejections_say_why(locale) -> None:
    lines = [
        b.line(
            1,
            "SKU-CAP",
            4,
            rejected=4,
            reason="backorder_limit",
            unit_price="10.00",
            currency="EUR",
        ),
        b.line(2, "SKU-PO", 1, rejected=1, reason="not_covered"),
    ]
    _, mail = _email(b.order_rejected("o25", b.customer(locale=locale, name="<b>Eve</b>"), lines))
    phrases = {
        "en": (
            "we cannot take more of it on backorder right now",
            "no confirmed supplier delivery covers it",
        ),
        "de": (
            "keine weiteren Rückstände dafür annehmen",
            "keine bestätigte Lieferung unseres Lieferanten deckt ihn ab",
        ),
    }[locale]
    for text in (mail.text, _plain(mail.html)):
        for phrase in phrases:
            assert phrase in text
    assert "<b>Eve</b>" not in mail.html and "&lt;b&gt;Eve&lt;/b&gt;" in mail.html  # autoescaped
    assert ("40.00" if locale == "en" else "40,00") in mail.text
