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


def apply_order_event(state: OrderState | None, event: OrderEvent) -> OrderState:
    """Fold one allocation event into the order (mutates and returns `state`)."""
    if state is None:
        state = OrderState(order_id=event.order_id, warehouse_id=event.warehouse_id)
    at = event.occurred_at
    for reported in event.lines:
        previous = state.lines.get(reported.line_no)
        if reported.backordered:
            # The oldest unit still waiting has waited since the line first opened.
            since = previous.backordered_since if previous is not None and previous.backordered > 0 else at
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
            unit_price=reported.unit_price if reported.unit_price is not None
            else (previous.unit_price if previous else None),
            currency=reported.currency if reported.currency is not None
            else (previous.currency if previous else None),
            reason=reported.reason if reported.rejected else None,
            backordered_since=since,
            updated_at=at,
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
