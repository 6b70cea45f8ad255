"""The ETA walk: when each waiting line can expect its units from scheduled supply.

A line's raw ETA is the ETA of the inbound covering its last waiting unit,
queue order first. What the customer is told (`order_etas`) follows from the
raw ETAs of the order's lines and its policy.

Time comes from the log only (`AllocatorState.today`, moved by ClockTicked):

- no date is ever before today: an inbound a little late (within the grace)
  is expected today;
- an inbound past its ETA plus the grace with units still to come is
  overdue: the lines it covers have no date (None) until a delay notice or
  a receipt gives one back;
- a SKU not released yet (pre-orders) has its stock on hand held: it is the
  first supply, dated the release date, and no date is before that.

Without an overdue inbound, dates never decrease along a queue (the walk
skips untouched blocks); with one, the walk visits every line.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from datetime import date
from itertools import accumulate
from typing import Any

from .context import Context
from .queue import QueueBlock, QueueEntry
from .state import DEFAULT_OVERDUE_GRACE_DAYS, AllocatorState, Line, Order, Position, SkuState

# (date to tell or None if overdue, inbound_id or "" for held stock, units), in walk order
Supply = list[tuple[date | None, str, int]]
Mark = Callable[[Order], object]  # called with each order whose raw ETAs moved


def refresh(ctx: Context) -> None:
    """Bring the raw ETAs of every SKU this command changed up to date; mark moved orders."""
    mark = ctx.eta_orders.setdefault
    today = ctx.state.today
    grace = ctx.state.grace_days
    for sku, appended in ctx.eta_skus.items():
        queue = sku.queue
        if (
            appended is not None
            and appended.qkey is not None
            and queue is not None
            and queue.tail() is appended.qkey
        ):
            _recompute_tail(sku, appended, mark, today, grace)
        else:
            recompute_sku_etas(sku, mark, today, grace)


def supply(sku: SkuState, today: date | None = None, grace_days: int = 0) -> Supply:
    """What the SKU's queue can expect, in walk order: held stock first (pre-orders, dated
    the release date), then the open inbounds' remaining units by (ETA, inbound_id).

    Each entry's date is the inbound's ETA, but never before today nor (not released
    yet) before the release date; None for an overdue inbound.
    """
    name = sku.sku
    floor = today
    entries: Supply = []
    if sku.held(today):
        floor = sku.release_date
        if sku.available:
            entries.append((floor, "", sku.available))
    if not sku.inbounds:
        return entries
    for eta, inbound_id, remaining, inbound in sorted(
        (inbound.eta, inbound_id, inbound.remaining(name), inbound)
        for inbound_id, inbound in sku.inbounds.items()
    ):
        if today is not None and inbound.overdue(today, grace_days):
            told: date | None = None
        else:
            told = eta if floor is None or eta >= floor else floor
        entries.append((told, inbound_id, remaining))
    return entries


def cover(scheduled: Supply, units: int) -> date | None:
    """Date of the `units`-th unit of scheduled supply (None if not scheduled or overdue)."""
    for eta, _inbound_id, remaining in scheduled:
        units -= remaining
        if units <= 0:
            return eta
    return None


def promise(sku: SkuState, today: date | None, grace_days: int) -> date | None:
    """The date a new order's unit beyond `available` would get, after everything queued."""
    if not sku.inbounds and sku.release_date is None:
        return None
    return cover(supply(sku, today, grace_days), sku.waiting + 1)


def position(
    sku: SkuState, today: date | None = None, grace_days: int = DEFAULT_OVERDUE_GRACE_DAYS
) -> Position:
    """The SKU's stock position as StockPositionChanged reports it."""
    return (
        sku.available,
        sku.waiting + sku.reserved,
        sku.reserved,
        sku.incoming,
        sku.next_eta() if sku.inbounds else None,
        sku.shortfall,
        promise(sku, today, grace_days),
    )


def position_report(state: AllocatorState, warehouse_id: str, sku: str) -> dict[str, Any]:
    """One SKU's position by name (tests, the I/O layer and operators)."""
    found = state.skus.get((warehouse_id, sku)) or SkuState(warehouse_id, sku)
    available, backordered, reserved, incoming, next_eta, shortfall, promise_eta = position(
        found, state.today, state.grace_days
    )
    return {
        "promise_eta": promise_eta,
        "available": available,
        "backordered": backordered,
        "reserved": reserved,
        "incoming": incoming,
        "next_eta": next_eta,
        "shortfall": shortfall,
    }


def coverable(sku: SkuState, units: int, today: date | None, grace_days: int) -> int:
    """How many of `units` new waiting units would get a date (their last one dated)."""
    scheduled = supply(sku, today, grace_days)
    if cover(scheduled, sku.waiting + units) is not None:
        return units
    total = sum(entry[2] for entry in scheduled)
    if total > sku.waiting and cover(scheduled, total) is not None:
        return min(units, total - sku.waiting)
    return 0


def recompute_sku_etas(
    sku: SkuState, mark: Mark, today: date | None = None, grace_days: int = 0
) -> None:
    """Walk the queue against scheduled supply; update lines' raw ETAs.

    A block nobody touched since the last walk whose first and last lines
    keep their dates keeps all of them: it is skipped in O(log inbounds).
    """
    queue = sku.queue
    if not queue:
        sku.any_covered = False
        if queue is not None:
            queue.clean()
        return
    scheduled = supply(sku, today, grace_days) if (sku.incoming or sku.release_date) else []
    if not scheduled and not sku.any_covered:
        queue.clean()  # no dates before, none now
        return
    etas = [entry[0] for entry in scheduled]
    ordered = None not in etas  # an overdue inbound breaks the order of dates
    # Skipping a block trusts its lines' dates to grow along it, as the last walk left them.
    trusted = ordered and not sku.dates_unordered
    any_covered = _walk_blocks(queue.blocks, scheduled, mark, trusted)
    queue.clean()
    sku.any_covered = any_covered
    sku.dates_unordered = not ordered


def _walk_blocks(
    blocks: Iterable[QueueBlock], scheduled: Supply, mark: Mark, monotonic: bool
) -> bool:
    """Date every block's lines against `scheduled`; whether any line is covered. Untouched
    blocks may be skipped only when `monotonic` (dates grow along the queue, before and now)."""
    # cumulative scheduled units at the end of each entry, and the entry's date
    ends: list[int] = list(accumulate(entry[2] for entry in scheduled))
    etas: list[date | None] = [entry[0] for entry in scheduled]
    total = ends[-1] if ends else 0
    any_covered = False
    cum = 0  # units waiting ahead of the current block
    for block in blocks:
        if not block.dirty and monotonic:
            kept = _kept_dates(block, cum, total, ends, etas)
            if kept is not None:
                cum += block.waiting
                any_covered = any_covered or kept
                continue
        cum, covered = _walk_block(block.entries, cum, total, ends, etas, mark)
        any_covered = any_covered or covered
    return any_covered


def _kept_dates(
    block: QueueBlock, cum: int, total: int, ends: list[int], etas: list[date | None]
) -> bool | None:
    """None if an untouched block's dates may have moved; else whether they are dates."""
    entries = block.entries
    first = entries[0][4]
    last = entries[-1][4]
    start = cum + first.waiting
    eta = etas[bisect_left(ends, start)] if start <= total else None
    if eta != first.raw_eta or eta != last.raw_eta:
        return None
    end = cum + block.waiting
    if (etas[bisect_left(ends, end)] if end <= total else None) != eta:
        return None
    return eta is not None


def _walk_block(
    entries: list[QueueEntry],
    cum: int,
    total: int,
    ends: list[int],
    etas: list[date | None],
    mark: Mark,
) -> tuple[int, bool]:
    """Date every line of a block; return the units waiting up to its end and if any is dated."""
    covered = False
    for entry in entries:
        line = entry[4]
        cum += line.waiting
        if cum <= total:
            eta = etas[bisect_left(ends, cum)]
            covered = covered or eta is not None
        else:
            eta = None
        if line.raw_eta != eta:
            line.raw_eta = eta
            mark(line.order)
    return cum, covered


def _recompute_tail(
    sku: SkuState, line: Line, mark: Mark, today: date | None, grace_days: int
) -> None:
    """Only `line` was appended at the queue tail since the last walk."""
    eta = (
        cover(supply(sku, today, grace_days), sku.waiting)
        if (sku.incoming or sku.release_date)
        else None
    )
    if line.raw_eta != eta:
        line.raw_eta = eta
        mark(line.order)
    if eta is not None:
        sku.any_covered = True
    sku.queue.clean()  # type: ignore[union-attr]  # every other line kept its date


def order_etas(order: Order) -> list[date | None]:
    """The ETA to report for each line of `order`, from the lines' raw ETAs."""
    if not order.complete:
        return [line.raw_eta if line.waiting else None for line in order.lines]
    # ship_complete: every open line ships with the last one to be covered.
    order_eta: date | None = None
    if order.waiting:
        for line in order.lines:
            if line.waiting:
                if line.raw_eta is None:
                    order_eta = None
                    break
                if order_eta is None or line.raw_eta > order_eta:
                    order_eta = line.raw_eta
    return [order_eta if (line.waiting or line.reserved) else None for line in order.lines]
