"""Full consistency check of an `AllocatorState` (O(state): for tests and `replay --verify`)."""

from __future__ import annotations

from collections import defaultdict

from .rules import _cover, _supply, order_etas
from .state import TOMBSTONE, AllocatorState


class InvariantViolation(AssertionError):
    """The allocator state broke one of its invariants; `problems` lists them all."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems[:20]) + (" …" if len(problems) > 20 else ""))
        self.problems = problems


def invariant_problems(state: AllocatorState) -> list[str]:
    problems: list[str] = []
    bad = problems.append

    waiting_by_sku: dict[tuple[str, str], int] = defaultdict(int)
    reserved_by_sku: dict[tuple[str, str], int] = defaultdict(int)
    for key, order in state.orders.items():
        name = f"order {key}"
        if key != (order.warehouse_id, order.order_id):
            bad(f"{name}: stored under the wrong key")
        if state.seen_orders.get(key) == TOMBSTONE:
            bad(f"{name}: open but tombstoned")
        waiting = reserved = 0
        for line in order.lines:
            where = f"{name} line {line.line_no}"
            parts = (line.allocated, line.reserved, line.waiting, line.rejected, line.cancelled)
            if min(parts) < 0:
                bad(f"{where}: negative quantity {parts}")
            if sum(parts) != line.quantity:
                bad(f"{where}: {parts} do not add up to {line.quantity}")
            if line.reserved and not order.complete:
                bad(f"{where}: ship_partial line holds a reservation")
            if line.rejected and line.reason is None:
                bad(f"{where}: rejected without a reason")
            if line.waiting:
                sku = state.skus.get((order.warehouse_id, line.sku))
                if sku is None or line.qkey is None or sku.waiters.get(line.qkey) is not line:
                    bad(f"{where}: waiting but not queued")
            elif line.qkey is not None or line.raw_eta is not None:
                bad(f"{where}: not waiting but still queued or with a raw ETA")
            waiting += line.waiting
            reserved += line.reserved
            waiting_by_sku[(order.warehouse_id, line.sku)] += line.waiting
            reserved_by_sku[(order.warehouse_id, line.sku)] += line.reserved
        if waiting != order.waiting or reserved != order.reserved:
            bad(f"{name}: totals {order.waiting}/{order.reserved} != {waiting}/{reserved}")
        if not (waiting or reserved):
            bad(f"{name}: closed order kept in state")
        if order.complete and waiting == 0 and reserved:
            bad(f"{name}: ship_complete order fully covered but not shipped")
        for line, eta in zip(order.lines, order_etas(order), strict=True):
            if line.eta != eta:
                bad(f"{name} line {line.line_no}: reported ETA {line.eta} != {eta}")

    for key, sku in state.skus.items():
        name = f"sku {key}"
        if sku.available < 0 or sku.shortfall < 0:
            bad(f"{name}: negative available/shortfall")
        if sku.available and sku.waiting:
            bad(f"{name}: {sku.available} available while {sku.waiting} units wait")
        if sku.waiting != waiting_by_sku.get(key, 0):
            bad(f"{name}: waiting {sku.waiting} != lines' {waiting_by_sku.get(key, 0)}")
        if sku.reserved != reserved_by_sku.get(key, 0):
            bad(f"{name}: reserved {sku.reserved} != lines' {reserved_by_sku.get(key, 0)}")
        inflow = sku.received_total + sku.positive_adjusted_total
        if sku.released_total > inflow:
            bad(f"{name}: released {sku.released_total} > received + adjusted {inflow}")
        booked = sku.available + sku.reserved + sku.released_total
        expected = inflow - sku.negative_adjusted_total + sku.shortfall
        if booked != expected:
            bad(f"{name}: stock not conserved ({booked} != {expected})")
        queue = list(sku.queue) if sku.queue is not None else []
        if len(queue) != len(sku.waiters) or any(k not in sku.waiters for k in queue):
            bad(f"{name}: queue and waiters disagree")
        incoming = 0
        for inbound_id, inbound in sku.inbounds.items():
            remaining = inbound.remaining(sku.sku)
            if remaining <= 0:
                bad(f"{name}: inbound {inbound_id} listed without remaining units")
            if state.inbounds.get((sku.warehouse_id, inbound_id)) is not inbound:
                bad(f"{name}: inbound {inbound_id} not open in state")
            incoming += remaining
        if incoming != sku.incoming:
            bad(f"{name}: incoming {sku.incoming} != inbounds' {incoming}")
        # ETAs from scratch.
        supply = _supply(sku)
        cum = 0
        for qkey in queue:
            line = sku.waiters[qkey]
            if line.qkey != qkey or line.waiting <= 0:
                bad(f"{name}: queued line {qkey} inconsistent")
            cum += line.waiting
            eta = _cover(supply, cum)
            if line.raw_eta != eta:
                bad(f"{name}: line {qkey} raw ETA {line.raw_eta} != {eta}")
            if eta is not None and sku.last_covered is not None and qkey > sku.last_covered:
                bad(f"{name}: covered line {qkey} behind last_covered {sku.last_covered}")
        if sku.position() != sku.last_position:
            bad(f"{name}: position {sku.position()} not reported (last {sku.last_position})")

    for key, inbound in state.inbounds.items():
        if not inbound.is_open():
            bad(f"inbound {key}: closed but kept open")
        for sku_name in inbound.skus:
            listed = key[1] in state.skus.get((key[0], sku_name), _EMPTY).inbounds
            if listed != (inbound.remaining(sku_name) > 0):
                bad(f"inbound {key}: sku {sku_name} listing mismatch")
    return problems


class _Empty:
    inbounds: dict = {}


_EMPTY = _Empty()


def check_invariants(state: AllocatorState) -> None:
    """Raise `InvariantViolation` listing every broken invariant of `state`."""
    problems = invariant_problems(state)
    if problems:
        raise InvariantViolation(problems)
