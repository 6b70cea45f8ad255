"""The ETA walk: when each waiting line can expect its units from scheduled supply.

A line's raw ETA is the ETA of the inbound covering its last waiting unit,
queue order first, so raw ETAs never decrease along a queue. What the
customer is told (`order_etas`) follows from the raw ETAs of the order's
lines and its policy.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from datetime import date

from .context import Context
from .queue import QueueBlock, QueueEntry
from .state import Line, Order, SkuState

Supply = list[tuple[date, str, int]]  # (eta, inbound_id, remaining units), soonest first
Mark = Callable[[Order], object]  # called with each order whose raw ETAs moved


def refresh(ctx: Context) -> None:
    """Bring the raw ETAs of every SKU this command changed up to date; mark moved orders."""
    mark = ctx.eta_orders.setdefault
    for sku, appended in ctx.eta_skus.items():
        queue = sku.queue
        if (
            appended is not None
            and appended.qkey is not None
            and queue is not None
            and queue.tail() is appended.qkey
        ):
            _recompute_tail(sku, appended, mark)
        else:
            recompute_sku_etas(sku, mark)


def supply(sku: SkuState) -> Supply:
    """The SKU's open inbounds' remaining units, soonest first."""
    name = sku.sku
    return sorted(
        (inbound.eta, inbound_id, inbound.remaining(name))
        for inbound_id, inbound in sku.inbounds.items()
    )


def cover(scheduled: Supply, units: int) -> date | None:
    """ETA of the `units`-th unit of scheduled supply (None if not scheduled)."""
    for eta, _inbound_id, remaining in scheduled:
        units -= remaining
        if units <= 0:
            return eta
    return None


def recompute_sku_etas(sku: SkuState, mark: Mark) -> None:
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
    total = sku.incoming
    if total == 0 and not sku.any_covered:
        queue.clean()  # no dates before, none now
        return
    ends: list[int] = []  # cumulative scheduled units at the end of each inbound
    etas: list[date] = []
    supplied = 0
    for eta, _inbound_id, remaining in supply(sku):
        supplied += remaining
        ends.append(supplied)
        etas.append(eta)
    any_covered = False
    cum = 0  # units waiting ahead of the current block
    for block in queue.blocks:
        if not block.dirty:
            kept = _kept_dates(block, cum, total, ends, etas)
            if kept is not None:
                cum += block.waiting
                any_covered = any_covered or kept
                continue
        cum, covered = _walk_block(block.entries, cum, total, ends, etas, mark)
        any_covered = any_covered or covered
    queue.clean()
    sku.any_covered = any_covered


def _kept_dates(
    block: QueueBlock, cum: int, total: int, ends: list[int], etas: list[date]
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
    entries: list[QueueEntry], cum: int, total: int, ends: list[int], etas: list[date], mark: Mark
) -> tuple[int, bool]:
    """Date every line of a block; return the units waiting up to its end and if any is dated."""
    covered = False
    for entry in entries:
        line = entry[4]
        cum += line.waiting
        if cum <= total:
            eta = etas[bisect_left(ends, cum)]
            covered = True
        else:
            eta = None
        if line.raw_eta != eta:
            line.raw_eta = eta
            mark(line.order)
    return cum, covered


def _recompute_tail(sku: SkuState, line: Line, mark: Mark) -> None:
    """Only `line` was appended at the queue tail since the last walk."""
    eta = cover(supply(sku), sku.waiting) if sku.incoming else None
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
