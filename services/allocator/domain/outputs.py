"""Output building: a command's records, rendered as envelopes once its numbers are final.

Outputs are built from validated inputs and the fold's own numbers, so they
are constructed without re-validating (`Model.trusted`; the tests validate
every output). Their order and ids are part of the contract with a restarted
allocator: see `rules.py`.
"""

from __future__ import annotations

from datetime import date
from typing import Any, TypeVar

from schemas.contract import (
    AllocationLine,
    BackorderAllocated,
    BackorderAllocatedData,
    BackorderConsentRecorded,
    BackorderConsentRecordedData,
    Backordered,
    BackorderedData,
    BackorderEtaChanged,
    BackorderEtaChangedData,
    Envelope,
    EtaChangeCause,
    Model,
    OrderAllocated,
    OrderAllocatedData,
    OrderCancellationProcessed,
    OrderCancellationProcessedData,
    OrderRejected,
    OrderRejectedData,
    OutputEvent,
    PartiallyShipped,
    PartiallyShippedData,
    StockAlertTriggered,
    StockAlertTriggeredData,
    StockPositionChanged,
    StockPositionChangedData,
    ValidationIssue,
)

from .consent import review
from .context import AnyCommand, Context, Record
from .eta import order_etas
from .eta import position as sku_position
from .ids import SOURCE, output_id, shipment_id
from .state import Line, Order, SkuState

# The envelopes about one order (all outputs but StockPositionChanged).
OrderOutput = (
    OrderAllocated
    | PartiallyShipped
    | Backordered
    | BackorderAllocated
    | BackorderEtaChanged
    | OrderRejected
    | OrderCancellationProcessed
    | BackorderConsentRecorded
)
_E = TypeVar("_E", bound=Envelope)

_ENVELOPES: dict[str, tuple[type[OrderOutput], type[Model]]] = {
    "OrderAllocated": (OrderAllocated, OrderAllocatedData),
    "PartiallyShipped": (PartiallyShipped, PartiallyShippedData),
    "Backordered": (Backordered, BackorderedData),
    "BackorderAllocated": (BackorderAllocated, BackorderAllocatedData),
    "BackorderEtaChanged": (BackorderEtaChanged, BackorderEtaChangedData),
    "OrderRejected": (OrderRejected, OrderRejectedData),
    "OrderCancellationProcessed": (OrderCancellationProcessed, OrderCancellationProcessedData),
    "BackorderConsentRecorded": (BackorderConsentRecorded, BackorderConsentRecordedData),
}
_SHIPMENT_TYPES = frozenset({"OrderAllocated", "PartiallyShipped", "BackorderAllocated"})
_PLACEMENT_TYPES = frozenset({"OrderAllocated", "PartiallyShipped", "Backordered"})


def report(ctx: Context) -> list[Record]:
    """The records to render, in order: what happened, then the ETAs that moved.

    Fixes the lines each record reports and the ETAs reported from now on: a
    BackorderEtaChanged reports an order's moved lines no other record reports.
    """
    records, reported = _select(ctx.records)
    consent_rule = ctx.state.consent_rule
    for order in ctx.eta_orders:
        changed: dict[Line, date | None] = {}
        already = reported.get(order, _NOTHING)
        moved = []
        for line, eta in zip(order.lines, order_etas(order), strict=True):
            if eta != line.eta:
                if line not in already:
                    changed[line] = line.eta
                line.eta = eta
                moved.append(line)
        if changed:
            # Lines that lost their date to the clock: an inbound became overdue.
            reason = ctx.cause_reason
            if reason == "inbound_overdue" and all(line.eta is not None for line in changed):
                reason = None  # only moved to today
            rec = Record("BackorderEtaChanged", order, reason)
            rec.lines = list(changed)
            rec.previous = changed
            records.append(rec)
        if consent_rule:
            review(ctx, order, moved)
    return records


_NOTHING: dict[Line, None] = {}


def _select(recorded: list[Record]) -> tuple[list[Record], dict[Order, dict[Line, None]]]:
    """Which lines each record reports (final quantities are known now)."""
    reported: dict[Order, dict[Line, None]] = {}
    records: list[Record] = []
    for rec in recorded:
        kind = rec.kind
        order = rec.order
        if rec.lines is not None:
            lines = rec.lines
        elif kind == "BackorderAllocated":
            if not rec.shipped:
                continue  # a ship_complete order that got units but is not covered yet
            shipped = rec.shipped
            lines = [ln for ln in order.lines if ln in shipped or ln.waiting or ln.reserved]
        elif kind in _PLACEMENT_TYPES:
            lines = [ln for ln in order.lines if ln.rejected < ln.quantity]
        else:
            lines = list(order.lines)
        rec.lines = lines
        records.append(rec)
        seen = reported.setdefault(order, {})
        for line in lines:
            seen[line] = None
    return records, reported


def render(ctx: Context, records: list[Record]) -> list[OutputEvent]:
    """The envelopes: the records in order, then each changed stock position."""
    outputs: list[OutputEvent] = []
    for rec in records:
        outputs.append(_render(ctx, rec, len(outputs)))
    if ctx.invalid_orders:
        _invalid_orders(ctx, outputs)
    if ctx.alerts_fired:
        _alerts(ctx, outputs)
    if ctx.touched:
        _positions(ctx, outputs)
    return outputs


def _positions(ctx: Context, outputs: list[OutputEvent]) -> None:
    """StockPositionChanged for each touched SKU whose position moved, by (warehouse, sku)."""
    env = ctx.env
    for sku in sorted(ctx.touched, key=_sku_sort_key):
        position = sku_position(sku, ctx.state.today, ctx.state.grace_days)
        if position != sku.last_position:
            sku.last_position = position
            available, backordered, reserved, incoming, next_eta, shortfall, promise_eta = position
            data = StockPositionChangedData.trusted(
                warehouse_id=sku.warehouse_id,
                sku=sku.sku,
                available=available,
                backordered=backordered,
                reserved=reserved,
                incoming=incoming,
                next_eta=next_eta,
                shortfall=shortfall,
                promise_eta=promise_eta,
            )
            outputs.append(
                _envelope(StockPositionChanged, "StockPositionChanged", env, len(outputs), data)
            )


def _invalid_orders(ctx: Context, outputs: list[OutputEvent]) -> None:
    for refused in ctx.invalid_orders:
        data = OrderRejectedData.trusted(
            order_id=refused.order_id,
            warehouse_id=refused.warehouse_id,
            customer=None,
            lines=[],
            reason="invalid",
            errors=[
                ValidationIssue.trusted(path=issue.path, message=issue.message)
                for issue in refused.errors
            ],
        )
        outputs.append(_envelope(OrderRejected, "OrderRejected", ctx.env, len(outputs), data))


def _alerts(ctx: Context, outputs: list[OutputEvent]) -> None:
    state = ctx.state
    for alert_id, sku, customer in ctx.alerts_fired:
        position = sku_position(sku, state.today, state.grace_days)
        data = StockAlertTriggeredData.trusted(
            alert_id=alert_id,
            warehouse_id=sku.warehouse_id,
            sku=sku.sku,
            customer=customer,
            available=position[0],
            promise_eta=position[6],
        )
        outputs.append(
            _envelope(StockAlertTriggered, "StockAlertTriggered", ctx.env, len(outputs), data)
        )


def _sku_sort_key(sku: SkuState) -> tuple[str, str]:
    return (sku.warehouse_id, sku.sku)


def _envelope(model: type[_E], kind: str, env: AnyCommand, index: int, data: Model) -> _E:
    return model.trusted(
        id=output_id(env.id, index),
        type=kind,
        version=1,
        occurred_at=env.occurred_at,
        source=SOURCE,
        correlation_id=env.correlation_id or env.id,
        causation_id=env.id,
        data=data,
    )


def _render(ctx: Context, rec: Record, index: int) -> OrderOutput:
    env = ctx.env
    order = rec.order
    shipped = rec.shipped
    previous = rec.previous
    lines = []
    for line in rec.lines or ():
        lines.append(
            AllocationLine.trusted(
                line_no=line.line_no,
                sku=line.sku,
                quantity=line.quantity,
                shipped=shipped.get(line, 0),
                allocated=line.allocated,
                backordered=line.waiting + line.reserved,
                reserved=line.reserved,
                rejected=line.rejected,
                cancelled=line.cancelled,
                eta=line.eta,
                previous_eta=previous.get(line) if previous is not None else None,
                reason=line.reason if line.rejected else None,
                unit_price=line.unit_price,
                currency=line.currency,
                promised_eta=line.promised if line.backordered else None,
                consent=line.consent if line.backordered else None,
            )
        )
    kind = rec.kind
    model, data_model = _ENVELOPES[kind]
    fields: dict[str, Any] = {
        "order_id": order.order_id,
        "warehouse_id": order.warehouse_id,
        "customer": order.customer,
        "lines": lines,
    }
    if kind in _SHIPMENT_TYPES:
        fields["shipment_id"] = shipment_id(env.id, order.order_id)
    elif kind == "Backordered":
        fields["reason"] = rec.reason
    elif kind == "OrderCancellationProcessed":
        fields["reason"] = rec.reason
        fields["not_cancelled"] = rec.not_cancelled
    elif kind == "BackorderEtaChanged":
        fields["cause"] = EtaChangeCause.trusted(
            event_type=env.type,
            event_id=env.id,
            inbound_id=ctx.cause_inbound,
            reason=rec.reason if ctx.env.type == "ClockTicked" else ctx.cause_reason,
        )
    return _envelope(model, kind, env, index, data_model.trusted(**fields))
