"""What the projector reads from each event, as plain immutable values.

The adapters decode Kafka records into these; the folds consume them. Only
the fields some read model needs are kept, so the folds never see customer
data they do not store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

ORDER_EVENT_TYPES = frozenset(
    {
        "OrderAllocated",
        "PartiallyShipped",
        "Backordered",
        "BackorderAllocated",
        "BackorderEtaChanged",
        "OrderRejected",
        "OrderCancellationProcessed",
    }
)


@dataclass(frozen=True, slots=True)
class Customer:
    customer_id: str
    email: str
    name: str | None
    locale: str | None


@dataclass(frozen=True, slots=True)
class LineTotals:
    """One AllocationLine: the line's totals after the event."""

    line_no: int
    sku: str
    quantity: int
    allocated: int
    backordered: int
    reserved: int
    rejected: int
    cancelled: int
    eta: date | None
    unit_price: Decimal | None
    currency: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """Any allocation event about one order (OrderAllocated, Backordered, ...)."""

    event_id: str
    type: str
    occurred_at: datetime
    order_id: str
    warehouse_id: str
    customer: Customer
    lines: tuple[LineTotals, ...]


@dataclass(frozen=True, slots=True)
class StockPosition:
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


@dataclass(frozen=True, slots=True)
class OrderPlaced:
    """OrderPlaced from orders.v1: placement time and demand."""

    event_id: str
    occurred_at: datetime
    order_id: str
    warehouse_id: str
    customer: Customer
    placed_at: datetime
    lines: tuple[tuple[int, str, int], ...]  # (line_no, sku, quantity)


@dataclass(frozen=True, slots=True)
class InboundScheduled:
    event_id: str
    occurred_at: datetime
    warehouse_id: str
    inbound_id: str
    lines: tuple[tuple[str, int], ...]  # (sku, quantity)
    eta: date
    supplier: str | None


@dataclass(frozen=True, slots=True)
class ShipmentDelayed:
    event_id: str
    occurred_at: datetime
    warehouse_id: str
    inbound_id: str
    new_eta: date


@dataclass(frozen=True, slots=True)
class StockReceived:
    """Only receipts against an inbound shipment matter to the projector."""

    occurred_at: datetime
    warehouse_id: str
    receipt_id: str
    inbound_id: str
    sku: str
    quantity: int
    received_at: datetime


Event = OrderEvent | StockPosition | OrderPlaced | InboundScheduled | ShipmentDelayed | StockReceived
