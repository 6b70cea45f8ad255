"""The allocator's state for one command partition: plain, picklable, lean.

Everything here is owned by the fold in `rules.py`; nothing in this module
does I/O or reads a clock. Memory grows with open orders, queued backorders,
open inbound shipments and SKUs — never with history: every "have I seen
this before" set is a `BoundedWindow` with deterministic FIFO eviction.

Pickling: every class uses `__slots__` without custom state hooks, so the
default pickle protocol (>= 2) snapshots the whole graph, shared references
and cycles included.
"""

from __future__ import annotations

from collections import deque
from datetime import date
from typing import Any

from sortedcontainers import SortedList

from schemas.contract import Customer

DEFAULT_DEDUP_WINDOW = 100_000

# Values stored in the order-id window.
SEEN = 1  # an order with this id was placed (it may be closed by now)
TOMBSTONE = 2  # cancelled before it was placed: a later placement is rejected

# A backorder queue key: (-priority, placed_at in µs since the epoch, order_id, line_no).
QueueKey = tuple[int, int, str, int]
OrderKey = tuple[str, str]  # (warehouse_id, order_id)
SkuKey = tuple[str, str]  # (warehouse_id, sku)


class BoundedWindow:
    """A map of recently seen keys with FIFO eviction beyond `maxlen` keys.

    Re-adding a present key updates its value and keeps its place. A deque
    plus a dict: O(1) per operation and deterministic (insertion order only).
    """

    __slots__ = ("maxlen", "_order", "_items")

    def __init__(self, maxlen: int = DEFAULT_DEDUP_WINDOW) -> None:
        if maxlen < 1:
            raise ValueError("a dedup window needs room for at least one key")
        self.maxlen = maxlen
        self._order: deque[Any] = deque()
        self._items: dict[Any, Any] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: object, default: Any = None) -> Any:
        return self._items.get(key, default)

    def add(self, key: Any, value: Any = True) -> None:
        items = self._items
        if key in items:
            items[key] = value
            return
        items[key] = value
        order = self._order
        order.append(key)
        if len(order) > self.maxlen:
            del items[order.popleft()]

    def keys(self) -> list[Any]:
        return list(self._order)


class Line:
    """One order line. Units are in exactly one bucket:

    allocated (released to the warehouse), reserved (held on the shelf for a
    ship_complete order), waiting (queued for stock), rejected, cancelled.
    `raw_eta` is the SKU-level ETA of the waiting units (None when not
    waiting or not covered); `eta` is what was last reported to the customer.
    """

    __slots__ = (
        "order",
        "line_no",
        "sku",
        "quantity",
        "unit_price",
        "currency",
        "allocated",
        "reserved",
        "waiting",
        "rejected",
        "cancelled",
        "reason",
        "raw_eta",
        "eta",
        "qkey",
    )

    def __init__(
        self,
        order: Order,
        line_no: int,
        sku: str,
        quantity: int,
        unit_price: str | None,
        currency: str | None,
    ) -> None:
        self.order = order
        self.line_no = line_no
        self.sku = sku
        self.quantity = quantity
        self.unit_price = unit_price
        self.currency = currency
        self.allocated = 0
        self.reserved = 0
        self.waiting = 0
        self.rejected = 0
        self.cancelled = 0
        self.reason: str | None = None
        self.raw_eta: date | None = None
        self.eta: date | None = None
        self.qkey: QueueKey | None = None

    @property
    def backordered(self) -> int:
        """Open, unreleased units (reserved ones included), as outputs report them."""
        return self.waiting + self.reserved

    def __repr__(self) -> str:
        return (
            f"Line({self.order.order_id}#{self.line_no} {self.sku} q={self.quantity} "
            f"a={self.allocated} r={self.reserved} w={self.waiting} "
            f"x={self.rejected} c={self.cancelled} eta={self.eta})"
        )


class Order:
    """An open order: at least one unit reserved or waiting."""

    __slots__ = (
        "order_id",
        "warehouse_id",
        "customer",
        "complete",
        "priority",
        "placed_us",
        "lines",
        "waiting",
        "reserved",
    )

    def __init__(
        self,
        order_id: str,
        warehouse_id: str,
        customer: Customer,
        complete: bool,
        priority: int,
        placed_us: int,
    ) -> None:
        self.order_id = order_id
        self.warehouse_id = warehouse_id
        self.customer = customer
        self.complete = complete  # fulfilment_policy == "ship_complete"
        self.priority = priority
        self.placed_us = placed_us
        self.lines: list[Line] = []
        self.waiting = 0  # sum of the lines' waiting units
        self.reserved = 0  # sum of the lines' reserved units

    @property
    def policy(self) -> str:
        return "ship_complete" if self.complete else "ship_partial"

    @property
    def key(self) -> OrderKey:
        return (self.warehouse_id, self.order_id)

    def __repr__(self) -> str:
        return f"Order({self.warehouse_id}/{self.order_id} {self.policy} p={self.priority})"


class Inbound:
    """A scheduled supplier shipment. `skus[sku] = [scheduled, received]`."""

    __slots__ = ("warehouse_id", "inbound_id", "eta", "skus")

    def __init__(self, warehouse_id: str, inbound_id: str, eta: date) -> None:
        self.warehouse_id = warehouse_id
        self.inbound_id = inbound_id
        self.eta = eta
        self.skus: dict[str, list[int]] = {}

    def remaining(self, sku: str) -> int:
        entry = self.skus.get(sku)
        if entry is None:
            return 0
        return max(0, entry[0] - entry[1])

    def is_open(self) -> bool:
        return any(scheduled > received for scheduled, received in self.skus.values())


class SkuState:
    """Stock position, backorder queue and scheduled supply of one (warehouse, sku)."""

    __slots__ = (
        "warehouse_id",
        "sku",
        "backorderable",
        "discontinued",
        "available",
        "shortfall",
        "waiting",
        "reserved",
        "incoming",
        "queue",
        "waiters",
        "inbounds",
        "received_total",
        "positive_adjusted_total",
        "negative_adjusted_total",
        "released_total",
        "last_position",
        "last_covered",
    )

    def __init__(self, warehouse_id: str, sku: str) -> None:
        self.warehouse_id = warehouse_id
        self.sku = sku
        self.backorderable = True
        self.discontinued = False
        self.available = 0  # on hand, not committed to any order
        self.shortfall = 0  # negative adjustments that found nothing available to take
        self.waiting = 0  # sum of queued lines' waiting units
        self.reserved = 0  # sum of lines' reserved units
        self.incoming = 0  # sum of open inbounds' remaining quantity
        self.queue: SortedList | None = None  # QueueKey of lines with waiting > 0
        self.waiters: dict[QueueKey, Line] = {}
        self.inbounds: dict[str, Inbound] = {}  # inbound_id -> inbound with remaining > 0
        self.received_total = 0
        self.positive_adjusted_total = 0
        self.negative_adjusted_total = 0
        self.released_total = 0
        self.last_position: tuple = (0, 0, 0, 0, None, 0)
        # Largest queue key whose raw_eta was not None after the last ETA walk:
        # every queued line behind it has raw_eta None (lets the walk stop early).
        self.last_covered: QueueKey | None = None

    @property
    def key(self) -> SkuKey:
        return (self.warehouse_id, self.sku)

    @property
    def backordered(self) -> int:
        return self.waiting + self.reserved

    def next_eta(self) -> date | None:
        best = None
        for inbound in self.inbounds.values():
            if best is None or inbound.eta < best:
                best = inbound.eta
        return best

    def position(self) -> tuple:
        return (
            self.available,
            self.waiting + self.reserved,
            self.reserved,
            self.incoming,
            self.next_eta() if self.inbounds else None,
            self.shortfall,
        )

    def queued_lines(self) -> list[Line]:
        """The waiting lines in queue order (head first)."""
        if self.queue is None:
            return []
        return [self.waiters[key] for key in self.queue]

    def __repr__(self) -> str:
        return (
            f"SkuState({self.warehouse_id}/{self.sku} avail={self.available} "
            f"wait={self.waiting} res={self.reserved} inc={self.incoming} "
            f"short={self.shortfall})"
        )


class AllocatorState:
    """Everything the allocator core knows about one command partition."""

    __slots__ = (
        "dedup_window",
        "orders",
        "skus",
        "inbounds",
        "seen_events",
        "seen_orders",
        "seen_receipts",
        "seen_adjustments",
        "closed_inbounds",
    )

    def __init__(self, dedup_window: int = DEFAULT_DEDUP_WINDOW) -> None:
        self.dedup_window = dedup_window
        self.orders: dict[OrderKey, Order] = {}  # open orders only
        self.skus: dict[SkuKey, SkuState] = {}
        self.inbounds: dict[tuple[str, str], Inbound] = {}  # open inbounds only
        self.seen_events = BoundedWindow(dedup_window)  # envelope ids
        self.seen_orders = BoundedWindow(dedup_window)  # OrderKey -> SEEN | TOMBSTONE
        self.seen_receipts = BoundedWindow(dedup_window)  # (warehouse_id, receipt_id)
        self.seen_adjustments = BoundedWindow(dedup_window)  # (warehouse_id, adjustment_id)
        self.closed_inbounds = BoundedWindow(dedup_window)  # (wh, inbound_id) -> Inbound

    def sku(self, warehouse_id: str, sku: str) -> SkuState:
        key = (warehouse_id, sku)
        state = self.skus.get(key)
        if state is None:
            state = self.skus[key] = SkuState(warehouse_id, sku)
        return state

    def order(self, warehouse_id: str, order_id: str) -> Order | None:
        return self.orders.get((warehouse_id, order_id))

    def inbound(self, warehouse_id: str, inbound_id: str) -> Inbound | None:
        key = (warehouse_id, inbound_id)
        found = self.inbounds.get(key)
        if found is None:
            found = self.closed_inbounds.get(key)
        return found

    # ---- read helpers for tests, the I/O layer and operators

    def position(self, warehouse_id: str, sku: str) -> dict[str, Any]:
        state = self.skus.get((warehouse_id, sku)) or SkuState(warehouse_id, sku)
        available, backordered, reserved, incoming, next_eta, shortfall = state.position()
        return {
            "available": available,
            "backordered": backordered,
            "reserved": reserved,
            "incoming": incoming,
            "next_eta": next_eta,
            "shortfall": shortfall,
        }

    def stats(self) -> dict[str, int]:
        queued = sum(len(s.waiters) for s in self.skus.values())
        return {
            "open_orders": len(self.orders),
            "queued_lines": queued,
            "skus": len(self.skus),
            "open_inbounds": len(self.inbounds),
            "seen_events": len(self.seen_events),
            "seen_orders": len(self.seen_orders),
        }


def new_state(dedup_window: int = DEFAULT_DEDUP_WINDOW) -> AllocatorState:
    return AllocatorState(dedup_window)
