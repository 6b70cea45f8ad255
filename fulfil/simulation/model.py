"""The simulation's records and the state it keeps per supplier, order, inbound and warehouse."""

from __future__ import annotations

import unicodedata
from collections import deque
from datetime import date, datetime
from itertools import accumulate
from typing import NamedTuple

from fulfil.simulation.data import (
    _FOLD,
    RATES,
    SAFETY_DAYS,
)


class SimRecord(NamedTuple):
    """One simulated message: where it goes and what it is."""

    topic: str  # base topic name (no prefix)
    key: bytes  # warehouse_id
    value: bytes  # the envelope (or the invalid bytes)
    type: str  # event type; for invalid messages "invalid:<kind>"
    occurred_at: datetime


class _Supplier:
    __slots__ = ("name", "lead", "period", "safety", "skus", "last_review", "open")

    def __init__(self, name: str, lead: float, period: float) -> None:
        self.name = name
        self.lead = lead  # mean lead time, days
        self.period = period  # days between purchase orders
        # Safety stock in days of demand: covers the lead time's spread (+-10 %).
        self.safety = SAFETY_DAYS + 0.12 * lead
        self.skus: list[int] = []
        self.last_review = 0
        self.open: list[_Inbound] = []


class _Order:
    __slots__ = ("order_id", "wh", "event_id", "lines", "waiting", "cancelled", "complete", "step")

    def __init__(
        self, order_id: str, wh: int, event_id: str, complete: bool, step: int = 1
    ) -> None:
        self.order_id = order_id
        self.wh = wh
        self.event_id = event_id
        self.lines: list[list[int]] = []  # [sku index, quantity, units still waiting]
        self.waiting = 0
        self.cancelled = False
        self.complete = complete
        self.step = step  # line numbers go 1, 2, 3 or 10, 20, 30


class _Inbound:
    __slots__ = (
        "inbound_id",
        "wh",
        "supplier",
        "event_id",
        "eta",
        "outstanding",
        "plan",
        "version",
        "started",
        "pending",
    )

    def __init__(
        self, inbound_id: str, wh: int, supplier: _Supplier, event_id: str, eta: date
    ) -> None:
        self.inbound_id = inbound_id
        self.wh = wh
        self.supplier = supplier
        self.event_id = event_id
        self.eta = eta  # current ETA (moves with delays)
        self.outstanding: dict[int, int] = {}  # sku index -> units ordered, not yet received
        # Receipts as planned: (seconds after midnight of the ETA date, sku, units, last for its line).
        self.plan: list[tuple[int, int, int, bool]] = []
        self.version = 0  # receipts scheduled for an older ETA are dropped
        self.started = False  # unloading began: too late for a delay
        self.pending = 0  # receipts still to come


class _Warehouse:
    """Purchasing's plan and a shadow of the allocator's stock view for one warehouse."""

    def __init__(self, index: int, name: str, currency: str, skus: int) -> None:
        self.index = index
        self.name = name
        self.key = name.encode()
        self.currency = currency
        self.popularity: list[float] = []  # base demand weights
        self.multiplier = [1.0] * skus  # hot items, discontinued ones
        self.cum: list[float] = []
        self.planned = [0.0] * skus  # units/day purchasing planned for
        self.estimate = [0.0] * skus  # smoothed observed demand, units/day
        self.observed = [0] * skus  # units ordered since the supplier's last review
        self.available = [0] * skus  # shadow: units on the shelf, uncommitted
        self.backlog = [0] * skus  # shadow: units waiting
        self.queue: list[deque[tuple[_Order, list[int]]]] = [deque() for _ in range(skus)]
        self.incoming = [0] * skus
        self.supplier_of = [0] * skus
        self.suppliers: list[_Supplier] = []
        self.hot: list[int] = []
        self.unbackorderable: set[int] = set()
        self.discontinued: set[int] = set()

    def refresh(self) -> None:
        self.cum = list(
            accumulate(p * m for p, m in zip(self.popularity, self.multiplier, strict=True))
        )


def _fold_ascii(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.translate(_FOLD)).encode("ascii", "ignore").decode()
    return "".join(c for c in text.lower() if c.isalnum())


def _price(base_eur: float, currency: str) -> str:
    value = base_eur * RATES[currency]
    return f"{max(1, round(value)) - 0.01:.2f}"


def _pack(units: int) -> int:
    """Round a purchase quantity up to the supplier's pack size."""
    pack = 1 if units < 10 else 5 if units < 50 else 10 if units < 200 else 25
    return -(-units // pack) * pack
