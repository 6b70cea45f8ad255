"""What the notifier knows about one customer message, before and after rendering.

A `Notice` holds the facts a message states (order, lines, dates, links). It is
stored as JSON beside the rendered message in the outbox, so a held notice can
be folded with a later one and rendered again (see decide.fold_eta_notice).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

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
CANCELLED = "cancelled"  # OrderCancellationProcessed
REMINDER = "reminder"  # weekly reminder from the read model

KINDS = (
    CONFIRMED,
    PARTIALLY_SHIPPED,
    BACKORDERED,
    BACKORDER_SHIPPED,
    ETA_CHANGED,
    REJECTED,
    CANCELLED,
    REMINDER,
)
REMINDER_EVENT_TYPE = "BackorderReminder"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Recipient(_Frozen):
    customer_id: str
    email: str
    name: str | None = None
    locale: str | None = None


class NoticeLine(_Frozen):
    """One order line as the message states it (quantities as in AllocationLine)."""

    line_no: int
    sku: str
    quantity: int
    shipped: int = 0
    allocated: int = 0
    backordered: int = 0
    reserved: int = 0
    rejected: int = 0
    cancelled: int = 0
    eta: date | None = None
    # For ETA notices: the date the customer was last told (None = no date was given).
    previous_eta: date | None = None
    # The reject reason; on an ETA notice's undated line, why it lost its date
    # (inbound_overdue | inbound_cancelled).
    reason: str | None = None
    unit_price: str | None = None
    currency: str | None = None


class Notice(_Frozen):
    kind: str
    # The event id (or the reminder's deterministic id): the message's identity.
    source_id: str
    event_type: str
    occurred_at: datetime
    order_id: str
    warehouse_id: str
    customer: Recipient
    lines: tuple[NoticeLine, ...]
    reason: str | None = None
    cancel_url: str | None = None
    # When the next update comes at the latest (the weekly reminder), for lines
    # with no date; None when reminders are switched off.
    next_update: date | None = None

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, raw: str | bytes) -> Notice:
        return cls.model_validate_json(raw)


class EmailContent(_Frozen):
    subject: str
    text: str
    html: str


class Outgoing(_Frozen):
    """One decision: send `notice` on `channel`, not before `not_before` (None = at once)."""

    channel: Channel
    notice: Notice
    hold_seconds: float = 0.0
