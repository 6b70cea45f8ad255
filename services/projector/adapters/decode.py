"""Kafka record values → the projector's domain events, by the contract's decoder.

allocations.v1 is written by our allocator alone, which builds every event
from validated commands; it is also the projector's hot path. So allocation
events are read as the allocator's core reads its command log
(`schemas.decode.read_output`): decoded into the contract's structs, with
types, required fields and bounds checked, but the contract's pure rules
(patterns, date ranges, currency codes) not run again. A record that does not
decode is skipped and counted, with the contract's reason, never applied
half-way; so is a line whose totals do not add up, which the folds rely on.
A record that decodes but that the read models cannot hold (a NUL in a name,
a moment before year 1 in UTC) is the store's to refuse: it is quarantined.

orders.v1 / inventory.v1 come from upstream systems and may hold anything;
they are validated with the full contract (`decode_input`), exactly as the
allocator's router does, so the projector counts demand and receipts for the
same inputs the allocator accepted. Inputs it does not use (order
cancellations, adjustments, policies, receipts without an inbound) are
recognised by their type and skipped without validation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from schemas import wire
from schemas.decode import decode_input as decode_input_event
from schemas.decode import read_output
from schemas.registry import ALLOCATIONS, INVENTORY, ORDERS, ContractError
from services.projector.domain.events import (
    Event,
    InboundCancelled,
    InboundScheduled,
    OrderEvent,
    OrderPlaced,
    ShipmentDelayed,
    StockPosition,
    StockReceived,
)

_INPUT_TYPES_USED = frozenset(
    {"OrderPlaced", "InboundScheduled", "ShipmentDelayed", "InboundCancelled", "StockReceived"}
)


class Skip(ValueError):
    """A record the projector cannot use; `reason` is one line without payload data."""

    def __init__(self, reason: str, kind: str = "schema_violation"):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


# ---------------------------------------------------------------- allocations


def _check_totals(lines: Sequence[wire.AllocationLine]) -> None:
    """The line invariant the order fold relies on (the contract does not state it)."""
    for index, line in enumerate(lines):
        if line.allocated + line.backordered + line.rejected + line.cancelled != line.quantity:
            raise Skip(
                f"data.lines.{index}: allocated + backordered + rejected + cancelled != quantity"
            )
        if line.reserved > line.backordered:
            raise Skip(f"data.lines.{index}: reserved exceeds backordered")


def decode_allocation(value: bytes | None) -> Event | None:
    """An allocation event; Skip (with the contract's reason, never payload data) if it
    does not decode."""
    try:
        event = read_output(value or b"")
    except ContractError as exc:
        raise Skip(exc.reason, exc.kind) from None
    if isinstance(event, wire.StockPositionChanged):
        d = event.data
        return StockPosition(
            event.occurred_at, d.warehouse_id, d.sku, d.available, d.backordered,
            d.reserved, d.incoming, d.next_eta, d.shortfall, d.promise_eta,
        )  # fmt: skip
    if isinstance(event, wire.StockAlertTriggered):
        return None  # a message for the notifier; the read models keep no alerts yet
    data = event.data
    if data.customer is None:
        return None  # an order refused as invalid: no order, no lines to fold
    _check_totals(data.lines)
    reason = cause_type = cause_reason = None
    if isinstance(event, wire.Backordered):
        reason = event.data.reason
    elif isinstance(event, wire.BackorderEtaChanged):
        cause_type, cause_reason = event.data.cause.event_type, event.data.cause.reason
    return OrderEvent(
        event.id, event.type, event.occurred_at, data.order_id, data.warehouse_id,
        data.customer, data.lines, reason, cause_type, cause_reason,
    )  # fmt: skip


# ---------------------------------------------------------------- inputs


def _peek_type(value: bytes) -> tuple[str | None, Any]:
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise Skip("invalid JSON", "bad_json") from None
    if not isinstance(doc, dict):
        raise Skip("not a JSON object", "bad_json")
    return doc.get("type"), doc.get("data")


def decode_input(value: bytes | None, max_bytes: int) -> Event | None:
    """An input event the projector uses, None for one it ignores; Skip if invalid."""
    value = value or b""
    if len(value) > max_bytes:
        raise Skip(f"message is {len(value)} bytes, more than the limit of {max_bytes}", "oversize")
    kind, data = _peek_type(value)
    if kind not in _INPUT_TYPES_USED:
        return None
    if kind == "StockReceived" and isinstance(data, dict) and data.get("inbound_id") is None:
        return None
    try:
        event = decode_input_event(value)
    except ContractError as exc:
        raise Skip(exc.reason, exc.kind) from None
    return _input_event(event)


def _input_event(event: wire.InputEvent) -> Event | None:
    if isinstance(event, wire.OrderPlaced):
        d = event.data
        return OrderPlaced(
            event_id=event.id,
            occurred_at=event.occurred_at,
            order_id=d.order_id,
            warehouse_id=d.warehouse_id,
            customer=d.customer,
            placed_at=d.placed_at,
            lines=tuple((line.line_no, line.sku, line.quantity) for line in d.lines),
        )
    if isinstance(event, wire.InboundScheduled):
        return InboundScheduled(
            event_id=event.id,
            occurred_at=event.occurred_at,
            warehouse_id=event.data.warehouse_id,
            inbound_id=event.data.inbound_id,
            lines=tuple((line.sku, line.quantity) for line in event.data.lines),
            eta=event.data.eta,
            supplier=event.data.supplier,
        )
    if isinstance(event, wire.ShipmentDelayed):
        d2 = event.data
        return ShipmentDelayed(
            event.id, event.occurred_at, d2.warehouse_id, d2.inbound_id, d2.new_eta
        )
    if isinstance(event, wire.InboundCancelled):
        d3 = event.data
        return InboundCancelled(
            event.id, event.occurred_at, d3.warehouse_id, d3.inbound_id, d3.reason, d3.cancelled_at
        )
    if isinstance(event, wire.StockReceived):
        d4 = event.data
        if d4.inbound_id is None:
            return None  # only receipts against an inbound matter here
        return StockReceived(
            occurred_at=event.occurred_at,
            warehouse_id=d4.warehouse_id,
            receipt_id=d4.receipt_id,
            inbound_id=d4.inbound_id,
            sku=d4.sku,
            quantity=d4.quantity,
            received_at=d4.received_at,
        )
    return None


def decode(base_topic: str, value: bytes | None, max_bytes: int) -> Event | None:
    return decoder_for(base_topic, max_bytes)(value)


def _ignore(value: bytes | None) -> None:
    return None


def decoder_for(base_topic: str, max_bytes: int) -> Callable[[bytes | None], Event | None]:
    """`decode` for one topic, picked once per partition rather than per record."""
    if base_topic == ALLOCATIONS:
        return decode_allocation
    if base_topic in (ORDERS, INVENTORY):
        return functools.partial(decode_input, max_bytes=max_bytes)
    return _ignore
