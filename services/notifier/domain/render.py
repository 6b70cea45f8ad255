"""Rendering notices into messages: Jinja2 templates per kind and language.

Templates live in `templates/<lang>/<kind>.txt.j2` (subject block + plain
text) and `templates/<lang>/<kind>.html.j2`. Autoescaping is on for every
template except the `.txt.j2` plain-text ones (escaping would corrupt plain
text, and plain text is never interpreted as markup), so a customer name like
`<script>` is inert in HTML. Customer text never shows event ids, shipment
ids or errors: the templates only get what `_context` hands them.

Rendering is deterministic: the same notice always renders the same bytes, so
a message re-rendered after a crash or a fold is identical where unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from services.notifier.domain.model import (
    CANCELLED,
    ETA_CHANGED,
    NO_CONSENT,
    EmailContent,
    Notice,
    NoticeLine,
)

TEMPLATES = Path(__file__).resolve().parent / "templates"
LANGUAGES = ("en", "de")
DEFAULT_LANGUAGE = "en"

_MONTHS = {
    "en": (
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ),
    "de": (
        "Januar",
        "Februar",
        "März",
        "April",
        "Mai",
        "Juni",
        "Juli",
        "August",
        "September",
        "Oktober",
        "November",
        "Dezember",
    ),
}
_SPACES = re.compile(r"\s+")
_BLANK_RUNS = re.compile(r"\n{3,}")
_TRAILING = re.compile(r"[ \t]+\n")
# Control characters other than newline/tab would garble a message (or a header).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@lru_cache(maxsize=1)
def environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(
            enabled_extensions=("html.j2", "html"),
            disabled_extensions=("txt.j2",),
            default_for_string=True,
            default=True,
        ),
        undefined=StrictUndefined,  # a template naming a missing fact fails in tests, not in a mailbox
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


def language(locale: str | None) -> str:
    """`de-AT`, `de_DE`, `DE` → `de`; anything we have no templates for → English."""
    if not locale:
        return DEFAULT_LANGUAGE
    primary = re.split(r"[-_]", locale.strip().lower(), maxsplit=1)[0]
    return primary if primary in LANGUAGES else DEFAULT_LANGUAGE


def format_date(value: Any, lang: str) -> str:
    months = _MONTHS[lang]
    if lang == "de":
        return f"{value.day}. {months[value.month - 1]} {value.year}"
    return f"{value.day} {months[value.month - 1]} {value.year}"


def format_money(amount: Decimal, currency: str, lang: str) -> str:
    text = f"{amount:,.2f}"
    if lang == "de":  # 1.234,50 EUR
        text = text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
        return f"{text} {currency}"
    return f"{currency} {text}"


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    text = _SPACES.sub(" ", _CONTROL.sub("", text)).strip()
    return text or None


def _amounts(lines: list[NoticeLine], field: str, lang: str) -> list[str]:
    """Value of `field` units per currency (refunds), where prices are known."""
    totals: dict[str, Decimal] = {}
    for line in lines:
        units = getattr(line, field)
        if not units or line.unit_price is None or line.currency is None:
            continue
        try:
            totals[line.currency] = (
                totals.get(line.currency, Decimal(0)) + Decimal(line.unit_price) * units
            )
        except InvalidOperation:
            continue
    return [format_money(v, c, lang) for c, v in sorted(totals.items()) if v > 0]


Day = Callable[[date | None], str | None]


def _units(lines: list[NoticeLine], field: str, **more: str) -> list[dict[str, Any]]:
    """`{sku, qty}` (and each line's attributes named in `more`) of the lines with units in `field`."""
    return [
        {"sku": x.sku, "qty": getattr(x, field)} | {k: getattr(x, a) for k, a in more.items()}
        for x in lines
        if getattr(x, field) > 0
    ]


def _waiting(lines: list[NoticeLine], day: Day) -> list[dict[str, Any]]:
    return [
        {
            "sku": x.sku,
            "qty": x.backordered,
            "reserved": x.reserved,
            "eta": day(x.eta),
            # Fully on the shelf, set aside for a ship-complete order: no date to give.
            "held": x.reserved >= x.backordered,
        }
        for x in lines
        if x.backordered > 0
    ]


def _direction(line: NoticeLine) -> str:
    if line.eta is None:
        return "unknown"
    if line.previous_eta is None:
        return "known"
    return "later" if line.eta > line.previous_eta else "earlier"


def _changes(notice: Notice, day: Day) -> list[dict[str, Any]]:
    if notice.kind != ETA_CHANGED:
        return []
    return [
        {
            "sku": x.sku,
            "qty": x.backordered,
            "eta": day(x.eta),
            "previous": day(x.previous_eta),
            "direction": _direction(x),
            "cause": x.reason if x.eta is None else None,
        }
        for x in notice.lines
    ]


def _consent(notice: Notice, day: Day) -> dict[str, Any]:
    """Where the customer's consent to a later date stands (the delay-consent rule).

    `consent_required`: waiting lines cancelled after their promised date unless the
    customer agrees (deadline = `promised_eta`). `consent_offered`: lines of an ETA
    notice delayed for the first time, where silence is consent. `consent_given`: the
    lines whose consent was just recorded."""
    lines = [x for x in notice.lines if x.backordered > 0]
    delayed = {
        x.line_no for x in notice.lines if notice.kind == ETA_CHANGED and _direction(x) != "earlier"
    }
    return {
        "consent_url": notice.consent_url,
        "consent_required": [
            {"sku": x.sku, "qty": x.backordered, "eta": day(x.eta), "deadline": day(x.promised_eta)}
            for x in lines
            if x.consent == "required"
        ],
        "consent_offered": [
            {"sku": x.sku, "qty": x.backordered, "eta": day(x.eta)}
            for x in lines
            if x.consent == "offered" and x.line_no in delayed
        ],
        "consent_given": [
            {"sku": x.sku, "qty": x.backordered, "eta": day(x.eta)}
            for x in lines
            if x.consent == "given"
        ],
    }


def _not_cancelled(notice: Notice) -> list[dict[str, Any]]:
    """Units a part cancel could not cancel: by SKU where the order has the line."""
    skus = {x.line_no: x.sku for x in notice.lines}
    return [
        {"line_no": x.line_no, "sku": skus.get(x.line_no), "qty": x.quantity, "reason": x.reason}
        for x in notice.not_cancelled
    ]


def _alert(notice: Notice, day: Day) -> dict[str, Any] | None:
    alert = notice.alert
    if alert is None:
        return None
    return {
        "sku": alert.sku,
        "in_stock": alert.available > 0,
        "promise_eta": day(alert.promise_eta),
    }


def _context(notice: Notice, lang: str) -> dict[str, Any]:
    def day(value: date | None) -> str | None:
        return None if value is None else format_date(value, lang)

    lines = list(notice.lines)
    waiting = _waiting(lines, day)
    changes = _changes(notice, day)
    return {
        "lang": lang,
        "name": _clean(notice.customer.name),
        "order_id": _clean(notice.order_id),
        "reason": notice.reason,
        "cancel_url": notice.cancel_url,
        "next_update": day(notice.next_update),
        "shipping": _units(lines, "shipped"),
        "waiting": waiting,
        "undated": any(w["eta"] is None and not w["held"] for w in waiting),
        "changes": changes,
        "later": any(c["direction"] == "later" for c in changes),
        "unknown": any(c["direction"] == "unknown" for c in changes),
        "rejected": _units(lines, "rejected", reason="reason"),
        "cancelled": _units(lines, "cancelled"),
        "already_shipped": _units(lines, "allocated"),
        "refund_cancelled": _amounts(lines, "cancelled", lang),
        "refund_rejected": _amounts(lines, "rejected", lang),
        "no_consent": notice.kind == CANCELLED and notice.reason == NO_CONSENT,
        "not_cancelled": _not_cancelled(notice),
        "alert": _alert(notice, day),
    } | _consent(notice, day)


def render_email(notice: Notice) -> EmailContent:
    lang = language(notice.customer.locale)
    env = environment()
    context = _context(notice, lang)
    text_template = env.get_template(f"{lang}/{notice.kind}.txt.j2")
    subject = "".join(text_template.blocks["subject"](text_template.new_context(context)))
    # Templates stay readable; the layout of plain text is normalised here:
    # at most one blank line in a row, no trailing blanks.
    text = (
        _BLANK_RUNS.sub("\n\n", _TRAILING.sub("\n", text_template.render(context))).strip() + "\n"
    )
    html = env.get_template(f"{lang}/{notice.kind}.html.j2").render(context).strip() + "\n"
    # A subject is one header line: no newlines, no runs of blanks.
    return EmailContent(subject=_SPACES.sub(" ", subject).strip(), text=text, html=html)


def render_webhook(notice: Notice, email: EmailContent | None = None) -> bytes:
    """The webhook JSON body: the facts for machines, plus the customer text.

    Keys are sorted so the bytes (and so the signature) are stable.
    """
    lang = language(notice.customer.locale)
    email = email or render_email(notice)
    waiting = [x for x in notice.lines if x.backordered > 0]
    asks_consent = any(x.consent == "required" for x in waiting)
    body = {
        "notification_id": notice.source_id,
        "kind": notice.kind,
        "event_type": notice.event_type,
        "occurred_at": notice.occurred_at.isoformat(),
        "order_id": notice.order_id,
        "warehouse_id": notice.warehouse_id,
        "customer": notice.customer.model_dump(mode="json"),
        "language": lang,
        "reason": notice.reason,
        "cancel_url": notice.cancel_url if waiting else None,
        "next_update": notice.next_update.isoformat() if notice.next_update else None,
        "consent_url": notice.consent_url if asks_consent else None,
        "lines": [x.model_dump(mode="json") for x in notice.lines],
        "not_cancelled": [x.model_dump(mode="json") for x in notice.not_cancelled],
        "alert": notice.alert.model_dump(mode="json") if notice.alert else None,
        "subject": email.subject,
        "text": email.text,
    }
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
