"""Full consistency check of an `AllocatorState` (O(state): for tests and `replay --verify`).

Checks only through public names: the ETAs are recomputed from scratch with
`eta.supply` / `eta.cover` / `eta.order_etas`, the queue's structure through
its public fields.
"""

from __future__ import annotations

from collections import defaultdict

from .eta import cover, order_etas, supply
from .eta import position as sku_position
from .queue import BackorderQueue, QueueEntry
from .state import AllocatorState, Line, Order, SkuState


class InvariantViolation(AssertionError):
    """The allocator state broke one of its invariants; `problems` lists them all."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems[:20]) + (" …" if len(problems) > 20 else ""))
        self.problems = problems


class _Tally:
    """What the open orders' lines add up to, checked against the SKUs and their queues."""

    def __init__(self) -> None:
        self.queued: dict[int, Line] = {}  # waiting lines not yet found in their queue
        self.waiting: dict[tuple[str, str], int] = defaultdict(int)
        self.reserved: dict[tuple[str, str], int] = defaultdict(int)


def invariant_problems(state: AllocatorState) -> list[str]:
    """Every broken invariant of `state`, one line each (empty: consistent)."""
    problems: list[str] = []
    tally = _Tally()
    for key, order in state.orders.items():
        _order_problems(state, key, order, tally, problems)
    for key, sku in state.skus.items():
        _sku_problems(state, key, sku, tally, problems)
    if tally.queued:
        problems.append(f"{len(tally.queued)} waiting lines missing from their queue")
    for key, inbound in state.inbounds.items():
        if not inbound.is_open():
            problems.append(f"inbound {key}: closed but kept open")
        for sku_name in inbound.skus:
            found = state.skus.get((key[0], sku_name))
            listed = found is not None and key[1] in found.inbounds
            if listed != (inbound.remaining(sku_name) > 0):
                problems.append(f"inbound {key}: sku {sku_name} listing mismatch")
    return problems


def check_invariants(state: AllocatorState) -> None:
    """Raise `InvariantViolation` listing every broken invariant of `state`."""
    problems = invariant_problems(state)
    if problems:
        raise InvariantViolation(problems)


# ---------------------------------------------------------------- orders


def _order_problems(
    state: AllocatorState, key: tuple[str, str], order: Order, tally: _Tally, problems: list[str]
) -> None:
    bad = problems.append
    name = f"order {key}"
    if key != (order.warehouse_id, order.order_id):
        bad(f"{name}: stored under the wrong key")
    if state.tombstones.has(*key):
        bad(f"{name}: open but tombstoned")
    if state.closed_orders.has(*key):
        bad(f"{name}: open but also closed")
    waiting = reserved = 0
    for line in order.lines:
        _line_problems(f"{name} line {line.line_no}", order, line, tally, problems)
        waiting += line.waiting
        reserved += line.reserved
    if waiting != order.waiting or reserved != order.reserved:
        bad(f"{name}: totals {order.waiting}/{order.reserved} != {waiting}/{reserved}")
    if not (waiting or reserved):
        bad(f"{name}: closed order kept in state")
    if order.complete and waiting == 0 and reserved:
        bad(f"{name}: ship_complete order fully covered but not shipped")
    _order_eta_problems(state, name, order, problems)


def _order_eta_problems(
    state: AllocatorState, name: str, order: Order, problems: list[str]
) -> None:
    """The lines' reported ETAs against a fresh recomputation, today and the release date."""
    bad = problems.append
    today = state.today
    for line, eta in zip(order.lines, order_etas(order), strict=True):
        if line.eta != eta:
            bad(f"{name} line {line.line_no}: reported ETA {line.eta} != {eta}")
        if line.eta is not None and today is not None and line.eta < today:
            bad(f"{name} line {line.line_no}: ETA {line.eta} is before today {today}")
        if line.waiting and line.eta is not None:
            sku = state.skus.get((order.warehouse_id, line.sku))
            if sku is not None and sku.held(today) and line.eta < sku.release_date:  # type: ignore[operator]
                bad(f"{name} line {line.line_no}: pre-order ETA {line.eta} before the release date")


def _line_problems(
    where: str, order: Order, line: Line, tally: _Tally, problems: list[str]
) -> None:
    bad = problems.append
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
        if line.qkey is None or line.qkey[4] is not line:
            bad(f"{where}: waiting but not queued")
        else:
            tally.queued[id(line)] = line
    elif line.qkey is not None or line.raw_eta is not None:
        bad(f"{where}: not waiting but still queued or with a raw ETA")
    sku_key = (order.warehouse_id, line.sku)
    tally.waiting[sku_key] += line.waiting
    tally.reserved[sku_key] += line.reserved


# ---------------------------------------------------------------- SKUs


def _sku_problems(
    state: AllocatorState, key: tuple[str, str], sku: SkuState, tally: _Tally, problems: list[str]
) -> None:
    name = f"sku {key}"
    _stock_problems(name, key, sku, tally, problems, sku.held(state.today))
    if sku.held(state.today) != (key in state.release_pending):
        problems.append(
            f"{name}: held {sku.held(state.today)} but release pending {key in state.release_pending}"
        )
    queue = list(sku.queue) if sku.queue is not None else []
    if sku.queue is not None:
        problems.extend(f"{name}: {p}" for p in _queue_problems(sku.queue))
    _queued_line_problems(name, key, queue, tally, problems)
    _incoming_problems(name, state, sku, problems)
    _eta_problems(name, state, sku, queue, problems)
    position = sku_position(sku, state.today, state.grace_days)
    if position != sku.last_position:
        problems.append(f"{name}: position {position} not reported (last {sku.last_position})")


def _stock_problems(
    name: str, key: tuple[str, str], sku: SkuState, tally: _Tally, problems: list[str], held: bool
) -> None:
    bad = problems.append
    if sku.available < 0 or sku.shortfall < 0:
        bad(f"{name}: negative available/shortfall")
    if sku.available and sku.waiting and not held:
        bad(f"{name}: {sku.available} available while {sku.waiting} units wait")
    if sku.waiting != tally.waiting.get(key, 0):
        bad(f"{name}: waiting {sku.waiting} != lines' {tally.waiting.get(key, 0)}")
    if sku.reserved != tally.reserved.get(key, 0):
        bad(f"{name}: reserved {sku.reserved} != lines' {tally.reserved.get(key, 0)}")
    inflow = sku.received_total + sku.positive_adjusted_total
    # Negative adjustments taken from stock: all of them but the shortfall still unpaid.
    taken = sku.negative_adjusted_total - sku.shortfall
    if sku.released_total > inflow - taken:
        bad(
            f"{name}: released {sku.released_total} > received + positive adjustments "
            f"- negative adjustments taken from stock {inflow - taken}"
        )
    booked = sku.available + sku.reserved + sku.released_total
    expected = inflow - sku.negative_adjusted_total + sku.shortfall
    if booked != expected:
        bad(f"{name}: stock not conserved ({booked} != {expected})")


def _queued_line_problems(
    name: str, key: tuple[str, str], queue: list[QueueEntry], tally: _Tally, problems: list[str]
) -> None:
    for entry in queue:
        line = entry[4]
        if tally.queued.pop(id(line), None) is not line or line.order.warehouse_id != key[0]:
            problems.append(f"{name}: queued line {entry[:4]} is not an open waiting line")
        if line.sku != key[1] or entry[:4] != (
            -line.order.priority,
            line.order.placed_us,
            line.order.order_id,
            line.line_no,
        ):
            problems.append(f"{name}: queue entry {entry[:4]} does not match its line")


def _incoming_problems(
    name: str, state: AllocatorState, sku: SkuState, problems: list[str]
) -> None:
    incoming = 0
    for inbound_id, inbound in sku.inbounds.items():
        remaining = inbound.remaining(sku.sku)
        if remaining <= 0:
            problems.append(f"{name}: inbound {inbound_id} listed without remaining units")
        if state.inbounds.get((sku.warehouse_id, inbound_id)) is not inbound:
            problems.append(f"{name}: inbound {inbound_id} not open in state")
        incoming += remaining
    if incoming != sku.incoming:
        problems.append(f"{name}: incoming {sku.incoming} != inbounds' {incoming}")


def _eta_problems(
    name: str, state: AllocatorState, sku: SkuState, queue: list[QueueEntry], problems: list[str]
) -> None:
    """The raw ETAs, recomputed from scratch (no block skipping)."""
    scheduled = supply(sku, state.today, state.grace_days)
    cum = 0
    any_covered = False
    for entry in queue:
        line = entry[4]
        if line.qkey is not entry or line.waiting <= 0:
            problems.append(f"{name}: queued line {entry[:4]} inconsistent")
        cum += line.waiting
        eta = cover(scheduled, cum)
        any_covered = any_covered or eta is not None
        if line.raw_eta != eta:
            problems.append(f"{name}: line {entry[:4]} raw ETA {line.raw_eta} != {eta}")
    if any_covered != sku.any_covered:
        problems.append(f"{name}: any_covered {sku.any_covered} != {any_covered}")


def _queue_problems(queue: BackorderQueue) -> list[str]:
    problems = []
    entries = list(queue)
    if len(entries) != len(queue):
        problems.append(f"size {len(queue)} != {len(entries)} entries")
    keys = [entry[:4] for entry in entries]
    if keys != sorted(keys) or len(set(keys)) != len(keys):
        problems.append("entries out of order or repeated")
    if len(queue.maxes) != len(queue.blocks):
        problems.append("maxes and blocks disagree")
    for index, block in enumerate(queue.blocks):
        if not block.entries:
            problems.append(f"block {index} is empty")
            continue
        if queue.maxes[index] is not block.entries[-1]:
            problems.append(f"block {index} max is stale")
        if block.waiting != sum(entry[4].waiting for entry in block.entries):
            problems.append(f"block {index} waiting sum is stale")
        if block.dirty:
            problems.append(f"block {index} still dirty after the command")
        if len(block.entries) > 2 * queue.load:
            problems.append(f"block {index} holds {len(block.entries)} entries")
    if queue.touched:
        problems.append("touched blocks not cleaned")
    return problems
