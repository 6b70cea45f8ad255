"""The order fold: an order's lines, status and backorder timestamps.

Allocation events report the lines they concern with the line's totals after
the event, so a line is "last report wins". What an event does not say (lines
it does not mention, whether the order was ever backordered) comes from the
state folded so far, so the order-level columns are computed from every line.

Status rule (documented in the README of the projector):

    open units (backordered, reserved included) > 0:
        allocated == 0  -> backordered
        otherwise       -> partially_shipped
    nothing open:
        every unit rejected                      -> rejected
        cancelled > 0 and nothing allocated      -> cancelled
        some line was ever backordered           -> shipped  (released after a wait)
        otherwise                                -> allocated (released in full at placement)
    no allocation event yet (only OrderPlaced)   -> pending
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from .events import Customer, OrderEvent

STATUSES = (
    "pending",
    "allocated",
    "partially_shipped",
    "backordered",
    "rejected",
    "cancelled",
    "shipped",
)


@dataclass(slots=True)
class LineState:
    """A line's row in the read model: what the last allocation event reported
    (`AllocationLine`'s totals), plus what only a fold over every event knows
    (since when it waits, why it has no date, the price an earlier event gave)."""

    line_no: int
    sku: str
    quantity: int
    allocated: int = 0
    backordered: int = 0
    reserved: int = 0
    rejected: int = 0
    cancelled: int = 0
    eta: date | None = None
    unit_price: Decimal | None = None
    currency: str | None = None
    reason: str | None = None
    backordered_since: datetime | None = None
    updated_at: datetime | None = None
    # Why an open line has no ETA: inbound_overdue (the inbound covering it is past its
    # date), inbound_cancelled (it will not arrive) or not_scheduled (no inbound covers
    # it); None when the line has a date or nothing is open.
    eta_reason: str | None = None
    # Why the line waits, as the allocator last said: insufficient_stock,
    # ship_complete_hold, reservation_lost (shrinkage took its reserved units) or
    # pre_order; None when nothing is open.
    backorder_reason: str | None = None


@dataclass(slots=True)
class OrderState:
    order_id: str
    warehouse_id: str
    customer: Customer | None = None
    status: str = "pending"
    updated_at: datetime | None = None
    backordered_since: datetime | None = None
    backordered_ever: bool = False
    last_event_type: str | None = None
    last_event_id: str | None = None
    lines: dict[int, LineState] = field(default_factory=dict)


def order_status(lines: Iterable[LineState], backordered_ever: bool) -> str:
    quantity = allocated = backordered = rejected = cancelled = 0
    for line in lines:
        quantity += line.quantity
        allocated += line.allocated
        backordered += line.backordered
        rejected += line.rejected
        cancelled += line.cancelled
    if quantity == 0:
        return "pending"
    if backordered:
        return "partially_shipped" if allocated else "backordered"
    if rejected == quantity:
        return "rejected"
    if cancelled and not allocated:
        return "cancelled"
    return "shipped" if backordered_ever else "allocated"


def eta_reason(event: OrderEvent, reported_eta: date | None, previous: LineState | None) -> str:
    """Why an open line reported by `event` without a date has none."""
    if event.type == "BackorderEtaChanged" and reported_eta is None:
        if event.cause_reason == "inbound_overdue":
            return "inbound_overdue"
        if event.cause_type == "InboundCancelled":
            return "inbound_cancelled"
    if (
        previous is not None
        and previous.backordered
        and previous.eta is None
        and previous.eta_reason
    ):
        return previous.eta_reason  # still undated, for the same reason
    return "not_scheduled"


def backorder_reason(event: OrderEvent, previous: LineState | None) -> str | None:
    if event.type == "Backordered":
        return event.reason
    if event.type == "PartiallyShipped":
        return "insufficient_stock"
    if previous is not None and previous.backordered:
        return previous.backorder_reason
    return None


def apply_order_event(state: OrderState | None, event: OrderEvent) -> OrderState:
    """Fold one allocation event into the order (mutates and returns `state`)."""
    if state is None:
        state = OrderState(order_id=event.order_id, warehouse_id=event.warehouse_id)
    at = event.occurred_at
    for reported in event.lines:
        previous = state.lines.get(reported.line_no)
        if reported.backordered:
            # The oldest unit still waiting has waited since the line first opened.
            since = (
                previous.backordered_since
                if previous is not None and previous.backordered > 0
                else at
            )
            state.backordered_ever = True
        else:
            since = None
        state.lines[reported.line_no] = LineState(
            line_no=reported.line_no,
            sku=reported.sku,
            quantity=reported.quantity,
            allocated=reported.allocated,
            backordered=reported.backordered,
            reserved=reported.reserved,
            rejected=reported.rejected,
            cancelled=reported.cancelled,
            eta=reported.eta,
            unit_price=Decimal(reported.unit_price)
            if reported.unit_price is not None
            else (previous.unit_price if previous else None),
            currency=reported.currency
            if reported.currency is not None
            else (previous.currency if previous else None),
            reason=reported.reason if reported.rejected else None,
            backordered_since=since,
            updated_at=at,
            eta_reason=(
                eta_reason(event, reported.eta, previous)
                if reported.backordered and reported.eta is None
                else None
            ),
            backorder_reason=backorder_reason(event, previous) if reported.backordered else None,
        )
    state.warehouse_id = event.warehouse_id
    state.customer = event.customer
    if state.updated_at is None or at > state.updated_at:
        state.updated_at = at
    state.last_event_type = event.type
    state.last_event_id = event.event_id
    state.status = order_status(state.lines.values(), state.backordered_ever)
    open_since = [ln.backordered_since for ln in state.lines.values() if ln.backordered_since]
    state.backordered_since = min(open_since) if open_since else None
    return state
