"""The allocator's state for one command partition: plain and lean.

Everything here is owned by the fold (`rules.decide`); nothing in this module
does I/O or reads a clock. Memory grows with open orders, queued backorders,
open inbound shipments and SKUs, plus one compact entry per business key
ever seen (closed order ids, receipt and adjustment ids, inbound and policy
statements): DESIGN §4 wants duplicates to change nothing however old they
are, so those are never forgotten. Only envelope ids live in a
`BoundedWindow` (FIFO), a cheap first filter in front of the business keys.

Snapshots are plain data (`plain.py`), never pickles. Every class uses
`__slots__`; the numerous ones (lines, orders, queue blocks) still pickle
their state as a plain tuple, for cheap in-process copies in tests.
"""

from __future__ import annotations

from datetime import date, timedelta
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from schemas.contract import Customer

from .memory import DEFAULT_DEDUP_WINDOW, BoundedWindow, IdSet

if TYPE_CHECKING:
    from .queue import BackorderQueue, QueueEntry

# Days past its ETA an inbound with units still to come keeps a credible date
# (FULFIL_OVERDUE_GRACE_DAYS; the entrypoint passes it in, the domain reads no setting).
DEFAULT_OVERDUE_GRACE_DAYS = 2

OrderKey = tuple[str, str]  # (warehouse_id, order_id)
SkuKey = tuple[str, str]  # (warehouse_id, sku)
# A SKU's stock position: available, backordered, reserved, incoming, next_eta, shortfall,
# promise_eta.
Position = tuple[int, int, int, int, date | None, int, date | None]


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
        "promised",
        "consent",
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
        self.qkey: QueueEntry | None = None  # this line's queue entry while it waits
        # The delay-consent rule (consent.py): the date promised, and where consent stands.
        self.promised: date | None = None
        self.consent: str | None = None

    @property
    def backordered(self) -> int:
        """Open, unreleased units (reserved ones included), as outputs report them."""
        return self.waiting + self.reserved

    def __getstate__(self) -> tuple[Any, ...]:
        return _line_state(self)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (
            self.order,
            self.line_no,
            self.sku,
            self.quantity,
            self.unit_price,
            self.currency,
            self.allocated,
            self.reserved,
            self.waiting,
            self.rejected,
            self.cancelled,
            self.reason,
            self.raw_eta,
            self.eta,
            self.qkey,
            self.promised,
            self.consent,
        ) = state

    def __repr__(self) -> str:
        return (
            f"Line({self.order.order_id}#{self.line_no} {self.sku} q={self.quantity} "
            f"a={self.allocated} r={self.reserved} w={self.waiting} "
            f"x={self.rejected} c={self.cancelled} eta={self.eta})"
        )


_line_state = attrgetter(*Line.__slots__)


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
        "applied",
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
        # Ids of the changes applied to this open order (part cancels, policy changes,
        # consents): each has no business key of its own, and re-applying an old one
        # would cancel twice or undo a newer one. Forgotten with the order: a closed
        # order has nothing left to change.
        self.applied: tuple[str, ...] = ()

    @property
    def policy(self) -> str:
        return "ship_complete" if self.complete else "ship_partial"

    def __getstate__(self) -> tuple[Any, ...]:
        return _order_state(self)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (
            self.order_id,
            self.warehouse_id,
            self.customer,
            self.complete,
            self.priority,
            self.placed_us,
            self.lines,
            self.waiting,
            self.reserved,
            self.applied,
        ) = state

    @property
    def key(self) -> OrderKey:
        return (self.warehouse_id, self.order_id)

    def __repr__(self) -> str:
        return f"Order({self.warehouse_id}/{self.order_id} {self.policy} p={self.priority})"


_order_state = attrgetter(*Order.__slots__)


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

    def overdue(self, today: date | None, grace_days: int) -> bool:
        """Today is past the ETA plus the grace (whether units are still to come is the caller's)."""
        return today is not None and today > self.eta + timedelta(days=grace_days)


class SkuState:
    """Stock position, backorder queue and scheduled supply of one (warehouse, sku)."""

    __slots__ = (
        "warehouse_id",
        "sku",
        "backorderable",
        "discontinued",
        "backorder_limit",
        "covered_only",
        "release_date",
        "available",
        "shortfall",
        "waiting",
        "reserved",
        "incoming",
        "queue",
        "inbounds",
        "received_total",
        "positive_adjusted_total",
        "negative_adjusted_total",
        "released_total",
        "last_position",
        "any_covered",
        "dates_unordered",
    )

    def __init__(self, warehouse_id: str, sku: str) -> None:
        self.warehouse_id = warehouse_id
        self.sku = sku
        self.backorderable = True
        self.discontinued = False
        self.backorder_limit: int | None = None  # most units that may wait in the queue
        self.covered_only = False  # backorder_mode == "covered_only"
        self.release_date: date | None = None  # pre-orders until then
        self.available = 0  # on hand, not committed to any order
        self.shortfall = 0  # negative adjustments that found nothing available to take
        self.waiting = 0  # sum of queued lines' waiting units
        self.reserved = 0  # sum of lines' reserved units
        self.incoming = 0  # sum of open inbounds' remaining quantity
        self.queue: BackorderQueue | None = None  # lines with waiting > 0
        self.inbounds: dict[str, Inbound] = {}  # inbound_id -> inbound with remaining > 0
        self.received_total = 0
        self.positive_adjusted_total = 0
        self.negative_adjusted_total = 0
        self.released_total = 0
        self.last_position: Position = (0, 0, 0, 0, None, 0, None)
        # After the last ETA walk, some queued line had a date (else all are None).
        self.any_covered = False
        # The last ETA walk met an overdue inbound: dates need not grow along the queue,
        # so no block may be skipped on the next walk (eta.recompute_sku_etas).
        self.dates_unordered = False

    @property
    def key(self) -> SkuKey:
        return (self.warehouse_id, self.sku)

    @property
    def backordered(self) -> int:
        return self.waiting + self.reserved

    def held(self, today: date | None) -> bool:
        """Not released yet: stock on hand is held for the release date (pre-orders)."""
        release = self.release_date
        return release is not None and (today is None or today < release)

    def next_eta(self) -> date | None:
        """The earliest open inbound's ETA, whoever its units are promised to."""
        best = None
        for inbound in self.inbounds.values():
            if best is None or inbound.eta < best:
                best = inbound.eta
        return best

    def queued_lines(self) -> list[Line]:
        """The waiting lines in queue order (head first)."""
        if self.queue is None:
            return []
        return [entry[4] for entry in self.queue]

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
        "grace_days",
        "today",
        "release_pending",
        "orders",
        "skus",
        "inbounds",
        "seen_events",
        "closed_orders",
        "tombstones",
        "seen_receipts",
        "seen_adjustments",
        "closed_inbounds",
        "inbound_events",
        "policy_events",
        "consent_rule",
        "consent_due",
        "alerts",
        "alerts_done",
    )

    def __init__(
        self,
        dedup_window: int = DEFAULT_DEDUP_WINDOW,
        grace_days: int = DEFAULT_OVERDUE_GRACE_DAYS,
        consent_rule: bool = False,
    ) -> None:
        self.dedup_window = dedup_window
        self.grace_days = grace_days  # a parameter of the rules, not state the log builds
        self.today: date | None = None  # the latest ClockTicked's date (UTC); None before one
        self.release_pending: dict[SkuKey, None] = {}  # SKUs with a release date not reached
        self.orders: dict[OrderKey, Order] = {}  # open orders only
        self.skus: dict[SkuKey, SkuState] = {}
        self.inbounds: dict[tuple[str, str], Inbound] = {}  # open inbounds only
        self.seen_events = BoundedWindow(dedup_window)  # envelope ids: the cheap first filter
        # Business keys, never forgotten (DESIGN §4). An order id is known while
        # the order is open (`orders`) and for ever after in `closed_orders`.
        self.closed_orders = IdSet()  # warehouse -> ids of placed orders no longer open
        self.tombstones = IdSet()  # warehouse -> ids cancelled before they were placed
        self.seen_receipts = IdSet()  # warehouse -> receipt ids
        self.seen_adjustments = IdSet()  # warehouse -> adjustment ids
        # Fully received inbounds: a late receipt or a re-schedule still finds them.
        self.closed_inbounds: dict[tuple[str, str], Inbound] = {}
        # Fingerprints of the inbound / SKU policy statements already taken into
        # account (see ids.statement_mark): (wh, inbound_id) / (wh, sku) -> marks.
        self.inbound_events: dict[tuple[str, str], list[str]] = {}
        self.policy_events: dict[SkuKey, list[str]] = {}
        # The delay-consent rule (FULFIL_DELAY_CONSENT=ftc): a parameter, like grace_days.
        self.consent_rule = consent_rule
        self.consent_due: dict[OrderKey, None] = {}  # open orders with a line awaiting consent
        # Back-in-stock alerts still waiting, per SKU (alert_id -> customer), and every
        # alert id done (told or cancelled), remembered for ever like other business keys.
        self.alerts: dict[SkuKey, dict[str, Customer]] = {}
        self.alerts_done = IdSet()

    def order_known(self, warehouse_id: str, order_id: str) -> bool:
        """An order with this id was placed in this warehouse (open or closed)."""
        return (warehouse_id, order_id) in self.orders or self.closed_orders.has(
            warehouse_id, order_id
        )

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

    def stats(self) -> dict[str, int]:
        queued = sum(len(s.queue) for s in self.skus.values() if s.queue is not None)
        return {
            "open_orders": len(self.orders),
            "queued_lines": queued,
            "skus": len(self.skus),
            "open_inbounds": len(self.inbounds),
            "seen_events": len(self.seen_events),
            "closed_orders": len(self.closed_orders),
            "tombstones": len(self.tombstones),
            "seen_receipts": len(self.seen_receipts),
            "seen_adjustments": len(self.seen_adjustments),
            "closed_inbounds": len(self.closed_inbounds),
            "alerts": sum(len(waiting) for waiting in self.alerts.values()),
            "alerts_done": len(self.alerts_done),
        }


def new_state(
    dedup_window: int = DEFAULT_DEDUP_WINDOW,
    grace_days: int = DEFAULT_OVERDUE_GRACE_DAYS,
    consent_rule: bool = False,
) -> AllocatorState:
    return AllocatorState(dedup_window, grace_days, consent_rule)
