"""The notifier's pure core for the order lifecycle: the delay-consent rule, part cancels,
back-in-stock alerts and orders refused as invalid. No I/O."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

import orjson
import pytest

from services.notifier.domain.decide import Policy, decide, notice_for
from services.notifier.domain.model import (
    BACK_IN_STOCK,
    CANCELLED,
    CONSENT_RECORDED,
    ETA_CHANGED,
    Notice,
)
from services.notifier.domain.plan import Consumed, lookups, plan_batch
from services.notifier.domain.render import render_email, render_webhook
from tests.builders import allocations as b

POLICY = Policy(
    channels=("email", "webhook"),
    cancel_url_template="https://shop.example/orders/{order_id}/cancel",
    consent_url_template="https://shop.example/orders/{order_id}/consent",
    eta_hold_seconds=300,
)
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CANCEL = "https://shop.example/orders/o1/cancel"
CONSENT = "https://shop.example/orders/o1/consent"


def _email(event, policy=POLICY):
    notice = notice_for(event, policy)
    assert notice is not None, event.type
    return notice, render_email(notice)


def _plain(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))


def _both(mail) -> tuple[str, str]:
    """The plain-text part and the HTML part as a reader sees it (one line per paragraph)."""
    return re.sub(r"\s+", " ", mail.text), _plain(mail.html)


def _new_outcomes(cust):
    return [
        b.delay_notice("o1", cust, "offered"),
        b.delay_notice("o1", cust, "required"),
        b.consent_recorded("o1", cust),
        b.stock_alert_triggered("alert-1", cust),
        b.cancellation_processed(
            "o1",
            cust,
            lines=[b.line(1, "SKU-1", 5, allocated=2, cancelled=3)],
            reason="no_consent",
        ),
        b.cancellation_processed(
            "o1",
            cust,
            lines=[b.line(1, "SKU-1", 5, allocated=2, cancelled=1, backordered=2)],
            not_cancelled=[b.not_cancelled(1, 2), b.not_cancelled(9, 1, "unknown_line")],
        ),
    ]


@pytest.mark.parametrize("locale", ["en", "de"])
def test_every_new_outcome_renders_in_both_languages_without_internal_ids(locale) -> None:
    for event in _new_outcomes(b.customer(locale=locale)):
        decisions = decide(event, POLICY)
        assert [d.channel for d in decisions] == ["email", "webhook"], event.type
        notice, mail = _email(event)
        assert mail.subject and mail.text.strip() and mail.html.startswith("<!DOCTYPE html>")
        assert f'<html lang="{locale}">' in mail.html
        assert mail.text.startswith("Hello" if locale == "en" else "Hallo")
        for text in (mail.subject, mail.text, mail.html):
            assert event.id not in text and event.causation_id not in text
            assert "alert-1" not in text  # the alert id is ours, not the customer's
            assert "None" not in text and "{{" not in text


@pytest.mark.parametrize("locale", ["en", "de"])
def test_a_first_delay_offers_cancelling_and_says_silence_is_agreement(locale) -> None:
    notice, mail = _email(b.delay_notice("o1", b.customer(locale=locale), "offered"))
    assert notice.kind == ETA_CHANGED and notice.lines[0].consent == "offered"
    phrases = {
        "en": (
            "you can cancel the delayed items now and get a full refund",
            "if we do not hear from you, we will take it that you agree to the new date",
            "19 May 2026",
        ),
        "de": (
            "können Sie die verspäteten Artikel jetzt stornieren und erhalten den vollen Betrag",
            "Hören wir nichts von Ihnen, gehen wir davon aus, dass Sie mit dem neuen Termin einverstanden sind",
            "19. Mai 2026",
        ),
    }[locale]
    for text in _both(mail):
        for phrase in phrases:
            assert phrase in text, (phrase, text)
        assert CANCEL in text and CONSENT not in text  # silence is consent: no link needed
    assert f'href="{CANCEL}"' in mail.html
    assert orjson.loads(render_webhook(notice))["consent_url"] is None


@pytest.mark.parametrize("locale", ["en", "de"])
def test_a_delay_that_needs_consent_asks_for_it_by_the_promised_date(locale) -> None:
    event = b.delay_notice("o1", b.customer(locale=locale), "required")
    notice, mail = _email(event)
    assert notice.lines[0].promised_eta == date(2026, 4, 14)
    subject, phrases = {
        "en": (
            "Your agreement is needed: new expected date for your order o1",
            (
                "This delay needs your agreement",
                "3 × SKU-1: by 14 April 2026",
                "If we have not heard from you by then, we will cancel these items and give "
                "you a full refund for them",
            ),
        ),
        "de": (
            "Ihre Zustimmung ist nötig: neuer voraussichtlicher Versandtermin für Ihre Bestellung o1",
            (
                "Für diese Verzögerung brauchen wir Ihre Zustimmung",
                "3 × SKU-1: bis zum 14. April 2026",
                "Wenn wir bis dahin nichts von Ihnen hören, stornieren wir diese Artikel und "
                "erstatten Ihnen den vollen Betrag",
            ),
        ),
    }[locale]
    assert mail.subject == subject
    for text in _both(mail):
        for phrase in phrases:
            assert phrase in text, (phrase, text)
        assert CONSENT in text and CANCEL in text  # agree, or cancel for a full refund
        assert "take it that you agree" not in text and "einverstanden sind" not in text
    assert f'href="{CONSENT}"' in mail.html and f'href="{CANCEL}"' in mail.html
    body = orjson.loads(render_webhook(notice))
    assert body["consent_url"] == CONSENT and body["cancel_url"] == CANCEL
    assert body["lines"][0]["consent"] == "required"
    assert body["lines"][0]["promised_eta"] == "2026-04-14"


def test_a_line_offered_again_after_an_earlier_date_is_not_a_delay_notice() -> None:
    # The ETA came back to the promised date: the consent requirement is lifted.
    event = b.delay_notice(
        "o1",
        b.customer(),
        "offered",
        eta=date(2026, 4, 14),
        previous_eta=date(2026, 5, 19),
        promised_eta=date(2026, 4, 14),
    )
    _, mail = _email(event)
    assert "earlier than the 19 May 2026" in mail.text
    assert "take it that you agree" not in mail.text and "needs your agreement" not in mail.text
    assert CANCEL in mail.text  # the right to cancel is always stated


def test_a_consent_still_outstanding_is_repeated_in_later_backorder_messages() -> None:
    waiting = b.line(
        1,
        "SKU-1",
        5,
        shipped=1,
        allocated=1,
        backordered=4,
        eta=date(2026, 5, 19),
        promised_eta=date(2026, 4, 14),
        consent="required",
    )
    _, mail = _email(b.backorder_allocated("o1", b.customer(), lines=[waiting]))
    for text in _both(mail):
        assert "This delay needs your agreement" in text
        assert "4 × SKU-1: by 14 April 2026" in text
        assert CONSENT in text and CANCEL in text


@pytest.mark.parametrize("locale", ["en", "de"])
def test_a_recorded_consent_is_confirmed_with_the_date(locale) -> None:
    notice, mail = _email(b.consent_recorded("o1", b.customer(locale=locale)))
    assert notice.kind == CONSENT_RECORDED
    subject, phrase = {
        "en": (
            "We have noted that you will wait for your order o1",
            "3 × SKU-1: until 19 May 2026",
        ),
        "de": ("Notiert: Sie warten auf Ihre Bestellung o1", "3 × SKU-1: bis zum 19. Mai 2026"),
    }[locale]
    assert mail.subject == subject
    for text in _both(mail):
        assert phrase in text and CANCEL in text and CONSENT not in text
    undated = b.line(1, "SKU-1", 5, backordered=5, eta=None, consent="given")
    _, mail = _email(b.consent_recorded("o1", b.customer(locale=locale), lines=[undated]))
    assert ("until we have a date (no date yet)" if locale == "en" else "noch kein Termin") in (
        mail.text
    )


@pytest.mark.parametrize("locale", ["en", "de"])
def test_a_cancellation_for_lack_of_consent_says_the_refund_follows(locale) -> None:
    event = b.cancellation_processed(
        "o1",
        b.customer(locale=locale),
        lines=[b.line(1, "SKU-1", 5, allocated=2, cancelled=3, unit_price="19.90", currency="EUR")],
        reason="no_consent",
    )
    notice, mail = _email(event)
    assert notice.kind == CANCELLED and notice.reason == "no_consent"
    subject, phrases = {
        "en": (
            "Items of your order o1 have been cancelled",
            (
                "As we did not hear from you by the date we gave you, we have cancelled them",
                "Your refund follows: you will get a full refund for them (EUR 59.70)",
                "you do not need to do anything for it",
                "These items had already been sent to you and are not affected",
            ),
        ),
        "de": (
            "Artikel Ihrer Bestellung o1 wurden storniert",
            (
                "Da wir bis zum genannten Datum nichts von Ihnen gehört haben, haben wir sie "
                "wie angekündigt storniert",
                "Die Erstattung folgt: Sie erhalten den vollen Betrag dafür zurück (59,70 EUR)",
                "müssen dafür nichts tun",
            ),
        ),
    }[locale]
    assert mail.subject == subject
    for text in _both(mail):
        for phrase in phrases:
            assert phrase in text, (phrase, text)
        assert "/cancel" not in text  # nothing left on backorder to cancel
        assert "return them to us" not in text  # the customer did not ask to cancel


@pytest.mark.parametrize("locale", ["en", "de"])
def test_a_part_cancel_says_what_could_not_be_cancelled_and_what_still_waits(locale) -> None:
    event = b.cancellation_processed(
        "o1",
        b.customer(locale=locale),
        lines=[
            b.line(1, "SKU-1", 5, allocated=2, cancelled=1, backordered=2, eta=date(2026, 5, 1)),
            b.line(2, "SKU-2", 1, cancelled=1),
        ],
        not_cancelled=[b.not_cancelled(1, 2), b.not_cancelled(9, 1, "unknown_line")],
    )
    notice, mail = _email(event)
    assert [x.line_no for x in notice.not_cancelled] == [1, 9]
    phrases = {
        "en": (
            "We have cancelled these items from your order o1",
            "1 × SKU-1",
            "We could not cancel everything you asked for",
            "2 × SKU-1: already sent to you, or no longer open",
            "1 × item no. 9: your order has no such item",
            "Still on backorder",
            "2 × SKU-1: expected to ship on 1 May 2026",
        ),
        "de": (
            "wir haben diese Artikel aus Ihrer Bestellung o1 storniert",
            "Nicht alles, was Sie stornieren wollten, konnten wir stornieren",
            "2 × SKU-1: bereits an Sie verschickt oder nicht mehr offen",
            "1 × Position 9: Ihre Bestellung hat keine solche Position",
            "Weiterhin im Rückstand",
            "voraussichtlicher Versand am 1. Mai 2026",
        ),
    }[locale]
    for text in _both(mail):
        for phrase in phrases:
            assert phrase in text, (phrase, text)
        assert CANCEL in text  # what still waits can be cancelled too
    body = orjson.loads(render_webhook(notice))
    assert body["not_cancelled"] == [
        {"line_no": 1, "quantity": 2, "reason": "not_open"},
        {"line_no": 9, "quantity": 1, "reason": "unknown_line"},
    ]


@pytest.mark.parametrize("locale", ["en", "de"])
def test_a_back_in_stock_message_goes_to_the_alert_customer_once_without_an_order(
    locale,
) -> None:
    cust = b.customer(7, locale=locale)
    event = b.stock_alert_triggered("alert-1", cust, sku="SKU-7", available=4)
    notice, mail = _email(event)
    assert notice.kind == BACK_IN_STOCK and notice.order_id is None and notice.lines == ()
    assert notice.customer.email == "customer7@shop-customers.example"
    assert notice.alert is not None and notice.alert.alert_id == "alert-1"
    assert notice.cancel_url is None
    subject, in_stock, dated, undated = {
        "en": (
            "SKU-7 can be ordered again",
            "It is in stock now",
            "a new order is expected to ship on 2 June 2026",
            "our supplier has not confirmed a delivery date to us yet",
        ),
        "de": (
            "SKU-7 ist wieder bestellbar",
            "Der Artikel ist jetzt auf Lager",
            "voraussichtlicher Versand einer neuen Bestellung am 2. Juni 2026",
            "Einen Liefertermin hat uns unser Lieferant noch nicht bestätigt",
        ),
    }[locale]
    assert mail.subject == subject and in_stock in mail.text and in_stock in _plain(mail.html)
    for promise, phrase in ((date(2026, 6, 2), dated), (None, undated)):
        later = b.stock_alert_triggered(
            "alert-1", cust, sku="SKU-7", available=0, promise_eta=promise
        )
        _, other = _email(later)
        assert phrase in other.text and phrase in _plain(other.html)
        assert in_stock not in other.text
    body = orjson.loads(render_webhook(notice))
    assert body["order_id"] is None and body["cancel_url"] is None
    assert body["alert"] == {
        "alert_id": "alert-1",
        "sku": "SKU-7",
        "available": 4,
        "promise_eta": None,
    }
    assert body["kind"] == BACK_IN_STOCK and body["customer"]["customer_id"] == "cust-7"


def test_back_in_stock_rows_fold_with_nothing_and_are_never_sent_twice() -> None:
    cust = b.customer()
    alert = b.stock_alert_triggered("alert-1", cust)
    held_eta = b.eta_changed("o1", cust)
    batch = [
        Consumed(notice_for(e, POLICY), "allocations.v1", 0, i)
        for i, e in enumerate([held_eta, alert, alert])
    ]
    event_ids, orders = lookups(batch)
    assert orders == {("wh-1", "o1")} and alert.id in event_ids
    plan = plan_batch(batch, existing=set(), held={}, policy=POLICY, now=NOW)
    alert_rows = [r for r in plan.inserts if r.notice.kind == BACK_IN_STOCK]
    assert [(r.channel, r.status, r.due) for r in alert_rows] == [
        ("email", "pending", NOW),
        ("webhook", "pending", NOW),
    ]
    again = plan_batch(
        batch[1:2],
        existing={(alert.id, "email"), (alert.id, "webhook")},
        held={},
        policy=POLICY,
        now=NOW,
    )
    assert again.inserts == [] and again.updates == []


def test_an_order_refused_as_invalid_has_no_one_to_write_to() -> None:
    event = b.invalid_order_rejected("o-bad")
    assert event.data.customer is None and event.data.lines == []
    assert notice_for(event, POLICY) is None
    assert decide(event, POLICY) == []


def test_a_consent_given_before_the_held_delay_notice_went_out_stops_it_asking() -> None:
    cust = b.customer()
    delay = b.delay_notice("o1", cust, "required")
    consent = b.consent_recorded("o1", cust)
    batch = [
        Consumed(notice_for(e, POLICY), "allocations.v1", 0, i)
        for i, e in enumerate([delay, consent])
    ]
    plan = plan_batch(batch, existing=set(), held={}, policy=POLICY, now=NOW)
    eta_rows = [r for r in plan.inserts if r.notice.kind == ETA_CHANGED]
    assert {r.status for r in eta_rows} == {"pending"}
    assert all(r.notice.lines[0].consent == "given" for r in eta_rows)
    text = render_email(eta_rows[0].notice).text
    assert "19 May 2026" in text and "needs your agreement" not in text


@pytest.mark.parametrize("locale", ["en", "de"])
def test_customer_provided_text_is_escaped_in_every_new_html_part(locale) -> None:
    name = '<script>alert("x")</script> Eve'
    cust = b.customer(locale=locale, name=name)
    events = [
        b.delay_notice("o<1>", cust, "required"),
        b.consent_recorded("o<1>", cust),
        b.stock_alert_triggered("alert-1", cust, sku="<img/src=x>"),
        b.cancellation_processed("o<1>", cust, reason="no_consent"),
        b.cancellation_processed(
            "o<1>", cust, not_cancelled=[b.not_cancelled(4, 1, "unknown_line")]
        ),
    ]
    for event in events:
        _, mail = _email(event)
        assert "<script>" not in mail.html and "<img" not in mail.html and "o<1>" not in mail.html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; Eve" in mail.html
        assert f"{name}," in mail.text  # plain text is not markup
    _, mail = _email(events[0])
    assert "o&lt;1&gt;" in mail.html and "https://shop.example/orders/o%3C1%3E/consent" in mail.html


def test_new_facts_survive_the_outbox_and_old_ones_stay_byte_for_byte() -> None:
    cust = b.customer()
    for event in [
        b.delay_notice("o1", cust, "required"),
        b.stock_alert_triggered("alert-1", cust, promise_eta=date(2026, 6, 2)),
        b.cancellation_processed("o1", cust, not_cancelled=[b.not_cancelled(2, 1)]),
    ]:
        notice = notice_for(event, POLICY)
        assert Notice.from_json(notice.to_json()) == notice
    plain = notice_for(b.eta_changed("o1", cust), POLICY).to_json()
    for added in ('"consent"', '"promised_eta"', '"alert"', '"not_cancelled"'):
        assert added not in plain


@pytest.mark.parametrize("locale", ["en", "de"])
def test_a_switch_to_one_delivery_after_a_shipment_holds_only_what_was_not_sent(locale) -> None:
    # OrderPolicyChanged ship_partial -> ship_complete: line 1 shipped already.
    lines = [
        b.line(1, "A", 2, allocated=2),
        b.line(2, "B", 3, backordered=3, reserved=1, eta=date(2026, 5, 3)),
    ]
    _, mail = _email(b.backordered("o1", b.customer(locale=locale), lines, "ship_complete_hold"))
    phrase = {
        "en": "so we are holding what has not been sent to you yet and will ship it together",
        "de": "Wir halten deshalb zurück, was noch nicht an Sie verschickt ist",
    }[locale]
    for text in _both(mail):
        assert phrase in text and "Thank you for your order" not in text
    _, placed = _email(
        b.backordered("o1", b.customer(locale=locale), lines[1:], "ship_complete_hold")
    )
    assert ("holding your order" if locale == "en" else "Bestellung deshalb zurück") in placed.text


def test_the_consent_link_is_configured_like_the_cancel_link() -> None:
    from fulfil_platform.config import ConfigError
    from services.notifier.config import load_notifier_settings

    settings = load_notifier_settings(
        fulfil_consent_url_template="https://shop.example/c/{order_id}?agree=1"
    )
    policy = Policy.from_settings(settings)
    notice = notice_for(b.delay_notice("o 1", b.customer(), "required"), policy)
    assert notice.consent_url == "https://shop.example/c/o%201?agree=1"
    with pytest.raises(ConfigError, match="FULFIL_CONSENT_URL_TEMPLATE"):
        load_notifier_settings(fulfil_consent_url_template="https://shop.example/consent")


def test_a_held_notice_stored_before_consent_links_takes_the_later_events_link() -> None:
    from services.notifier.domain.decide import fold

    cust = b.customer()
    held = notice_for(b.eta_changed("o1", cust), POLICY).model_copy(update={"consent_url": None})
    held = Notice.from_json(held.to_json())  # as an older notifier stored it
    assert held.consent_url is None
    waiting = b.line(
        1,
        "SKU-1",
        5,
        allocated=2,
        backordered=3,
        eta=date(2026, 4, 21),
        promised_eta=date(2026, 4, 14),
        consent="required",
    )
    later = notice_for(b.backorder_allocated("o1", cust, lines=[waiting]), POLICY)
    updated, _ = fold(held, later)
    assert updated is not None and updated.consent_url == CONSENT
    text = render_email(updated).text
    assert "needs your agreement" in text and CONSENT in text and "None" not in text
