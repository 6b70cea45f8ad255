"""What the notifier knows about one customer message, before and after rendering.

A `Notice` holds the facts a message states (order, lines, dates, links). It is
stored as JSON beside the rendered message in the outbox, so a held notice can
be folded with a later one and rendered again (see decide.fold_eta_notice).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict

from schemas.contract import AllocationLine, NotCancelled, RejectReason

Channel = Literal["email", "webhook"]

# Message kinds: one template per kind and locale.
CONFIRMED = "order_confirmed"  # OrderAllocated
PARTIALLY_SHIPPED = "partially_shipped"  # PartiallyShipped
# Backordered (insufficient_stock | ship_complete_hold | reservation_lost | pre_order:
# a pre-order confirmation, not a backorder notice)
BACKORDERED = "backordered"
BACKORDER_SHIPPED = "backorder_shipped"  # BackorderAllocated
ETA_CHANGED = "eta_changed"  # BackorderEtaChanged
REJECTED = "rejected"  # OrderRejected
CANCELLED = "cancelled"  # OrderCancellationProcessed (whole order, part cancel, no_consent)
CONSENT_RECORDED = "consent_recorded"  # BackorderConsentRecorded
BACK_IN_STOCK = "back_in_stock"  # StockAlertTriggered: about an alert, not an order
REMINDER = "reminder"  # weekly reminder from the read model

KINDS = (
    CONFIRMED,
    PARTIALLY_SHIPPED,
    BACKORDERED,
    BACKORDER_SHIPPED,
    ETA_CHANGED,
    REJECTED,
    CANCELLED,
    CONSENT_RECORDED,
    BACK_IN_STOCK,
    REMINDER,
)
REMINDER_EVENT_TYPE = "BackorderReminder"
# OrderCancellationProcessed.reason when the delay-consent rule cancelled the backordered
# part of lines: the customer did not agree to a later date by the promised one.
NO_CONSENT = "no_consent"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Recipient(_Frozen):
    customer_id: str
    email: str
    name: str | None = None
    locale: str | None = None


# Why an ETA notice's line lost its date (decide.eta_cause).
EtaLoss = Literal["inbound_overdue", "inbound_cancelled"]


class NoticeLine(AllocationLine):
    """One order line as the message states it: the contract's line, as the event reports it.

    Only `reason` is wider: on an ETA notice's undated line it says why the line lost
    its date, kept per line so that it survives folding. Stored notices and webhook
    bodies have always carried it there, so the field is widened rather than moved
    (no line of a notice is ever handed on as a contract line).
    """

    reason: RejectReason | EtaLoss | None = None  # type: ignore[assignment]


class StockAlert(_Frozen):
    """A back-in-stock alert that fired (StockAlertTriggered): the SKU can be ordered."""

    alert_id: str
    sku: str
    available: int
    # The date a new order's unit beyond `available` would get (None: no date known).
    promise_eta: date | None = None


class Notice(_Frozen):
    kind: str
    # The event id (or the reminder's deterministic id): the message's identity.
    source_id: str
    event_type: str
    occurred_at: datetime
    # None only for a back-in-stock message, which is about `alert`, not an order.
    order_id: str | None
    warehouse_id: str
    customer: Recipient
    lines: tuple[NoticeLine, ...] = ()
    reason: str | None = None
    cancel_url: str | None = None
    # When the next update comes at the latest (the weekly reminder), for lines
    # with no date; None when reminders are switched off.
    next_update: date | None = None
    # Where the customer agrees to wait for a later date (delay-consent rule).
    consent_url: str | None = None
    # Units a part cancel asked for that could not be cancelled, and why.
    not_cancelled: tuple[NotCancelled, ...] = ()
    alert: StockAlert | None = None

    def to_json(self) -> str:
        """The stored facts. Fields added after notices were first stored are left out
        while they are empty, so a notice stored before them is written back byte for
        byte (and loads with their defaults)."""
        doc = self.model_dump(mode="json")
        for name in _ADDED_NOTICE_FIELDS:
            if not doc[name]:
                del doc[name]
        for line in doc["lines"]:
            for name in _ADDED_LINE_FIELDS:
                if line[name] is None:
                    del line[name]
        return orjson.dumps(doc).decode()

    @classmethod
    def from_json(cls, raw: str | bytes) -> Notice:
        return cls.model_validate_json(raw)


_ADDED_NOTICE_FIELDS = ("consent_url", "not_cancelled", "alert")
_ADDED_LINE_FIELDS = ("promised_eta", "consent")


class EmailContent(_Frozen):
    subject: str
    text: str
    html: str


class Outgoing(_Frozen):
    """One decision: send `notice` on `channel`, not before `not_before` (None = at once)."""

    channel: Channel
    notice: Notice
    hold_seconds: float = 0.0
