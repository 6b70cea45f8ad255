"""What the notifier knows about one customer message, before and after rendering.

A `Notice` holds the facts a message states (order, lines, dates, links). It is
stored as JSON beside the rendered message in the outbox, so a held notice can
be folded with a later one and rendered again (see decide.fold_eta_notice).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from schemas.contract import AllocationLine, RejectReason

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
