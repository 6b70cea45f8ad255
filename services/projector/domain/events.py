"""What the projector reads from each event, as plain immutable values.

The adapters decode Kafka records into these; the folds consume them. Only
the fields some read model needs are kept, so the folds never see customer
data they do not store. An order line and a customer are the contract's own
structs (`schemas.wire`), as decoded: the projector declares no copy of them.
Named tuples, not frozen dataclasses: the projector builds hundreds of
thousands per second and a frozen dataclass costs ~5x more to construct.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import NamedTuple

from schemas.wire import AllocationLine, Customer

__all__ = [
    "AllocationLine",
    "Customer",
    "Event",
    "InboundCancelled",
    "InboundScheduled",
    "OrderEvent",
    "OrderPlaced",
    "ShipmentDelayed",
    "StockPosition",
    "StockReceived",
]


class OrderEvent(NamedTuple):
    """Any allocation event about one order (OrderAllocated, Backordered, ...)."""

    event_id: str
    type: str
    occurred_at: datetime
    order_id: str
    warehouse_id: str
    customer: Customer
    # The lines the event reports, each with the line's totals after the event.
    lines: Sequence[AllocationLine]
    # Backordered's reason (insufficient_stock, ship_complete_hold, reservation_lost,
    # pre_order); None for the other types.
    reason: str | None = None
    # BackorderEtaChanged's cause: the input type that moved the dates and its reason
    # (`inbound_overdue` when the clock made an inbound overdue).
    cause_type: str | None = None
    cause_reason: str | None = None


class StockPosition(NamedTuple):
    """StockPositionChanged: a SKU's position after a change."""

    occurred_at: datetime
    warehouse_id: str
    sku: str
    available: int
    backordered: int
    reserved: int
    incoming: int
    next_eta: date | None
    shortfall: int
    promise_eta: date | None = None


class OrderPlaced(NamedTuple):
    """OrderPlaced from orders.v1: placement time and demand."""

    event_id: str
    occurred_at: datetime
    order_id: str
    warehouse_id: str
    customer: Customer
    placed_at: datetime
    lines: tuple[tuple[int, str, int], ...]  # (line_no, sku, quantity)


class InboundScheduled(NamedTuple):
    event_id: str
    occurred_at: datetime
    warehouse_id: str
    inbound_id: str
    lines: tuple[tuple[str, int], ...]  # (sku, quantity)
    eta: date
    supplier: str | None


class ShipmentDelayed(NamedTuple):
    event_id: str
    occurred_at: datetime
    warehouse_id: str
    inbound_id: str
    new_eta: date


class InboundCancelled(NamedTuple):
    """The not-yet-received rest of an inbound will not arrive."""

    event_id: str
    occurred_at: datetime
    warehouse_id: str
    inbound_id: str
    reason: str
    cancelled_at: datetime


class StockReceived(NamedTuple):
    """Only receipts against an inbound shipment matter to the projector."""

    occurred_at: datetime
    warehouse_id: str
    receipt_id: str
    inbound_id: str
    sku: str
    quantity: int
    received_at: datetime


Event = (
    OrderEvent
    | StockPosition
    | OrderPlaced
    | InboundScheduled
    | ShipmentDelayed
    | InboundCancelled
    | StockReceived
)
