"""The inbound-shipment fold: original and current ETA, quantities, lead times.

Events of one inbound arrive on one inventory partition (keyed by
warehouse_id), so they are folded in log order. Receipts count once per
receipt_id; the caller says which receipts were already counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from .events import InboundCancelled, InboundScheduled, ShipmentDelayed, StockReceived


@dataclass(slots=True)
class InboundLineState:
    sku: str
    quantity_expected: int = 0
    quantity_received: int = 0
    first_received_at: datetime | None = None
    # Units that will not arrive: the rest still to come when the inbound was cancelled.
    quantity_cancelled: int = 0


@dataclass(slots=True)
class InboundState:
    warehouse_id: str
    inbound_id: str
    supplier: str | None = None
    original_eta: date | None = None  # None: receipts seen, never scheduled
    current_eta: date | None = None
    scheduled_at: datetime | None = None  # occurred_at of the first InboundScheduled
    updated_at: datetime | None = None
    cancelled_at: datetime | None = None  # InboundCancelled: the rest will not arrive
    cancel_reason: str | None = None
    lines: dict[str, InboundLineState] = field(default_factory=dict)

    @property
    def delay_days(self) -> int | None:
        if self.original_eta is None or self.current_eta is None:
            return None
        return (self.current_eta - self.original_eta).days


def _touch(state: InboundState, at: datetime) -> None:
    if state.updated_at is None or at > state.updated_at:
        state.updated_at = at


def apply_scheduled(state: InboundState | None, event: InboundScheduled) -> InboundState:
    if state is None:
        state = InboundState(event.warehouse_id, event.inbound_id)
    if state.original_eta is None:
        state.original_eta = event.eta
    # A re-sent schedule is the new plan: its date is the current ETA.
    state.current_eta = event.eta
    if state.scheduled_at is None or event.occurred_at < state.scheduled_at:
        state.scheduled_at = event.occurred_at
    if event.supplier is not None:
        state.supplier = event.supplier
    # A schedule after a cancellation is a new plan, as the allocator takes it.
    state.cancelled_at = state.cancel_reason = None
    for reopened in state.lines.values():
        reopened.quantity_cancelled = 0
    wanted = dict(event.lines)
    # Like the allocator: SKUs a re-sent schedule no longer lists are not coming,
    # beyond what already arrived.
    for sku, kept in state.lines.items():
        if sku not in wanted:
            kept.quantity_expected = min(kept.quantity_expected, kept.quantity_received)
    for sku, quantity in wanted.items():
        line = state.lines.get(sku)
        if line is None:
            line = state.lines[sku] = InboundLineState(sku)
        line.quantity_expected = quantity
    _touch(state, event.occurred_at)
    return state


def apply_delayed(state: InboundState | None, event: ShipmentDelayed) -> InboundState | None:
    """A delay of a shipment never scheduled is ignored (the allocator ignores it too)."""
    if state is None or state.original_eta is None:
        return state
    state.current_eta = event.new_eta
    _touch(state, event.occurred_at)
    return state


def apply_cancelled(state: InboundState | None, event: InboundCancelled) -> InboundState | None:
    """The rest of the inbound will not arrive. A cancellation of a shipment never
    scheduled is ignored (the allocator ignores it too)."""
    if state is None or state.original_eta is None:
        return state
    state.cancelled_at = event.cancelled_at
    state.cancel_reason = event.reason
    for line in state.lines.values():
        line.quantity_cancelled = max(0, line.quantity_expected - line.quantity_received)
    _touch(state, event.occurred_at)
    return state


def apply_received(state: InboundState | None, event: StockReceived) -> InboundState:
    """Count a receipt against its inbound (the caller drops receipts already counted)."""
    if state is None:
        state = InboundState(event.warehouse_id, event.inbound_id)
    line = state.lines.get(event.sku)
    if line is None:
        line = state.lines[event.sku] = InboundLineState(event.sku)
    line.quantity_received += event.quantity
    if line.first_received_at is None or event.received_at < line.first_received_at:
        line.first_received_at = event.received_at
    _touch(state, event.occurred_at)
    return state


def receipt_status(expected: int, received: int, cancelled: bool = False) -> str:
    if cancelled and received < expected:
        # `cancelled`: nothing arrived; `closed_short`: the rest will not arrive.
        return "closed_short" if received else "cancelled"
    if received == 0:
        return "expected"
    return "received" if received >= expected else "partially_received"


def is_overdue(
    current_eta: date | None,
    expected: int,
    received: int,
    as_of: date,
    grace_days: int,
    cancelled: bool = False,
) -> bool:
    """Overdue, as the allocator judges it: units still to come and `as_of` past the
    current ETA plus the grace (FULFIL_OVERDUE_GRACE_DAYS). Its date is no longer
    credible: the lines it covered have no ETA until a delay notice or a receipt."""
    if cancelled or current_eta is None or received >= expected:
        return False
    return as_of > current_eta + timedelta(days=grace_days)


def is_late(
    current_eta: date | None,
    delay_days: int | None,
    expected: int,
    received: int,
    as_of: date,
    cancelled: bool = False,
) -> bool:
    """Late = delayed by the supplier (ETA moved later), or still open after its
    current ETA. A cancelled inbound is not late: nothing more is coming."""
    if cancelled:
        return False
    if delay_days is not None and delay_days > 0:
        return True
    return current_eta is not None and current_eta < as_of and received < expected
