"""Fold one batch of events into the row images the store writes back.

The store loads the current state of every order and inbound the batch
touches; `BatchFold` applies the events in log order and collects one final
image per row, so each table is written with one set-based upsert (an
`INSERT ... ON CONFLICT` must not touch the same row twice).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from .events import (
    Event,
    InboundCancelled,
    InboundScheduled,
    OrderEvent,
    OrderPlaced,
    ShipmentDelayed,
    StockPosition,
    StockReceived,
)
from .inbounds import (
    InboundState,
    apply_cancelled,
    apply_delayed,
    apply_received,
    apply_scheduled,
)
from .orders import OrderState, apply_order_event

InboundKey = tuple[str, str]  # (warehouse_id, inbound_id)
ReceiptKey = tuple[str, str]  # (warehouse_id, receipt_id)
SkuKey = tuple[str, str]  # (warehouse_id, sku)
# The allocator's key of an order: the same order_id in two warehouses (a split
# order) is two orders.
OrderKey = tuple[str, str]  # (warehouse_id, order_id)
LineKey = tuple[str, str, int]  # (warehouse_id, order_id, line_no)


@dataclass(frozen=True, slots=True)
class Keys:
    """What the store must load before the batch can be folded."""

    orders: frozenset[OrderKey]
    inbounds: frozenset[InboundKey]
    receipts: frozenset[ReceiptKey]
    inbound_event_ids: frozenset[str]


@dataclass(slots=True)
class Loaded:
    orders: dict[OrderKey, OrderState] = field(default_factory=dict)
    inbounds: dict[InboundKey, InboundState] = field(default_factory=dict)
    counted_receipts: set[ReceiptKey] = field(default_factory=set)
    # Schedules and delays already applied: a re-delivered old schedule must not
    # move the ETA back (the allocator drops it by envelope id too).
    seen_inbound_events: set[str] = field(default_factory=set)
    # The order lines already stored: the others are new rows.
    stored_lines: set[LineKey] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class DemandLine:
    warehouse_id: str
    order_id: str
    placed_at: datetime
    sku: str
    day: date
    quantity: int


@dataclass(slots=True)
class Changes:
    orders: list[OrderState]
    placements: list[OrderPlaced]
    demand: list[DemandLine]
    positions: list[StockPosition]
    backlog_skus: list[SkuKey]
    inbounds: list[InboundState]
    receipts: list[StockReceived]
    inbound_event_ids: list[str]

    def __bool__(self) -> bool:
        return bool(
            self.orders
            or self.placements
            or self.positions
            or self.inbounds
            or self.receipts
            or self.inbound_event_ids
        )


def keys_of(events: list[Event]) -> Keys:
    orders: set[OrderKey] = set()
    inbounds: set[InboundKey] = set()
    receipts: set[ReceiptKey] = set()
    event_ids: set[str] = set()
    for event in events:
        if isinstance(event, OrderEvent):
            orders.add((event.warehouse_id, event.order_id))
        elif isinstance(event, (InboundScheduled, ShipmentDelayed, InboundCancelled)):
            inbounds.add((event.warehouse_id, event.inbound_id))
            event_ids.add(event.event_id)
        elif isinstance(event, StockReceived):
            inbounds.add((event.warehouse_id, event.inbound_id))
            receipts.add((event.warehouse_id, event.receipt_id))
    return Keys(frozenset(orders), frozenset(inbounds), frozenset(receipts), frozenset(event_ids))


def demand_day(placed: OrderPlaced) -> date:
    """Demand is counted per UTC calendar day of placed_at."""
    return placed.placed_at.astimezone(UTC).date()


class BatchFold:
    def __init__(self, loaded: Loaded) -> None:
        self._orders = loaded.orders
        self._inbounds = loaded.inbounds
        self._counted = set(loaded.counted_receipts)
        self._seen_events = set(loaded.seen_inbound_events)
        self._new_event_ids: list[str] = []
        self._changed_orders: dict[OrderKey, OrderState] = {}
        self._changed_inbounds: dict[InboundKey, InboundState] = {}
        self._placements: dict[OrderKey, OrderPlaced] = {}
        self._demand_orders: dict[OrderKey, OrderPlaced] = {}
        self._positions: dict[SkuKey, StockPosition] = {}
        self._backlog_skus: dict[SkuKey, None] = {}
        self._receipts: list[StockReceived] = []

    def apply(self, event: Event) -> None:
        if isinstance(event, OrderEvent):
            key = (event.warehouse_id, event.order_id)
            state = apply_order_event(self._orders.get(key), event)
            self._orders[key] = self._changed_orders[key] = state
            for line in event.lines:
                self._backlog_skus[(event.warehouse_id, line.sku)] = None
        elif isinstance(event, StockPosition):
            self._positions[(event.warehouse_id, event.sku)] = event  # last one wins
        elif isinstance(event, OrderPlaced):
            key = (event.warehouse_id, event.order_id)
            first = self._placements.get(key)
            if first is None or event.placed_at < first.placed_at:
                self._placements[key] = event
            # Demand counts an order once, whatever re-deliveries follow (the store
            # also skips orders counted by earlier batches).
            self._demand_orders.setdefault(key, event)
        elif isinstance(event, StockReceived):
            key = (event.warehouse_id, event.receipt_id)
            if key in self._counted:
                return
            self._counted.add(key)
            self._receipts.append(event)
            self._inbound(event, apply_received)
        elif isinstance(event, (InboundScheduled, ShipmentDelayed, InboundCancelled)):
            if event.event_id in self._seen_events:
                return
            self._seen_events.add(event.event_id)
            self._new_event_ids.append(event.event_id)
            fold: Callable[..., InboundState | None]
            if isinstance(event, InboundScheduled):
                fold = apply_scheduled
            elif isinstance(event, ShipmentDelayed):
                fold = apply_delayed
            else:
                fold = apply_cancelled
            self._inbound(event, fold)

    def _inbound(
        self,
        event: InboundScheduled | ShipmentDelayed | InboundCancelled | StockReceived,
        fold: Callable[..., Any],
    ) -> None:
        key = (event.warehouse_id, event.inbound_id)
        state = fold(self._inbounds.get(key), event)
        if state is not None:
            self._inbounds[key] = self._changed_inbounds[key] = state

    def changes(self) -> Changes:
        demand = [
            DemandLine(wh, order_id, placed.placed_at, sku, demand_day(placed), quantity)
            for (wh, order_id), placed in self._demand_orders.items()
            for _line_no, sku, quantity in placed.lines
        ]
        return Changes(
            orders=list(self._changed_orders.values()),
            placements=list(self._placements.values()),
            demand=demand,
            positions=list(self._positions.values()),
            backlog_skus=list(self._backlog_skus),
            inbounds=list(self._changed_inbounds.values()),
            receipts=self._receipts,
            inbound_event_ids=self._new_event_ids,
        )


def fold_batch(loaded: Loaded, events: list[Event]) -> Changes:
    fold = BatchFold(loaded)
    for event in events:
        fold.apply(event)
    return fold.changes()
