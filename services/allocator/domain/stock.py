"""Stock movements shared by the handlers: units becoming free, fills, releases, supply.

Each records on the command's `Context` what it touched; none renders anything.
"""

from __future__ import annotations

from .context import Context, Record
from .eta import coverable
from .queue import dequeue, enqueue, serve_head
from .state import AllocatorState, Inbound, Line, Order, SkuState


def shelve(sku: SkuState, units: int) -> None:
    """Units are back on the shelf: like any unit becoming free, they pay a shortfall first."""
    pay = min(sku.shortfall, units)
    if pay:
        sku.shortfall -= pay
        units -= pay
    sku.available += units


def add_stock(ctx: Context, sku: SkuState, quantity: int) -> None:
    """Units become free: pay down a shortfall first, then fill the queue."""
    shelve(sku, quantity)
    ctx.touched[sku] = None
    fill(ctx, sku)


def fill(ctx: Context, sku: SkuState) -> None:
    """Give available units to the queue strictly in order, head first.

    A ship_partial line ships what it gets at once; a ship_complete line
    holds it as a reservation until its order is covered (`settle`).
    """
    if sku.available <= 0 or not sku.waiting:
        return
    if sku.held(ctx.state.today):
        ctx.queue_changed(sku)  # held stock dates the pre-orders
        return
    queue = sku.queue
    assert queue is not None
    while sku.available > 0 and queue:
        line, take = serve_head(sku, queue)
        order = line.order
        if order.complete:
            line.reserved += take
            order.reserved += take
            sku.reserved += take
            ctx.shipment(order)  # keeps queue order among this command's outputs
            ctx.complete_check[order] = None
        else:
            line.allocated += take
            sku.released_total += take
            shipped = ctx.shipment(order).shipped
            shipped[line] = shipped.get(line, 0) + take
            ctx.maybe_closed[order] = None
        ctx.eta_orders[order] = None
    ctx.queue_changed(sku)
    ctx.touched[sku] = None


def take_reservations(ctx: Context, sku: SkuState, units: int) -> int:
    """Shrinkage beyond `available`: take up to `units` reserved units of `sku` from the
    back of the queue (lowest priority, latest placed first). Those lines wait again at
    their place in the queue; each order is told (Backordered, `reservation_lost`).
    Returns the units still missing (a shortfall)."""
    holders: list[Line] = [
        line
        for order in ctx.state.orders.values()
        if order.reserved and order.warehouse_id == sku.warehouse_id
        for line in order.lines
        if line.reserved and line.sku == sku.sku
    ]
    holders.sort(
        key=lambda ln: (-ln.order.priority, ln.order.placed_us, ln.order.order_id, ln.line_no),
        reverse=True,
    )
    per_order: dict[Order, list[Line]] = {}
    for line in holders:
        if not units:
            break
        take = min(line.reserved, units)
        units -= take
        order = line.order
        line.reserved -= take
        order.reserved -= take
        sku.reserved -= take
        waiting = dequeue(sku, line) if line.waiting else 0
        enqueue(sku, line, waiting + take)
        per_order.setdefault(order, []).append(line)
        ctx.eta_orders[order] = None
    if per_order:
        ctx.queue_changed(sku)
        for order, lines in per_order.items():
            ctx.record("Backordered", order, "reservation_lost").lines = sorted(
                lines, key=lambda ln: ln.line_no
            )
    return units


def release(ctx: Context, order: Order, rec: Record) -> None:
    """Ship every reserved unit of a covered ship_complete order."""
    skus = ctx.state.skus
    shipped = rec.shipped
    for line in order.lines:
        units = line.reserved
        if units:
            sku = skus[(order.warehouse_id, line.sku)]
            line.reserved = 0
            line.allocated += units
            sku.reserved -= units
            sku.released_total += units
            shipped[line] = shipped.get(line, 0) + units
            ctx.touched[sku] = None
    order.reserved = 0
    ctx.eta_orders[order] = None
    ctx.maybe_closed[order] = None


def settle(ctx: Context) -> None:
    """Ship ship_complete orders that became fully covered during this command."""
    if not ctx.complete_check:
        return
    for order in ctx.complete_check:
        if order.waiting == 0:
            if order.reserved:
                release(ctx, order, ctx.shipment(order))
            ctx.maybe_closed[order] = None
    ctx.complete_check.clear()


def sync_inbound(
    ctx: Context, inbound: Inbound, sku_name: str, before: int, eta_moved: bool = False
) -> None:
    """Book a change of one inbound line's remaining quantity (or date) on its SKU."""
    after = inbound.remaining(sku_name)
    if before == after and not (eta_moved and after):
        return
    sku = ctx.state.sku(inbound.warehouse_id, sku_name)
    if after:
        sku.inbounds[inbound.inbound_id] = inbound
    else:
        sku.inbounds.pop(inbound.inbound_id, None)
    sku.incoming += after - before
    ctx.touched[sku] = None
    if sku.waiting:
        ctx.queue_changed(sku)


def file_inbound(state: AllocatorState, inbound: Inbound) -> None:
    """File an inbound as open or closed (fully received, kept for late receipts)."""
    key = (inbound.warehouse_id, inbound.inbound_id)
    if inbound.is_open():
        if key not in state.inbounds:
            state.inbounds[key] = inbound
            state.closed_inbounds.pop(key, None)
    else:
        state.inbounds.pop(key, None)
        state.closed_inbounds[key] = inbound


def close_finished(ctx: Context) -> None:
    """Orders with nothing left waiting or reserved leave the open set; their ids stay known."""
    state = ctx.state
    for order in ctx.maybe_closed:
        if not (order.waiting or order.reserved):
            if state.orders.pop((order.warehouse_id, order.order_id), None) is not None:
                state.closed_orders.add(order.warehouse_id, order.order_id)


def acceptable(ctx: Context, sku: SkuState, units: int) -> tuple[int, str | None]:
    """How many of `units` may wait in `sku`'s queue, and why not the rest."""
    accept, reason = units, None
    limit = sku.backorder_limit
    if limit is not None and sku.waiting + accept > limit:
        accept, reason = max(0, limit - sku.waiting), "backorder_limit"
    if sku.covered_only and accept:
        covered = coverable(sku, accept, ctx.state.today, ctx.state.grace_days)
        if covered < accept:
            accept, reason = covered, "not_covered"
    return accept, reason


def cancel_units(ctx: Context, line: Line, units: int, freed: dict[SkuState, None]) -> int:
    """Cancel up to `units` of `line`'s unreleased units, waiting ones first, then reserved
    ones (which go back to the shelf; `freed` collects their SKUs for a fill). The rest
    keeps its place in the queue. Returns the units cancelled."""
    order = line.order
    sku = ctx.state.skus[(order.warehouse_id, line.sku)]
    done = 0
    if line.waiting and units:
        waiting = dequeue(sku, line)
        done = min(waiting, units)
        if waiting > done:
            enqueue(sku, line, waiting - done)  # same key: the same place in the queue
        ctx.queue_changed(sku)
        ctx.touched[sku] = None
    held = min(line.reserved, units - done)
    if held:
        line.reserved -= held
        order.reserved -= held
        sku.reserved -= held
        shelve(sku, held)
        freed[sku] = None
        ctx.touched[sku] = None
        done += held
    line.cancelled += done
    return done
