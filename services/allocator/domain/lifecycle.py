"""Changes to an open order after its placement: part cancels, policy switches, consent,
and the refusal of an order that failed the contract.

Choices made here (the contract leaves them open):

- A change names an order that is open in this warehouse; for an unknown or
  closed order there is nothing left to change and no customer block to tell,
  so nothing is emitted.
- None of these has a business key of its own, and re-applying an old one is
  not harmless (a part cancel would cancel twice, an old policy switch would
  undo a newer one), so each open order remembers the ids of the changes it
  took (`Order.applied`).
- A policy switch to the policy the order already has changes nothing.
  ship_complete → ship_partial releases what the order holds on the shelf
  (PartiallyShipped, or OrderAllocated when nothing waits); ship_partial →
  ship_complete holds everything not yet released (Backordered,
  `ship_complete_hold`).
- An order refused by the router is told (OrderRejected, reason `invalid`)
  only when no order with its id is known: a bad re-send of an accepted order
  leaves the order as it is (its dead letter tells the sender).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schemas.contract import (
    BackorderConsentGiven,
    InvalidOrderReceived,
    NotCancelled,
    OrderLinesCancelled,
    OrderPolicyChanged,
)

from .consent import give
from .context import Context
from .state import Order, SkuState
from .stock import cancel_units, fill, release, settle


def _open_order(ctx: Context, warehouse_id: str, order_id: str, change_id: str) -> Order | None:
    """The open order a change is about, if it has not taken this change yet."""
    order = ctx.state.orders.get((warehouse_id, order_id))
    if order is None or change_id in order.applied:
        return None
    order.applied += (change_id,)
    return order


def order_lines_cancelled(ctx: Context, env: OrderLinesCancelled) -> None:
    data = env.data
    order = _open_order(ctx, data.warehouse_id, data.order_id, env.id)
    if order is None:
        return
    by_no = {line.line_no: line for line in order.lines}
    freed: dict[SkuState, None] = {}
    concerned = []
    not_cancelled = []
    for asked in data.lines:
        line = by_no.get(asked.line_no)
        if line is None:
            not_cancelled.append(
                NotCancelled.trusted(
                    line_no=asked.line_no, quantity=asked.quantity, reason="unknown_line"
                )
            )
            continue
        concerned.append(line)
        done = cancel_units(ctx, line, asked.quantity, freed)
        if done < asked.quantity:
            not_cancelled.append(
                NotCancelled.trusted(
                    line_no=asked.line_no, quantity=asked.quantity - done, reason="not_open"
                )
            )
    rec = ctx.record("OrderCancellationProcessed", order, data.reason)
    # Only unknown lines asked for: the order's lines as they stand, with why not.
    rec.lines = sorted(concerned, key=lambda ln: ln.line_no) or list(order.lines)
    rec.not_cancelled = not_cancelled or None
    ctx.eta_orders[order] = None
    ctx.maybe_closed[order] = None
    if order.complete:
        ctx.complete_check[order] = None  # what still waits may have been the only gap
    for sku in freed:
        fill(ctx, sku)
    settle(ctx)


def order_policy_changed(ctx: Context, env: OrderPolicyChanged) -> None:
    data = env.data
    order = _open_order(ctx, data.warehouse_id, data.order_id, env.id)
    if order is None:
        return
    complete = data.fulfilment_policy == "ship_complete"
    if complete == order.complete:
        return
    order.complete = complete
    ctx.eta_orders[order] = None  # a ship_complete order's lines share one date
    if complete:
        if order.waiting:
            ctx.record("Backordered", order, "ship_complete_hold")
        return
    if order.reserved:
        kind = "PartiallyShipped" if order.waiting else "OrderAllocated"
        release(ctx, order, ctx.record(kind, order))


def backorder_consent_given(ctx: Context, env: BackorderConsentGiven) -> None:
    data = env.data
    if not ctx.state.consent_rule:
        return  # without the rule there is no consent to record
    order = _open_order(ctx, data.warehouse_id, data.order_id, env.id)
    if order is None:
        return
    wanted = None if data.lines is None else set(data.lines)
    lines = [
        line
        for line in order.lines
        if line.backordered and (wanted is None or line.line_no in wanted) and give(line)
    ]
    if lines:
        ctx.record("BackorderConsentRecorded", order).lines = lines


def invalid_order_received(ctx: Context, env: InvalidOrderReceived) -> None:
    data = env.data
    if not ctx.state.order_known(data.warehouse_id, data.order_id):
        ctx.invalid_orders.append(data)


HANDLERS: dict[str, Callable[[Context, Any], None]] = {
    "OrderLinesCancelled": order_lines_cancelled,
    "OrderPolicyChanged": order_policy_changed,
    "BackorderConsentGiven": backorder_consent_given,
    "InvalidOrderReceived": invalid_order_received,
}
