"""Pure decisions: allocation event → notices → (channel, message) decisions.

No I/O and no clock here: the time a message may go out is expressed as a
hold in seconds, and reminders take `now` as an argument.

Anti-spam rule (also in services/notifier/README.md):

* An ETA notice (BackorderEtaChanged) is held for `FULFIL_NOTIFIER_ETA_HOLD_SECONDS`
  (default 5 minutes) before it is sent. Every other message goes at once.
* While an ETA notice for an order has not been attempted yet, later events
  for the same order fold into it instead of adding messages:
  - a later ETA change supersedes it; the later message states, per line,
    the *latest* date and the date the customer was *last told* (the oldest
    pending notice's `previous_eta`), for the lines of both notices; it keeps
    the first notice's send time, so a stream of changes cannot postpone the
    message beyond one hold window;
  - any other later event (shipment, cancellation, rejection) updates the held
    notice: lines it reports as no longer backordered are dropped, lines it
    reports still waiting take its current date.
  A line whose latest date equals the date last told is dropped (nothing
  changed for the customer); a notice left without lines is not sent.
* So a change of date is never hidden: every line whose date differs from the
  one the customer was last told is in exactly one sent message (the held ETA
  notice, or the later message that reports the line's current state).
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import quote

from services.notifier.domain.model import (
    BACK_IN_STOCK,
    BACKORDER_SHIPPED,
    BACKORDERED,
    CANCELLED,
    CONFIRMED,
    CONSENT_RECORDED,
    ETA_CHANGED,
    PARTIALLY_SHIPPED,
    REJECTED,
    REMINDER,
    REMINDER_EVENT_TYPE,
    Channel,
    EtaLoss,
    Notice,
    NoticeLine,
    Outgoing,
    Recipient,
    StockAlert,
)

KIND_BY_EVENT = {
    "OrderAllocated": CONFIRMED,
    "PartiallyShipped": PARTIALLY_SHIPPED,
    "Backordered": BACKORDERED,
    "BackorderAllocated": BACKORDER_SHIPPED,
    "BackorderEtaChanged": ETA_CHANGED,
    "OrderRejected": REJECTED,
    "OrderCancellationProcessed": CANCELLED,
    "BackorderConsentRecorded": CONSENT_RECORDED,
    "StockAlertTriggered": BACK_IN_STOCK,
}

# Namespace of the reminder ids (uuid5): fixed forever, or restarts would resend.
REMINDER_NAMESPACE = uuid.UUID("6f1c7c0e-5b8e-4f4e-9a55-2f0a4a9d1e01")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class Policy:
    channels: tuple[Channel, ...]
    cancel_url_template: str
    order_confirmation: bool = True
    reminder_days: float = 7.0
    eta_hold_seconds: float = 300.0
    # Where a customer agrees to wait for a later date (the delay-consent rule).
    consent_url_template: str = "https://shop.example/orders/{order_id}/consent"

    @classmethod
    def from_settings(cls, settings: Any) -> Policy:
        return cls(
            channels=settings.enabled_channels(),
            cancel_url_template=settings.fulfil_cancel_url_template,
            order_confirmation=settings.fulfil_notifier_order_confirmation,
            reminder_days=settings.fulfil_notifier_reminder_days,
            eta_hold_seconds=settings.fulfil_notifier_eta_hold_seconds,
            consent_url_template=settings.fulfil_consent_url_template,
        )


# ---------------------------------------------------------------- identities


def message_id(source_id: str, channel: str, domain: str = "fulfil") -> str:
    """The RFC 5322 Message-ID of a message: derived from its event id, so a resend is recognisable."""
    local = (
        source_id if _SAFE_ID.match(source_id) else str(uuid.uuid5(REMINDER_NAMESPACE, source_id))
    )
    return f"<{local}.{channel}@{domain}>"


def cancel_url(template: str, order_id: str) -> str:
    """The customer's link for an order (cancel, or agree to wait): `{order_id}` URL-quoted."""
    return template.format(order_id=quote(order_id, safe=""))


def next_update(moment: datetime, reminder_days: float) -> date | None:
    """The date by which the customer hears from us again (the reminder cadence)."""
    if reminder_days <= 0:
        return None
    return (moment + timedelta(days=reminder_days)).date()


# ---------------------------------------------------------------- events


def eta_cause(cause: Any) -> EtaLoss | None:
    """`inbound_overdue` (the clock made the covering inbound overdue), `inbound_cancelled`
    (the purchase order will not arrive), or None (an ordinary move of dates)."""
    if cause.reason == "inbound_overdue":
        return "inbound_overdue"
    if cause.event_type == "InboundCancelled":
        return "inbound_cancelled"
    return None


def notice_for(event: Any, policy: Policy) -> Notice | None:
    """The notice an allocation event calls for, or None (StockPositionChanged, switched off,
    or no one to write to: an order refused as invalid has no customer block)."""
    kind = KIND_BY_EVENT.get(event.type)
    if kind is None:
        return None
    if kind == CONFIRMED and not policy.order_confirmation:
        return None
    data = event.data
    if data.customer is None:
        return None  # OrderRejected, reason `invalid`: nobody to tell (upstream is told)
    if kind == BACK_IN_STOCK:
        return _alert_notice(event)
    lines = tuple(
        sorted(
            (NoticeLine.model_validate(x, from_attributes=True) for x in data.lines),
            key=lambda x: x.line_no,
        )
    )
    reason = getattr(data, "reason", None)
    if kind == ETA_CHANGED:
        lines, reason = _eta_lines(lines, data.cause)
        if not lines:
            return None
    if not lines:
        return None  # nothing about any line of the order to tell
    return Notice(
        kind=kind,
        source_id=event.id,
        event_type=event.type,
        occurred_at=event.occurred_at,
        order_id=data.order_id,
        warehouse_id=data.warehouse_id,
        customer=_recipient(data.customer),
        lines=lines,
        reason=reason,
        cancel_url=cancel_url(policy.cancel_url_template, data.order_id),
        next_update=next_update(event.occurred_at, policy.reminder_days),
        consent_url=cancel_url(policy.consent_url_template, data.order_id),
        not_cancelled=tuple(
            sorted(getattr(data, "not_cancelled", None) or (), key=lambda x: x.line_no)
        ),
    )


def _recipient(customer: Any) -> Recipient:
    return Recipient(
        customer_id=customer.customer_id,
        email=str(customer.email),
        name=customer.name or None,
        locale=customer.locale,
    )


def _eta_lines(
    lines: tuple[NoticeLine, ...], cause: Any
) -> tuple[tuple[NoticeLine, ...], EtaLoss | None]:
    """An ETA notice's lines (those whose date moved) and why lines lost their date."""
    lines = tuple(x for x in lines if x.eta != x.previous_eta)
    # Why lines lost their date, kept per line so that it survives folding.
    reason = eta_cause(cause)
    if reason is not None:
        lines = tuple(
            x.model_copy(update={"reason": reason}) if x.eta is None else x for x in lines
        )
    return lines, reason


def _alert_notice(event: Any) -> Notice:
    """A back-in-stock message: to the alert's customer, about the SKU, not an order."""
    data = event.data
    return Notice(
        kind=BACK_IN_STOCK,
        source_id=event.id,
        event_type=event.type,
        occurred_at=event.occurred_at,
        order_id=None,
        warehouse_id=data.warehouse_id,
        customer=_recipient(data.customer),
        alert=StockAlert(
            alert_id=data.alert_id,
            sku=data.sku,
            available=data.available,
            promise_eta=data.promise_eta,
        ),
    )


def decide(event: Any, policy: Policy) -> list[Outgoing]:
    """One decision per enabled channel for the event's notice (none if it needs no message)."""
    notice = notice_for(event, policy)
    if notice is None:
        return []
    return outgoing(notice, policy)


def outgoing(notice: Notice, policy: Policy) -> list[Outgoing]:
    hold = policy.eta_hold_seconds if notice.kind == ETA_CHANGED else 0.0
    return [Outgoing(channel=c, notice=notice, hold_seconds=hold) for c in policy.channels]


# ---------------------------------------------------------------- anti-spam folding


def _without_news(lines: list[NoticeLine]) -> tuple[NoticeLine, ...]:
    return tuple(x for x in lines if x.eta != x.previous_eta and x.backordered > 0)


def merge_eta_notices(held: Notice, later: Notice) -> Notice | None:
    """A later ETA notice absorbing a held (unsent) one for the same order.

    Per line: the latest date, and the date the customer was last told (the
    held notice's previous date, since the held one never went out).
    """
    told = {x.line_no: x.previous_eta for x in held.lines}
    merged: dict[int, NoticeLine] = {x.line_no: x for x in held.lines}
    for line in later.lines:
        previous = told.get(line.line_no, line.previous_eta)
        merged[line.line_no] = line.model_copy(update={"previous_eta": previous})
    lines = _without_news(sorted(merged.values(), key=lambda x: x.line_no))
    if not lines:
        return None
    return later.model_copy(update={"lines": lines})


def update_held_eta_notice(held: Notice, later: Notice) -> Notice | None:
    """A held ETA notice brought up to date by a later, non-ETA event of the same order."""
    current = {x.line_no: x for x in later.lines}
    lines = []
    for line in held.lines:
        now = current.get(line.line_no)
        if now is None:
            lines.append(line)  # the later event does not speak about this line
        elif now.backordered > 0:
            lines.append(
                line.model_copy(
                    update={
                        "eta": now.eta,
                        "backordered": now.backordered,
                        "reserved": now.reserved,
                        # e.g. consent given since: the held notice must not still ask
                        "consent": now.consent,
                        "promised_eta": now.promised_eta,
                    }
                )
            )
        # else: shipped, cancelled or rejected by now: the later message says so.
    kept = _without_news(lines)
    if not kept:
        return None
    # A notice stored before consent links existed takes the later one's.
    return held.model_copy(
        update={"lines": kept, "consent_url": held.consent_url or later.consent_url}
    )


def fold(held: Notice, later: Notice) -> tuple[Notice | None, Notice | None]:
    """(what becomes of the held notice, what becomes of the later one).

    A None held notice is superseded; a None later notice is not sent.
    """
    if later.kind == ETA_CHANGED:
        return None, merge_eta_notices(held, later)
    return update_held_eta_notice(held, later), later


# ---------------------------------------------------------------- weekly reminders


def reminder_period_index(since: datetime, now: datetime, reminder_days: float) -> int:
    """How many whole reminder periods have passed since the order went on backorder."""
    if reminder_days <= 0 or now <= since:
        return 0
    return math.floor((now - since) / timedelta(days=reminder_days))


def reminder_id(warehouse_id: str, order_id: str, period_index: int) -> str:
    """Deterministic per (order, period): a restarted notifier never reminds twice."""
    return str(
        uuid.uuid5(
            REMINDER_NAMESPACE, f"reminder\x1f{warehouse_id}\x1f{order_id}\x1f{period_index}"
        )
    )


def reminder_notice(
    order: dict[str, Any], lines: list[dict[str, Any]], now: datetime, policy: Policy
) -> Notice | None:
    """The reminder due now for one order of the read model, or None.

    `order` / `lines` are rows of the projector's `orders` / `order_lines`.
    """
    waiting = [x for x in lines if (x.get("backordered") or 0) > 0]
    if not waiting:
        return None
    since = order.get("backordered_since") or order.get("placed_at")
    if since is None:
        return None
    index = reminder_period_index(since, now, policy.reminder_days)
    if index < 1:
        return None
    moment = since + timedelta(days=policy.reminder_days * index)
    return Notice(
        kind=REMINDER,
        source_id=reminder_id(order["warehouse_id"], order["order_id"], index),
        event_type=REMINDER_EVENT_TYPE,
        occurred_at=moment,
        order_id=order["order_id"],
        warehouse_id=order["warehouse_id"],
        customer=Recipient(
            customer_id=order.get("customer_id") or "",
            email=order["customer_email"],
            name=order.get("customer_name") or None,
            locale=order.get("customer_locale"),
        ),
        lines=tuple(_reminder_line(x) for x in sorted(waiting, key=lambda x: x["line_no"])),
        cancel_url=cancel_url(policy.cancel_url_template, order["order_id"]),
        next_update=next_update(moment, policy.reminder_days),
    )


def _reminder_line(row: dict[str, Any]) -> NoticeLine:
    """A waiting line of the read model (`order_lines` row) as a reminder states it."""
    price = row.get("unit_price")
    return NoticeLine(
        line_no=row["line_no"],
        sku=row["sku"],
        quantity=row["quantity"],
        allocated=row.get("allocated") or 0,
        backordered=row["backordered"],
        reserved=row.get("reserved") or 0,
        rejected=row.get("rejected") or 0,
        cancelled=row.get("cancelled") or 0,
        eta=row.get("eta"),
        unit_price=None if price is None else str(price),
        currency=row.get("currency"),
    )
