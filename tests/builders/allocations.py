"""Hand-built allocation events (schemas.contract models), as the allocator would emit them.

Every builder takes `event_id=`, `at=` (occurred_at) and `warehouse=` (the Kafka key).
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from schemas import contract as c

WAREHOUSE = "wh-1"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def customer(n: int = 1, *, locale: str | None = "en", name: str | None = None) -> c.Customer:
    return c.Customer(
        customer_id=f"cust-{n}",
        email=f"customer{n}@shop-customers.example",
        name=name if name is not None else f"Customer Number{n}",
        locale=locale,
    )


def line(
    line_no: int = 1, sku: str = "SKU-1", quantity: int = 3, **fields: Any
) -> c.AllocationLine:
    return c.AllocationLine(line_no=line_no, sku=sku, quantity=quantity, **fields)


def _id() -> str:
    return str(uuid.uuid4())


def _envelope(model: Any, data: Any, event_id: str | None = None, at: datetime = T0) -> Any:
    return model(
        id=event_id or _id(),
        type=model.__name__,
        occurred_at=at,
        source="test",
        causation_id=_id(),
        data=data,
    )


def _base(
    order_id: str, cust: c.Customer, lines: list[c.AllocationLine], warehouse: str
) -> dict[str, Any]:
    return {"order_id": order_id, "warehouse_id": warehouse, "customer": cust, "lines": lines}


def order_allocated(order_id: str, cust: c.Customer, lines=None, **kw: Any) -> Any:
    lines = lines or [line(shipped=3, allocated=3)]
    return _envelope(
        c.OrderAllocated,
        c.OrderAllocatedData(
            **_base(order_id, cust, lines, kw.pop("warehouse", WAREHOUSE)), shipment_id=_id()
        ),
        **kw,
    )


def partially_shipped(order_id: str, cust: c.Customer, lines=None, **kw: Any) -> Any:
    lines = lines or [
        line(1, "SKU-1", 5, shipped=2, allocated=2, backordered=3, eta=date(2026, 4, 14)),
        line(2, "SKU-2", 1, shipped=1, allocated=1),
    ]
    return _envelope(
        c.PartiallyShipped,
        c.PartiallyShippedData(
            **_base(order_id, cust, lines, kw.pop("warehouse", WAREHOUSE)), shipment_id=_id()
        ),
        **kw,
    )


def backordered(
    order_id: str, cust: c.Customer, lines=None, reason: str = "insufficient_stock", **kw: Any
) -> Any:
    lines = lines or [line(1, "SKU-9", 2, backordered=2, eta=None)]
    return _envelope(
        c.Backordered,
        c.BackorderedData(
            **_base(order_id, cust, lines, kw.pop("warehouse", WAREHOUSE)), reason=reason
        ),
        **kw,
    )


def backorder_allocated(order_id: str, cust: c.Customer, lines=None, **kw: Any) -> Any:
    lines = lines or [line(1, "SKU-1", 5, shipped=3, allocated=5)]
    return _envelope(
        c.BackorderAllocated,
        c.BackorderAllocatedData(
            **_base(order_id, cust, lines, kw.pop("warehouse", WAREHOUSE)), shipment_id=_id()
        ),
        **kw,
    )


def eta_changed(
    order_id: str, cust: c.Customer, lines=None, cause: c.EtaChangeCause | None = None, **kw: Any
) -> Any:
    lines = lines or [
        line(
            1,
            "SKU-1",
            5,
            allocated=2,
            backordered=3,
            eta=date(2026, 4, 21),
            previous_eta=date(2026, 4, 14),
        )
    ]
    cause = cause or c.EtaChangeCause(
        event_type="ShipmentDelayed", event_id=_id(), inbound_id="inb-7", reason="port strike"
    )
    return _envelope(
        c.BackorderEtaChanged,
        c.BackorderEtaChangedData(
            **_base(order_id, cust, lines, kw.pop("warehouse", WAREHOUSE)), cause=cause
        ),
        **kw,
    )


def order_rejected(order_id: str, cust: c.Customer, lines=None, **kw: Any) -> Any:
    lines = lines or [
        line(1, "SKU-OLD", 1, rejected=1, reason="discontinued", unit_price="12.50", currency="EUR")
    ]
    return _envelope(
        c.OrderRejected,
        c.OrderRejectedData(**_base(order_id, cust, lines, kw.pop("warehouse", WAREHOUSE))),
        **kw,
    )


def cancellation_processed(
    order_id: str,
    cust: c.Customer,
    lines=None,
    reason: str = "customer request",
    not_cancelled: list[c.NotCancelled] | None = None,
    **kw: Any,
) -> Any:
    """`reason="no_consent"`: the delay-consent rule cancelled the backordered part;
    `not_cancelled`: what a part cancel (OrderLinesCancelled) could not cancel."""
    lines = lines or [
        line(1, "SKU-1", 5, allocated=2, cancelled=3, unit_price="19.90", currency="EUR")
    ]
    return _envelope(
        c.OrderCancellationProcessed,
        c.OrderCancellationProcessedData(
            **_base(order_id, cust, lines, kw.pop("warehouse", WAREHOUSE)),
            reason=reason,
            not_cancelled=not_cancelled,
        ),
        **kw,
    )


def not_cancelled(line_no: int, quantity: int, reason: str = "not_open") -> c.NotCancelled:
    return c.NotCancelled(line_no=line_no, quantity=quantity, reason=reason)


def delay_notice(
    order_id: str,
    cust: c.Customer,
    consent: str = "required",
    *,
    eta: date | None = date(2026, 5, 19),
    previous_eta: date | None = date(2026, 4, 14),
    promised_eta: date | None = None,
    **kw: Any,
) -> Any:
    """A BackorderEtaChanged under the delay-consent rule (FULFIL_DELAY_CONSENT=ftc).

    `offered`: the first delay, silence is consent (the new date becomes the promised
    one); `required`: the customer must agree by `promised_eta` (default: the previous
    date) or the backordered part is cancelled."""
    if promised_eta is None:
        promised_eta = eta if consent == "offered" else previous_eta
    lines = [
        line(
            1,
            "SKU-1",
            5,
            allocated=2,
            backordered=3,
            eta=eta,
            previous_eta=previous_eta,
            promised_eta=promised_eta,
            consent=consent,
            unit_price="19.90",
            currency="EUR",
        )
    ]
    return eta_changed(order_id, cust, lines, **kw)


def consent_recorded(order_id: str, cust: c.Customer, lines=None, **kw: Any) -> Any:
    """BackorderConsentRecorded: the customer agreed to wait for these lines' dates."""
    lines = lines or [
        line(
            1,
            "SKU-1",
            5,
            allocated=2,
            backordered=3,
            eta=date(2026, 5, 19),
            promised_eta=date(2026, 5, 19),
            consent="given",
        )
    ]
    return _envelope(
        c.BackorderConsentRecorded,
        c.BackorderConsentRecordedData(
            **_base(order_id, cust, lines, kw.pop("warehouse", WAREHOUSE))
        ),
        **kw,
    )


def stock_alert_triggered(
    alert_id: str,
    cust: c.Customer,
    sku: str = "SKU-1",
    available: int = 4,
    promise_eta: date | None = None,
    **kw: Any,
) -> Any:
    """StockAlertTriggered: the SKU the customer asked about can be ordered (no order id)."""
    data = c.StockAlertTriggeredData(
        alert_id=alert_id,
        warehouse_id=kw.pop("warehouse", WAREHOUSE),
        sku=sku,
        customer=cust,
        available=available,
        promise_eta=promise_eta,
    )
    return _envelope(c.StockAlertTriggered, data, **kw)


def invalid_order_rejected(order_id: str, **kw: Any) -> Any:
    """OrderRejected, reason `invalid`: an order that failed the contract; no customer, no lines."""
    data = c.OrderRejectedData(
        order_id=order_id,
        warehouse_id=kw.pop("warehouse", WAREHOUSE),
        customer=None,
        lines=[],
        reason="invalid",
        errors=[c.ValidationIssue(path="lines.0.quantity", message="must be at least 1")],
    )
    return _envelope(c.OrderRejected, data, **kw)


def stock_position(sku: str = "SKU-1", **kw: Any) -> Any:
    data = c.StockPositionChangedData(
        warehouse_id=WAREHOUSE, sku=sku, available=0, backordered=3, reserved=0, incoming=10
    )
    return _envelope(c.StockPositionChanged, data, **kw)


def undated(
    order_id: str, cust: c.Customer, cause_type: str, reason: str | None = None, **kw: Any
) -> Any:
    """A BackorderEtaChanged whose line lost its date (an inbound cancelled or overdue)."""
    lines = [
        line(1, "SKU-1", 5, allocated=2, backordered=3, eta=None, previous_eta=date(2026, 4, 14))
    ]
    cause = c.EtaChangeCause(
        event_type=cause_type, event_id=_id(), inbound_id="inb-7", reason=reason
    )
    return eta_changed(order_id, cust, lines, cause=cause, **kw)
