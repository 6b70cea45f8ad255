"""Builders of valid input envelopes (parsed contract models) for allocator tests.

    ev = Events()                       # its own id counter and clock
    ev.order_placed("o1", "WH1", [("SKU-A", 10)], policy="ship_complete")
    ev.stock_received("WH1", "SKU-A", 4)

Each `Events` instance numbers its events (`{prefix}-{n}`) and advances a
simulated clock by one second per event, so `placed_at` follows log order
unless given. Module-level functions use one shared instance (ids unique
within a process); tests that compare runs should use their own instance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from schemas.contract import (
    BackorderConsentGiven,
    ClockTicked,
    InboundCancelled,
    InboundScheduled,
    InvalidOrderReceived,
    OrderCancelled,
    OrderLinesCancelled,
    OrderPlaced,
    OrderPolicyChanged,
    ShipmentDelayed,
    SkuPolicySet,
    StockAdjusted,
    StockAlertCancelled,
    StockAlertRequested,
    StockReceived,
)

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

# (sku, quantity) or (sku, quantity, unit_price, currency) or a full line dict.
LineSpec = tuple[Any, ...] | dict[str, Any]


def _line(no: int, spec: LineSpec) -> dict[str, Any]:
    if isinstance(spec, dict):
        return {"line_no": no, **spec}
    line: dict[str, Any] = {"line_no": no, "sku": spec[0], "quantity": spec[1]}
    if len(spec) >= 4:
        line["unit_price"], line["currency"] = spec[2], spec[3]
    return line


def as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


class Events:
    def __init__(self, prefix: str = "ev", start: datetime = START, step: timedelta | None = None):
        self.prefix = prefix
        self.clock = start
        self.step = step if step is not None else timedelta(seconds=1)
        self.count = 0

    def _envelope(
        self,
        model: type,
        type_: str,
        data: dict[str, Any],
        id: str | None,
        occurred_at: datetime | None,
        correlation_id: str | None = None,
    ) -> Any:
        self.count += 1
        self.clock += self.step
        return model.model_validate(
            {
                "id": id or f"{self.prefix}-{self.count}",
                "type": type_,
                "version": 1,
                "occurred_at": occurred_at or self.clock,
                "source": "tests",
                "correlation_id": correlation_id,
                "data": data,
            }
        )

    def order_placed(
        self,
        order_id: str,
        wh: str = "WH1",
        lines: Sequence[LineSpec] = (("SKU-A", 1),),
        policy: str = "ship_partial",
        priority: int = 0,
        placed_at: datetime | None = None,
        customer: dict[str, Any] | None = None,
        id: str | None = None,
        line_numbers: Iterable[int] | None = None,
    ) -> Any:
        numbers = list(line_numbers) if line_numbers is not None else range(1, len(lines) + 1)
        data = {
            "order_id": order_id,
            "warehouse_id": wh,
            "customer": customer
            or {
                "customer_id": f"c-{order_id}",
                "email": f"{order_id}@shop.example",
                "locale": "en",
            },
            "lines": [_line(no, spec) for no, spec in zip(numbers, lines, strict=True)],
            "fulfilment_policy": policy,
            "priority": priority,
            "placed_at": placed_at or self.clock + self.step,
        }
        return self._envelope(OrderPlaced, "OrderPlaced", data, id, None)

    def order_cancelled(
        self,
        order_id: str,
        wh: str = "WH1",
        reason: str = "customer request",
        id: str | None = None,
    ) -> Any:
        data = {
            "order_id": order_id,
            "warehouse_id": wh,
            "reason": reason,
            "cancelled_at": self.clock + self.step,
        }
        return self._envelope(OrderCancelled, "OrderCancelled", data, id, None)

    def stock_received(
        self,
        wh: str,
        sku: str,
        quantity: int,
        receipt_id: str | None = None,
        inbound_id: str | None = None,
        id: str | None = None,
    ) -> Any:
        data = {
            "receipt_id": receipt_id or f"rcpt-{self.count + 1}",
            "warehouse_id": wh,
            "sku": sku,
            "quantity": quantity,
            "inbound_id": inbound_id,
            "received_at": self.clock + self.step,
        }
        return self._envelope(StockReceived, "StockReceived", data, id, None)

    def stock_adjusted(
        self,
        wh: str,
        sku: str,
        delta: int,
        adjustment_id: str | None = None,
        reason: str = "cycle count",
        id: str | None = None,
    ) -> Any:
        data = {
            "adjustment_id": adjustment_id or f"adj-{self.count + 1}",
            "warehouse_id": wh,
            "sku": sku,
            "delta": delta,
            "reason": reason,
        }
        return self._envelope(StockAdjusted, "StockAdjusted", data, id, None)

    def inbound_scheduled(
        self,
        inbound_id: str,
        wh: str,
        lines: Sequence[tuple[str, int]],
        eta: date | str,
        supplier: str | None = None,
        id: str | None = None,
    ) -> Any:
        data = {
            "inbound_id": inbound_id,
            "warehouse_id": wh,
            "lines": [{"sku": sku, "quantity": qty} for sku, qty in lines],
            "eta": as_date(eta),
            "supplier": supplier,
        }
        return self._envelope(InboundScheduled, "InboundScheduled", data, id, None)

    def shipment_delayed(
        self,
        inbound_id: str,
        wh: str,
        new_eta: date | str,
        reason: str = "supplier delay",
        id: str | None = None,
    ) -> Any:
        data = {
            "inbound_id": inbound_id,
            "warehouse_id": wh,
            "new_eta": as_date(new_eta),
            "reason": reason,
        }
        return self._envelope(ShipmentDelayed, "ShipmentDelayed", data, id, None)

    def sku_policy_set(
        self,
        wh: str,
        sku: str,
        backorderable: bool = True,
        discontinued: bool = False,
        id: str | None = None,
        backorder_limit: int | None = None,
        backorder_mode: str | None = None,
        release_date: date | str | None = None,
    ) -> Any:
        data: dict[str, Any] = {
            "warehouse_id": wh,
            "sku": sku,
            "backorderable": backorderable,
            "discontinued": discontinued,
        }
        if backorder_limit is not None:
            data["backorder_limit"] = backorder_limit
        if backorder_mode is not None:
            data["backorder_mode"] = backorder_mode
        if release_date is not None:
            data["release_date"] = as_date(release_date)
        return self._envelope(SkuPolicySet, "SkuPolicySet", data, id, None)

    def inbound_cancelled(
        self,
        inbound_id: str,
        wh: str,
        reason: str = "purchase order cancelled",
        id: str | None = None,
    ) -> Any:
        data = {
            "inbound_id": inbound_id,
            "warehouse_id": wh,
            "reason": reason,
            "cancelled_at": self.clock + self.step,
        }
        return self._envelope(InboundCancelled, "InboundCancelled", data, id, None)

    def clock_ticked(self, now: datetime | date | str, id: str | None = None) -> Any:
        """A tick; a date means its midnight UTC. The envelope's occurred_at is the
        builder's own clock, which must not matter."""
        if isinstance(now, str):
            now = datetime.fromisoformat(now) if "T" in now else date.fromisoformat(now)
        if not isinstance(now, datetime):
            now = datetime(now.year, now.month, now.day, tzinfo=UTC)
        return self._envelope(ClockTicked, "ClockTicked", {"now": now}, id, None)

    def order_lines_cancelled(
        self,
        order_id: str,
        wh: str = "WH1",
        lines: Sequence[tuple[int, int]] = ((1, 1),),
        reason: str = "customer request",
        id: str | None = None,
    ) -> Any:
        """A part cancel: (line_no, quantity) pairs."""
        data = {
            "order_id": order_id,
            "warehouse_id": wh,
            "lines": [{"line_no": no, "quantity": q} for no, q in lines],
            "reason": reason,
            "cancelled_at": self.clock + self.step,
        }
        return self._envelope(OrderLinesCancelled, "OrderLinesCancelled", data, id, None)

    def order_policy_changed(
        self, order_id: str, wh: str = "WH1", policy: str = "ship_partial", id: str | None = None
    ) -> Any:
        data = {"order_id": order_id, "warehouse_id": wh, "fulfilment_policy": policy}
        return self._envelope(OrderPolicyChanged, "OrderPolicyChanged", data, id, None)

    def backorder_consent_given(
        self,
        order_id: str,
        wh: str = "WH1",
        lines: Sequence[int] | None = None,
        id: str | None = None,
    ) -> Any:
        data = {
            "order_id": order_id,
            "warehouse_id": wh,
            "lines": None if lines is None else list(lines),
        }
        return self._envelope(BackorderConsentGiven, "BackorderConsentGiven", data, id, None)

    def stock_alert_requested(
        self, alert_id: str, wh: str = "WH1", sku: str = "SKU-A", id: str | None = None
    ) -> Any:
        data = {
            "alert_id": alert_id,
            "warehouse_id": wh,
            "sku": sku,
            "customer": {
                "customer_id": f"c-{alert_id}",
                "email": f"{alert_id}@shop.example",
                "locale": "en",
            },
        }
        return self._envelope(StockAlertRequested, "StockAlertRequested", data, id, None)

    def stock_alert_cancelled(self, alert_id: str, wh: str = "WH1", id: str | None = None) -> Any:
        data = {"alert_id": alert_id, "warehouse_id": wh}
        return self._envelope(StockAlertCancelled, "StockAlertCancelled", data, id, None)

    def invalid_order_received(
        self,
        order_id: str,
        wh: str = "WH1",
        errors: Sequence[tuple[str, str]] = (("data.lines.0.quantity", "must be positive"),),
        id: str | None = None,
    ) -> Any:
        data = {
            "order_id": order_id,
            "warehouse_id": wh,
            "event_id": f"refused-{order_id}",
            "errors": [{"path": path, "message": message} for path, message in errors],
        }
        return self._envelope(InvalidOrderReceived, "InvalidOrderReceived", data, id, None)


_DEFAULT = Events(prefix="evt")

order_placed = _DEFAULT.order_placed
order_cancelled = _DEFAULT.order_cancelled
stock_received = _DEFAULT.stock_received
stock_adjusted = _DEFAULT.stock_adjusted
inbound_scheduled = _DEFAULT.inbound_scheduled
shipment_delayed = _DEFAULT.shipment_delayed
sku_policy_set = _DEFAULT.sku_policy_set
inbound_cancelled = _DEFAULT.inbound_cancelled
clock_ticked = _DEFAULT.clock_ticked


def resend(event: Any, new_id: str) -> Any:
    """The same payload under another envelope id (an upstream retry with a new id)."""
    return event.model_copy(update={"id": new_id})
