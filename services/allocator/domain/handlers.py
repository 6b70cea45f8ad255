"""One handler per input event: change stock, queues and orders, record what happened.

A handler takes the command's `Context` and its own envelope type. It
recognises a duplicate by its business key (see `rules.py`) and then
changes nothing; otherwise it records (`Context.record`) what happened to
each order, without rendering: `outputs.py` renders once the command is done.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date
from typing import Any

from schemas import wire
from schemas.contract import (
    ClockTicked,
    Customer,
    InboundCancelled,
    InboundScheduled,
    OrderCancelled,
    OrderLine,
    OrderPlaced,
    OrderPlacedData,
    ShipmentDelayed,
    SkuPolicySet,
    StockAdjusted,
    StockReceived,
)
from schemas.decode import as_model

from .consent import enforce
from .context import Context
from .ids import first_statement, placed_micros
from .queue import dequeue, drain, enqueue
from .state import Inbound, Line, Order, SkuState
from .stock import (
    acceptable,
    add_stock,
    file_inbound,
    fill,
    release,
    settle,
    shelve,
    sync_inbound,
    take_reservations,
)

# ---------------------------------------------------------------- orders


def order_placed(ctx: Context, env: OrderPlaced | wire.OrderPlaced) -> None:
    data = env.data
    state = ctx.state
    wh = data.warehouse_id
    order_id = data.order_id
    key = (wh, order_id)
    if key in state.orders or state.closed_orders.has(wh, order_id):
        return  # this order was placed before: a duplicate, whatever its lines
    order = _new_order(data)
    if state.tombstones.has(wh, order_id):
        state.tombstones.discard(wh, order_id)
        state.closed_orders.add(wh, order_id)
        for line in order.lines:
            line.rejected = line.quantity
            line.reason = "cancelled_before_placement"
        ctx.record("OrderRejected", order).lines = list(order.lines)
        return
    rejected, shipped = _take_stock(ctx, order)
    _record_placement(ctx, order, rejected, shipped)
    if order.waiting or order.reserved:
        state.orders[key] = order
        ctx.eta_orders[order] = None
    else:
        state.closed_orders.add(wh, order_id)


def _new_order(data: OrderPlacedData | wire.OrderPlacedData) -> Order:
    order = Order(
        data.order_id,
        data.warehouse_id,
        as_model(data.customer, Customer),
        data.fulfilment_policy == "ship_complete",
        data.priority,
        placed_micros(data.placed_at),
    )
    lines: Sequence[OrderLine | wire.OrderLine] = data.lines
    for item in sorted(lines, key=lambda item: item.line_no):
        order.lines.append(
            Line(order, item.line_no, item.sku, item.quantity, item.unit_price, item.currency)
        )
    return order


def _take_stock(ctx: Context, order: Order) -> tuple[list[Line], dict[Line, int]]:
    """Serve a new order's lines from the shelf; queue or reject the rest.

    Returns the rejected lines and what each ship_partial line ships now.
    """
    state = ctx.state
    today = state.today
    complete = order.complete
    rejected: list[Line] = []
    shipped: dict[Line, int] = {}
    for line in order.lines:
        sku = state.sku(order.warehouse_id, line.sku)
        held = sku.held(today)  # a pre-order: nothing ships before the release date
        # available is 0 whenever the SKU has waiters (unless held), so a new line never
        # jumps the queue.
        take = 0 if held else line.quantity if line.quantity < sku.available else sku.available
        rest = line.quantity - take
        if take:
            sku.available -= take
            ctx.touched[sku] = None
            if complete:
                line.reserved = take
                order.reserved += take
                sku.reserved += take
            else:
                line.allocated = take
                sku.released_total += take
                shipped[line] = take
        if not rest:
            continue
        if sku.discontinued or not (sku.backorderable or held):
            line.rejected = rest
            line.reason = "discontinued" if sku.discontinued else "not_backorderable"
            rejected.append(line)
            continue
        accept, reason = acceptable(ctx, sku, rest)
        if accept < rest:
            line.rejected = rest - accept
            line.reason = reason
            rejected.append(line)
        if accept:
            if held:
                ctx.pre_orders[order] = None
            at_tail = enqueue(sku, line, accept)
            ctx.queue_changed(sku, line if at_tail else None)
            ctx.touched[sku] = None
    return rejected, shipped


def _record_placement(
    ctx: Context, order: Order, rejected: list[Line], shipped: dict[Line, int]
) -> None:
    if rejected:
        ctx.record("OrderRejected", order).lines = rejected
    if order.complete:
        if order.waiting:
            reason = "pre_order" if order in ctx.pre_orders else "ship_complete_hold"
            ctx.record("Backordered", order, reason)
        elif order.reserved:
            release(ctx, order, ctx.record("OrderAllocated", order))
    elif order.waiting:
        if shipped:
            ctx.record("PartiallyShipped", order).shipped = shipped
        else:
            reason = "pre_order" if order in ctx.pre_orders else "insufficient_stock"
            ctx.record("Backordered", order, reason)
    elif shipped:
        ctx.record("OrderAllocated", order).shipped = shipped


def order_cancelled(ctx: Context, env: OrderCancelled | wire.OrderCancelled) -> None:
    data = env.data
    state = ctx.state
    key = (data.warehouse_id, data.order_id)
    order = state.orders.get(key)
    if order is None:
        if not state.closed_orders.has(*key):
            state.tombstones.add(*key)
        return  # unknown (now tombstoned), already closed, or already tombstoned
    freed: dict[SkuState, None] = {}
    for line in order.lines:
        if not (line.waiting or line.reserved):
            continue
        sku = state.skus[(order.warehouse_id, line.sku)]
        ctx.touched[sku] = None
        if line.waiting:
            line.cancelled += dequeue(sku, line)
            ctx.queue_changed(sku)
        units = line.reserved
        if units:
            line.reserved = 0
            line.cancelled += units
            order.reserved -= units
            sku.reserved -= units
            shelve(sku, units)
            freed[sku] = None
    ctx.record("OrderCancellationProcessed", order, data.reason).lines = list(order.lines)
    ctx.eta_orders[order] = None
    ctx.maybe_closed[order] = None
    for sku in freed:
        fill(ctx, sku)
    settle(ctx)


# ---------------------------------------------------------------- stock


def stock_received(ctx: Context, env: StockReceived | wire.StockReceived) -> None:
    data = env.data
    state = ctx.state
    wh = data.warehouse_id
    if state.seen_receipts.has(wh, data.receipt_id):
        return
    state.seen_receipts.add(wh, data.receipt_id)
    sku = state.sku(wh, data.sku)
    sku.received_total += data.quantity
    ctx.touched[sku] = None
    if data.inbound_id is not None:
        ctx.cause_inbound = data.inbound_id
        inbound = state.inbound(wh, data.inbound_id)
        if inbound is not None:
            entry = inbound.skus.get(data.sku)
            if entry is not None:
                before = inbound.remaining(data.sku)
                entry[1] += data.quantity
                sync_inbound(ctx, inbound, data.sku, before)
                file_inbound(state, inbound)
                if state.today is not None and inbound.overdue(state.today, state.grace_days):
                    _rebase(ctx, inbound, state.today)
    add_stock(ctx, sku, data.quantity)
    settle(ctx)


def stock_adjusted(ctx: Context, env: StockAdjusted | wire.StockAdjusted) -> None:
    data = env.data
    state = ctx.state
    wh = data.warehouse_id
    if state.seen_adjustments.has(wh, data.adjustment_id):
        return
    state.seen_adjustments.add(wh, data.adjustment_id)
    sku = state.sku(wh, data.sku)
    ctx.touched[sku] = None
    delta = data.delta
    if delta > 0:
        sku.positive_adjusted_total += delta
        add_stock(ctx, sku, delta)
        settle(ctx)
    else:
        units = -delta
        sku.negative_adjusted_total += units
        take = units if units < sku.available else sku.available
        sku.available -= take
        if take and sku.waiting:
            ctx.queue_changed(sku)  # held stock (pre-orders) dated some of them
        missing = units - take
        if missing and sku.reserved:
            missing = take_reservations(ctx, sku, missing)
        sku.shortfall += missing


def _rebase(ctx: Context, inbound: Inbound, today: date) -> None:
    """An overdue inbound is arriving after all: what is still to come is expected today."""
    inbound.eta = today
    for sku_name in inbound.skus:
        remaining = inbound.remaining(sku_name)
        if remaining:
            sync_inbound(ctx, inbound, sku_name, remaining, eta_moved=True)


# ---------------------------------------------------------------- statements


def inbound_scheduled(ctx: Context, env: InboundScheduled | wire.InboundScheduled) -> None:
    data = env.data
    state = ctx.state
    wh = data.warehouse_id
    if not first_statement(state.inbound_events, (wh, data.inbound_id), env):
        return
    ctx.cause_inbound = data.inbound_id
    inbound = state.inbound(wh, data.inbound_id)
    if inbound is None:
        inbound = Inbound(wh, data.inbound_id, data.eta)
        eta_moved = False
    else:
        eta_moved = inbound.eta != data.eta
        inbound.eta = data.eta
    wanted = {line.sku: line.quantity for line in data.lines}
    # A re-sent inbound is its new full definition: SKUs it no longer lists are not coming.
    for sku_name, entry in inbound.skus.items():
        if sku_name not in wanted:
            before = inbound.remaining(sku_name)
            entry[0] = min(entry[0], entry[1])
            sync_inbound(ctx, inbound, sku_name, before)
    for sku_name, quantity in wanted.items():
        known = inbound.skus.get(sku_name)
        before = inbound.remaining(sku_name)
        if known is None:
            inbound.skus[sku_name] = [quantity, 0]
        else:
            known[0] = quantity
        sync_inbound(ctx, inbound, sku_name, before, eta_moved)
    file_inbound(state, inbound)


def shipment_delayed(ctx: Context, env: ShipmentDelayed | wire.ShipmentDelayed) -> None:
    data = env.data
    state = ctx.state
    if not first_statement(state.inbound_events, (data.warehouse_id, data.inbound_id), env):
        return
    inbound = state.inbound(data.warehouse_id, data.inbound_id)
    if inbound is None or inbound.eta == data.new_eta:
        return
    ctx.cause_inbound = data.inbound_id
    ctx.cause_reason = data.reason
    inbound.eta = data.new_eta
    for sku_name in inbound.skus:
        remaining = inbound.remaining(sku_name)
        if remaining:
            sync_inbound(ctx, inbound, sku_name, remaining, eta_moved=True)


def inbound_cancelled(ctx: Context, env: InboundCancelled | wire.InboundCancelled) -> None:
    """The rest of an inbound will not arrive: its remaining units leave the supply."""
    data = env.data
    state = ctx.state
    if not first_statement(state.inbound_events, (data.warehouse_id, data.inbound_id), env):
        return
    inbound = state.inbound(data.warehouse_id, data.inbound_id)
    if inbound is None:
        return
    ctx.cause_inbound = data.inbound_id
    for sku_name, entry in inbound.skus.items():
        before = inbound.remaining(sku_name)
        if before:
            entry[0] = entry[1]
            sync_inbound(ctx, inbound, sku_name, before)
    file_inbound(state, inbound)


def clock_ticked(ctx: Context, env: ClockTicked | wire.ClockTicked) -> None:
    """Today moves forward (never back): dates before it move to it, inbounds past their
    grace lose their date, SKUs reaching their release date ship what they held."""
    state = ctx.state
    today = env.data.now.astimezone(UTC).date()
    before = state.today
    if before is not None and today <= before:
        return
    state.today = today
    grace = state.grace_days
    went_overdue = sorted(
        inbound.inbound_id
        for inbound in state.inbounds.values()
        if inbound.overdue(today, grace) and not inbound.overdue(before, grace)
    )
    if went_overdue:
        ctx.cause_reason = "inbound_overdue"
        if len(went_overdue) == 1:
            ctx.cause_inbound = went_overdue[0]
    for sku in state.skus.values():
        if sku.inbounds or sku.release_date is not None:
            ctx.touched[sku] = None  # promise_eta may move
            if sku.waiting:
                ctx.queue_changed(sku)
    for key in list(state.release_pending):
        sku = state.skus[key]
        if not sku.held(today):
            del state.release_pending[key]
            fill(ctx, sku)
    settle(ctx)
    if state.consent_rule:
        enforce(ctx, today)


def sku_policy_set(ctx: Context, env: SkuPolicySet | wire.SkuPolicySet) -> None:
    data = env.data
    state = ctx.state
    if not first_statement(state.policy_events, (data.warehouse_id, data.sku), env):
        return
    sku = state.sku(data.warehouse_id, data.sku)
    ctx.alert_skus[sku] = None  # it may have become orderable
    sku.backorderable = data.backorderable
    sku.discontinued = data.discontinued
    sku.backorder_limit = data.backorder_limit
    sku.covered_only = data.backorder_mode == "covered_only"
    if sku.release_date != data.release_date:
        sku.release_date = data.release_date
        ctx.touched[sku] = None
        if sku.waiting:
            ctx.queue_changed(sku)
        if sku.held(state.today):
            state.release_pending[sku.key] = None
        else:
            state.release_pending.pop(sku.key, None)
            if not data.discontinued:
                fill(ctx, sku)
                settle(ctx)
    if not (data.discontinued and sku.waiting):
        return
    # Discontinued: waiting (accepted but unfilled) units will never come.
    per_order: dict[Order, list[Line]] = {}
    for line in drain(sku, "discontinued"):
        order = line.order
        per_order.setdefault(order, []).append(line)
        ctx.eta_orders[order] = None
        ctx.maybe_closed[order] = None
        if order.complete:
            ctx.complete_check[order] = None
    ctx.touched[sku] = None
    for order, lines in per_order.items():
        ctx.record("OrderRejected", order).lines = lines
    settle(ctx)


# Typed per input above; the dispatch on `type` is `rules.decide`'s.
HANDLERS: dict[str, Callable[[Context, Any], None]] = {
    "OrderPlaced": order_placed,
    "OrderCancelled": order_cancelled,
    "StockReceived": stock_received,
    "StockAdjusted": stock_adjusted,
    "InboundScheduled": inbound_scheduled,
    "ShipmentDelayed": shipment_delayed,
    "SkuPolicySet": sku_policy_set,
    "InboundCancelled": inbound_cancelled,
    "ClockTicked": clock_ticked,
}
