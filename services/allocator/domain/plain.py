"""`AllocatorState` <-> plain data (dicts, lists, str, int, bool, None): for snapshots.

Pure and I/O-free: the snapshot store encodes the plain form (JSON) and owns
the file format; this module owns the state's shape. Bump `STATE_FORMAT` when
that shape changes: snapshots of another shape are then discarded and the
partition is rebuilt from its log.

The state is a graph (a line points to its order and to its queue entry, the
entry back to the line; an inbound is shared by the partition and its SKUs),
so references are written as keys and rebuilt on load: queue entries as
(order_id, line index), SKU inbounds by id. Dates are day ordinals.

`state_from_plain` trusts nothing: any malformed input raises (`ValueError`,
`KeyError`, `TypeError`, ...), which the store turns into "unreadable
snapshot"; it does not check the state's invariants (see `check_invariants`).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from schemas.contract import Customer

from .memory import BoundedWindow, IdSet
from .queue import BackorderQueue, QueueBlock
from .state import (
    AllocatorState,
    Inbound,
    Line,
    Order,
    SkuState,
)

STATE_FORMAT = 3  # 2: today, release dates, backorder limits and modes, promise_eta;
# 3: applied changes, promised dates and consent, stock alerts

_to_day = date.toordinal
_from_day = date.fromordinal


def _day(value: date | None) -> int | None:
    return None if value is None else _to_day(value)


def _date(value: int | None) -> date | None:
    return None if value is None else _from_day(value)


# ---------------------------------------------------------------- to plain


def _order(order: Order) -> list[Any]:
    return [
        order.order_id,
        order.warehouse_id,
        order.customer.model_dump(),
        order.complete,
        order.priority,
        order.placed_us,
        order.waiting,
        order.reserved,
        [
            [
                line.line_no,
                line.sku,
                line.quantity,
                line.unit_price,
                line.currency,
                line.allocated,
                line.reserved,
                line.waiting,
                line.rejected,
                line.cancelled,
                line.reason,
                None if line.raw_eta is None else _to_day(line.raw_eta),
                None if line.eta is None else _to_day(line.eta),
                _day(line.promised),
                line.consent,
            ]
            for line in order.lines
        ],
        list(order.applied),
    ]


def _inbound(inbound: Inbound) -> list[Any]:
    return [
        inbound.warehouse_id,
        inbound.inbound_id,
        _to_day(inbound.eta),
        [[sku, scheduled, received] for sku, (scheduled, received) in inbound.skus.items()],
    ]


def _queue(queue: BackorderQueue) -> list[Any]:
    blocks = []
    for block in queue.blocks:
        refs: list[str | int] = []
        for entry in block.entries:
            line = entry[4]
            refs.append(entry[2])  # order_id (the SKU's warehouse is the order's)
            refs.append(line.order.lines.index(line))
        blocks.append([block.waiting, block.dirty, refs])
    return [queue.load, blocks]


def _sku(sku: SkuState) -> list[Any]:
    position: list[Any] = list(sku.last_position)
    position[4] = _day(sku.last_position[4])
    position[6] = _day(sku.last_position[6])
    return [
        sku.warehouse_id,
        sku.sku,
        sku.backorderable,
        sku.discontinued,
        sku.backorder_limit,
        sku.covered_only,
        _day(sku.release_date),
        sku.available,
        sku.shortfall,
        sku.waiting,
        sku.reserved,
        sku.incoming,
        None if sku.queue is None else _queue(sku.queue),
        list(sku.inbounds),
        sku.received_total,
        sku.positive_adjusted_total,
        sku.negative_adjusted_total,
        sku.released_total,
        position,
        sku.any_covered,
    ]


def _ids(ids: IdSet) -> dict[str, list[str]]:
    return {scope: list(keys) for scope, keys in ids.by_scope.items()}


def _marks(marks: dict[tuple[str, str], list[str]]) -> list[Any]:
    return [[wh, name, seen] for (wh, name), seen in marks.items()]


def state_to_plain(state: AllocatorState) -> dict[str, Any]:
    window = state.seen_events
    if any(value is not True for value in window._items.values()):
        raise ValueError("the envelope-id window holds more than presence")
    return {
        "format": STATE_FORMAT,
        "dedup_window": state.dedup_window,
        "grace_days": state.grace_days,
        "today": _day(state.today),
        "release_pending": [[wh, name] for wh, name in state.release_pending],
        "seen_events": [window.maxlen, window.keys()],
        "orders": [_order(order) for order in state.orders.values()],
        "inbounds": [_inbound(inbound) for inbound in state.inbounds.values()],
        "closed_inbounds": [_inbound(inbound) for inbound in state.closed_inbounds.values()],
        "skus": [_sku(sku) for sku in state.skus.values()],
        "closed_orders": _ids(state.closed_orders),
        "tombstones": _ids(state.tombstones),
        "seen_receipts": _ids(state.seen_receipts),
        "seen_adjustments": _ids(state.seen_adjustments),
        "inbound_events": _marks(state.inbound_events),
        "policy_events": _marks(state.policy_events),
        "consent_rule": state.consent_rule,
        "consent_due": [[wh, order_id] for wh, order_id in state.consent_due],
        "alerts": [
            [wh, sku, [[alert_id, customer.model_dump()] for alert_id, customer in waiting.items()]]
            for (wh, sku), waiting in state.alerts.items()
        ],
        "alerts_done": _ids(state.alerts_done),
    }


# ---------------------------------------------------------------- from plain


def _int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _str(value: Any) -> str:
    if type(value) is not str:
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise TypeError(f"expected a boolean, got {type(value).__name__}")
    return value


_CUSTOMER_FIELDS = frozenset(Customer.model_fields)


def _customer(raw: dict[str, Any]) -> Customer:
    # Validated when the order was placed; re-validating (email syntax) would
    # triple the load time. Types are still checked: a bad file fails here.
    if not _CUSTOMER_FIELDS.issuperset(raw) or not all(
        value is None or type(value) is str for value in raw.values()
    ):
        raise TypeError("a customer holds unexpected fields or values")
    return Customer.trusted(**raw)


def _load_order(raw: list[Any]) -> Order:
    order_id, wh, customer, complete, priority, placed_us, waiting, reserved, lines, applied = raw
    order = Order(
        _str(order_id),
        _str(wh),
        _customer(customer),
        _bool(complete),
        _int(priority),
        _int(placed_us),
    )
    order.waiting = _int(waiting)
    order.reserved = _int(reserved)
    order.applied = tuple(_str(change) for change in applied)
    for item in lines:
        (
            line_no,
            sku,
            quantity,
            unit_price,
            currency,
            allocated,
            line_reserved,
            line_waiting,
            rejected,
            cancelled,
            reason,
            raw_eta,
            eta,
            promised,
            consent,
        ) = item
        line = Line(
            order,
            _int(line_no),
            _str(sku),
            _int(quantity),
            _opt_str(unit_price),
            _opt_str(currency),
        )
        line.allocated = _int(allocated)
        line.reserved = _int(line_reserved)
        line.waiting = _int(line_waiting)
        line.rejected = _int(rejected)
        line.cancelled = _int(cancelled)
        line.reason = _opt_str(reason)
        line.raw_eta = _date(raw_eta)
        line.eta = _date(eta)
        line.promised = _date(None if promised is None else _int(promised))
        line.consent = _opt_str(consent)
        order.lines.append(line)
    return order


def _load_inbound(raw: list[Any]) -> Inbound:
    wh, inbound_id, eta, skus = raw
    inbound = Inbound(_str(wh), _str(inbound_id), _from_day(eta))
    for sku, scheduled, received in skus:
        inbound.skus[_str(sku)] = [_int(scheduled), _int(received)]
    return inbound


def _load_queue(raw: list[Any], wh: str, orders: dict[tuple[str, str], Order]) -> BackorderQueue:
    load, blocks = raw
    queue = BackorderQueue(_int(load))
    for waiting, dirty, refs in blocks:
        entries = []
        for i in range(0, len(refs), 2):
            order = orders[wh, refs[i]]
            line = order.lines[_int(refs[i + 1])]
            entry = (-order.priority, order.placed_us, order.order_id, line.line_no, line)
            line.qkey = entry
            entries.append(entry)
        if not entries:
            raise ValueError("an empty backorder queue block")
        block = QueueBlock(entries, _int(waiting))
        if _bool(dirty):
            block.dirty = True
            queue.touched.append(block)
        queue.blocks.append(block)
        queue.maxes.append(entries[-1])
        queue.size += len(entries)
    return queue


def _load_sku(
    raw: list[Any],
    orders: dict[tuple[str, str], Order],
    inbounds: dict[tuple[str, str], Inbound],
) -> SkuState:
    (
        wh,
        name,
        backorderable,
        discontinued,
        backorder_limit,
        covered_only,
        release_date,
        available,
        shortfall,
        waiting,
        reserved,
        incoming,
        queue,
        sku_inbounds,
        received_total,
        positive_adjusted_total,
        negative_adjusted_total,
        released_total,
        position,
        any_covered,
    ) = raw
    sku = SkuState(_str(wh), _str(name))
    sku.backorderable = _bool(backorderable)
    sku.discontinued = _bool(discontinued)
    sku.backorder_limit = None if backorder_limit is None else _int(backorder_limit)
    sku.covered_only = _bool(covered_only)
    sku.release_date = _date(None if release_date is None else _int(release_date))
    sku.available = _int(available)
    sku.shortfall = _int(shortfall)
    sku.waiting = _int(waiting)
    sku.reserved = _int(reserved)
    sku.incoming = _int(incoming)
    sku.queue = None if queue is None else _load_queue(queue, sku.warehouse_id, orders)
    for inbound_id in sku_inbounds:
        sku.inbounds[inbound_id] = inbounds[sku.warehouse_id, inbound_id]
    sku.received_total = _int(received_total)
    sku.positive_adjusted_total = _int(positive_adjusted_total)
    sku.negative_adjusted_total = _int(negative_adjusted_total)
    sku.released_total = _int(released_total)
    available_, backordered, reserved_, incoming_, next_eta, shortfall_, promise_eta = position
    sku.last_position = (
        _int(available_),
        _int(backordered),
        _int(reserved_),
        _int(incoming_),
        _date(next_eta),
        _int(shortfall_),
        _date(promise_eta),
    )
    sku.any_covered = _bool(any_covered)
    sku.dates_unordered = True  # not kept in snapshots: the first walk after a restore is whole
    return sku


def _load_ids(raw: dict[str, list[str]]) -> IdSet:
    ids = IdSet()
    for scope, keys in raw.items():
        if not all(type(key) is str for key in keys):
            raise TypeError("ids must be strings")
        ids.by_scope[_str(scope)] = set(keys)
    return ids


def _load_marks(raw: list[Any]) -> dict[tuple[str, str], list[str]]:
    marks = {}
    for wh, name, seen in raw:
        if not all(type(mark) is str for mark in seen):
            raise TypeError("statement marks must be strings")
        marks[_str(wh), _str(name)] = list(seen)
    return marks


def state_from_plain(plain: dict[str, Any]) -> AllocatorState:
    if plain.get("format") != STATE_FORMAT:
        raise ValueError(f"state format {plain.get('format')!r}, expected {STATE_FORMAT}")
    state = AllocatorState(_int(plain["dedup_window"]), _int(plain["grace_days"]))
    today = plain["today"]
    state.today = None if today is None else _from_day(_int(today))
    for wh, name in plain["release_pending"]:
        state.release_pending[_str(wh), _str(name)] = None
    maxlen, keys = plain["seen_events"]
    window = state.seen_events = BoundedWindow(_int(maxlen))
    for key in keys:
        window.add(_str(key))
    for raw in plain["orders"]:
        order = _load_order(raw)
        state.orders[order.key] = order
    for raw in plain["inbounds"]:
        inbound = _load_inbound(raw)
        state.inbounds[inbound.warehouse_id, inbound.inbound_id] = inbound
    for raw in plain["closed_inbounds"]:
        inbound = _load_inbound(raw)
        state.closed_inbounds[inbound.warehouse_id, inbound.inbound_id] = inbound
    every_inbound = {**state.closed_inbounds, **state.inbounds}
    for raw in plain["skus"]:
        sku = _load_sku(raw, state.orders, every_inbound)
        state.skus[sku.key] = sku
    state.closed_orders = _load_ids(plain["closed_orders"])
    state.tombstones = _load_ids(plain["tombstones"])
    state.seen_receipts = _load_ids(plain["seen_receipts"])
    state.seen_adjustments = _load_ids(plain["seen_adjustments"])
    state.inbound_events = _load_marks(plain["inbound_events"])
    state.policy_events = _load_marks(plain["policy_events"])
    state.consent_rule = _bool(plain["consent_rule"])
    for wh, order_id in plain["consent_due"]:
        state.consent_due[_str(wh), _str(order_id)] = None
    for wh, sku, waiting in plain["alerts"]:
        state.alerts[_str(wh), _str(sku)] = {
            _str(alert_id): _customer(customer) for alert_id, customer in waiting
        }
    state.alerts_done = _load_ids(plain["alerts_done"])
    return state
