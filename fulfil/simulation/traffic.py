"""The stream itself: the event loop, customer traffic (orders, cancellations, adjustments,
transfers) and invalid input."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from random import Random
from typing import Any, NamedTuple

import orjson

from fulfil.simulation.data import (
    ADJUST_REASONS,
    CANCEL_REASONS,
    DAY,
    FOREIGN,
    HOURLY,
    INVALID_KINDS,
    INVALID_WEIGHTS,
    LINE_COUNT_W,
    LINE_COUNTS,
    ORDER_SOURCE_WEIGHTS,
    ORDER_SOURCES,
    QUANTITIES,
    QUANTITY_W,
    TRAFFIC_CUM,
    TRAFFIC_KINDS,
    TRAFFIC_PER_DAY,
    WAIT_CANCEL_REASONS,
)
from fulfil.simulation.lifecycle import _Lifecycle
from fulfil.simulation.model import (
    SimRecord,
    _Order,
    _price,
    _Warehouse,
)
from schemas.contract import (
    OrderCancelled,
    OrderPlaced,
    StockAdjusted,
)
from schemas.registry import INVENTORY, ORDERS


class _Simulation(_Lifecycle):
    def run(self) -> Iterator[SimRecord]:
        if self.events == 0:
            return
        self._prelude()
        traffic_at = 0
        rng = self.rng
        while True:
            if not self.policies_set and self.emitted >= self.events // 2 and self.now >= 0:
                self.policies_set = True
                for record in self._policies():
                    yield from self._out(record)
                    if self.emitted >= self.events:
                        return
            if self.heap and self.heap[0][0] <= traffic_at:
                at, _, kind, payload = heapq.heappop(self.heap)
                self.now = max(self.now, at)
                records = self._scheduled(kind, payload)
            else:
                self.now = traffic_at
                hour = (traffic_at // 3600) % 24
                traffic_at += max(0, round(rng.expovariate(HOURLY[hour] * TRAFFIC_PER_DAY / DAY)))
                records = self._traffic()
            for record in records:
                yield from self._out(record)
                if self.emitted >= self.events:
                    return

    def _out(self, record: SimRecord) -> Iterator[SimRecord]:
        if (
            self.invalid_rate
            and self.rng.random() < self.invalid_rate
            and self.emitted < self.events - 1
        ):
            self.emitted += 1
            yield self._invalid()
        self.emitted += 1
        yield record

    # ------------------------------------------------------------ traffic

    def _traffic(self) -> list[SimRecord]:
        rng = self.rng
        kind = rng.choices(TRAFFIC_KINDS, cum_weights=TRAFFIC_CUM)[0]
        if kind == "cancel":
            record = self._cancel()
            if record is not None:
                return [record]
            kind = "order"
        if kind in _CHANGES:
            changed = _CHANGES[kind](self)
            return [changed] if changed is not None else [self._order()]
        if kind == "adjust":
            return [self._adjust()]
        if kind == "transfer":
            return [self._transfer()]
        return [self._order()]

    def _order(self) -> SimRecord:
        rng = self.rng
        wh = self._warehouse()
        customer = self._customer()
        currency = wh.currency if rng.random() < 0.88 else rng.choice(FOREIGN)
        priced = rng.random() < 0.97
        step = 10 if rng.random() < 0.05 else 1  # some upstream systems number lines 10, 20, 30
        chosen = self._chosen_skus(wh)
        complete = rng.random() < 0.2
        roll = rng.random()
        priority = 10 if roll < 0.02 else 5 if roll < 0.035 else 0
        order_id = f"ord-{self.tag}-{self._next('order'):07d}"
        lines = self._lines(chosen, step, currency if priced else None)
        data = {
            "order_id": order_id,
            "warehouse_id": wh.name,
            "customer": customer,
            "lines": lines,
            "fulfilment_policy": "ship_complete" if complete else "ship_partial",
            "priority": priority,
            "placed_at": self._at(self.now),
        }
        source = rng.choices(ORDER_SOURCES, ORDER_SOURCE_WEIGHTS)[0]
        event_id, value = self._envelope(OrderPlaced, data, source)
        order = _Order(order_id, wh.index, event_id, complete, step)
        self._take_stock(wh, order, lines, chosen)
        self.recent.append(order)
        if order.waiting:
            self.waiting.append(order)
            if len(self.waiting) > 2_000:
                self.waiting = [o for o in self.waiting if o.waiting and not o.cancelled][-1_500:]
        return self._record(ORDERS, wh, value, "OrderPlaced")

    def _chosen_skus(self, wh: _Warehouse) -> list[int]:
        chosen: list[int] = []
        for _ in range(self.rng.choices(LINE_COUNTS, LINE_COUNT_W)[0]):
            sku = self.rng.choices(range(self.skus), cum_weights=wh.cum)[0]
            if sku not in chosen:
                chosen.append(sku)
        return chosen

    def _lines(self, chosen: list[int], step: int, currency: str | None) -> list[dict[str, Any]]:
        """The order's lines; priced in `currency` unless it is None."""
        lines = []
        for number, sku in enumerate(chosen, start=1):
            line: dict[str, Any] = {
                "line_no": number * step,
                "sku": self.sku_names[sku],
                "quantity": self.rng.choices(QUANTITIES, QUANTITY_W)[0],
            }
            if currency is not None:
                line["unit_price"] = _price(self.base_price[sku], currency)
                line["currency"] = currency
            lines.append(line)
        return lines

    def _take_stock(
        self, wh: _Warehouse, order: _Order, lines: list[dict[str, Any]], chosen: list[int]
    ) -> None:
        """Mirror the allocator: take what is available, queue the rest when it may wait."""
        for line, sku in zip(lines, chosen, strict=True):
            qty = line["quantity"]
            wh.observed[sku] += qty
            take = min(qty, wh.available[sku])
            wh.available[sku] -= take
            rest = qty - take
            entry = [sku, qty, 0]
            order.lines.append(entry)
            if rest and sku not in wh.discontinued and sku not in wh.unbackorderable:
                entry[2] = rest
                order.waiting += rest
                wh.backlog[sku] += rest
                wh.queue[sku].append((order, entry))

    def _cancel(self) -> SimRecord | None:
        rng = self.rng
        roll = rng.random()
        order = None
        reason = rng.choice(CANCEL_REASONS)
        if roll < 0.65:  # customers mostly cancel what does not ship
            while self.waiting and order is None:
                candidate = self.waiting.pop(rng.randrange(len(self.waiting)))
                if candidate.waiting and not candidate.cancelled:
                    order = candidate
                    reason = rng.choice(WAIT_CANCEL_REASONS)
        elif roll < 0.97 and self.recent:
            candidate = self.recent[-1 - min(len(self.recent) - 1, int(rng.expovariate(1 / 150)))]
            if not candidate.cancelled:
                order = candidate
        elif self.cancelled:  # an upstream re-send of a cancellation, under a new envelope id
            order, reason = self.cancelled[rng.randrange(len(self.cancelled))]
        if order is None:
            return None
        wh = self.warehouses[order.wh]
        data = {
            "order_id": order.order_id,
            "warehouse_id": wh.name,
            "reason": reason,
            "cancelled_at": self._at(self.now),
        }
        _, value = self._envelope(OrderCancelled, data, "shop-web", order.event_id)
        if not order.cancelled:
            order.cancelled = True
            for sku, _, waiting in order.lines:
                wh.backlog[sku] -= waiting
            order.waiting = 0
            self.cancelled.append((order, reason))
        return self._record(ORDERS, wh, value, "OrderCancelled")

    def _adjust(self) -> SimRecord:
        rng = self.rng
        wh = self._warehouse()
        sku = rng.choices(range(self.skus), cum_weights=wh.cum)[0]
        roll = rng.random()
        if roll < 0.55:
            delta = rng.choices((-3, -2, -1, 1, 2, 3), (1, 2, 4, 3, 2, 1))[0]
            reason = rng.choice(ADJUST_REASONS["count"])
        elif roll < 0.85:
            delta = -rng.choice((1, 1, 2))
            reason = rng.choice(ADJUST_REASONS["damage"])
        else:
            delta = rng.choice((1, 1, 2))
            reason = ADJUST_REASONS["return"][0]
        if delta < 0 and wh.available[sku] < -delta and rng.random() < 0.95:
            if wh.available[sku]:
                delta = -wh.available[sku]  # you cannot damage what is not on the shelf
            else:
                delta, reason = -delta, "found during cycle count"
        data = {
            "adjustment_id": f"adj-{self.tag}-{self._next('adj'):06d}",
            "warehouse_id": wh.name,
            "sku": self.sku_names[sku],
            "delta": delta,
            "reason": reason,
        }
        _, value = self._envelope(StockAdjusted, data, f"wms-{wh.name}")
        if delta > 0:
            self._add_stock(wh, sku, delta)
        else:
            wh.available[sku] = max(0, wh.available[sku] + delta)
        return self._record(INVENTORY, wh, value, "StockAdjusted")

    def _transfer(self) -> SimRecord:
        """Units transferred in from another site: no inbound, to the SKU that waits most."""
        rng = self.rng
        wh = self._warehouse()
        candidates = rng.choices(range(self.skus), cum_weights=wh.cum, k=6)
        sku = max(candidates, key=lambda s: (wh.backlog[s], -wh.available[s]))
        qty = max(1, wh.backlog[sku] + round(wh.estimate[sku] * rng.uniform(0.3, 1.0)))
        return self._receipt("transfer", wh, sku, qty)[0]

    # ------------------------------------------------------------ invalid input

    def _invalid(self) -> SimRecord:
        rng = self.rng
        wh = self._warehouse()
        kind = rng.choices(INVALID_KINDS, INVALID_WEIGHTS)[0]
        at = self._at(self.now).isoformat()
        order = self.recent[-1 - rng.randrange(min(len(self.recent), 50))] if self.recent else None
        order_id = order.order_id if order else f"ord-{self.tag}-x{self._next('bad'):05d}"
        if order is not None:
            wh = self.warehouses[order.wh]
        sku = self.sku_names[rng.choices(range(self.skus), cum_weights=wh.cum)[0]]
        valid = self._valid_inputs(wh, order_id, sku, at)
        topic, value = _SPOILERS[kind](rng, valid)
        return SimRecord(topic, wh.key, value, f"invalid:{kind}", self._at(self.now))

    def _valid_inputs(self, wh: _Warehouse, order_id: str, sku: str, at: str) -> _Valid:
        """A valid cancellation, receipt and order, for the invalid input to spoil."""
        rng = self.rng
        base: dict[str, Any] = {
            "id": self._uuid(),
            "version": 1,
            "occurred_at": at,
            "source": "shop-web",
            "correlation_id": None,
            "causation_id": None,
        }
        cancel: dict[str, Any] = {
            **base,
            "type": "OrderCancelled",
            "data": {
                "order_id": order_id,
                "warehouse_id": wh.name,
                "reason": "customer request",
                "cancelled_at": at,
            },
        }
        receipt: dict[str, Any] = {
            **base,
            "type": "StockReceived",
            "source": f"wms-{wh.name}",
            "data": {
                "receipt_id": f"rcv-{self.tag}-x{self._next('bad'):05d}",
                "warehouse_id": wh.name,
                "sku": sku,
                "quantity": rng.randint(1, 40),
                "inbound_id": None,
                "received_at": at,
            },
        }
        placed: dict[str, Any] = {
            **base,
            "type": "OrderPlaced",
            "data": {
                "order_id": f"ord-{self.tag}-x{self._next('bad'):05d}",
                "warehouse_id": wh.name,
                "customer": self._customer(),
                "fulfilment_policy": "ship_partial",
                "priority": 0,
                "lines": [
                    {
                        "line_no": 1,
                        "sku": sku,
                        "quantity": 1,
                        "unit_price": "19.99",
                        "currency": "EUR",
                    }
                ],
                "placed_at": at,
            },
        }
        return _Valid(cancel, receipt, placed)


_CHANGES: dict[str, Callable[[_Simulation], SimRecord | None]] = {
    "part_cancel": _Simulation._part_cancel,
    "switch": _Simulation._switch,
    "consent": _Simulation._consent,
    "alert": _Simulation._alert,
    "unalert": _Simulation._unalert,
}


class _Valid(NamedTuple):
    cancel: dict[str, Any]
    receipt: dict[str, Any]
    placed: dict[str, Any]


def _topic_of(doc: dict[str, Any]) -> str:
    return ORDERS if doc["type"].startswith("Order") else INVENTORY


def _bad_json(rng: Random, valid: _Valid) -> tuple[str, bytes]:
    doc = rng.choice(valid)
    text = orjson.dumps(doc)
    variant = rng.random()
    if variant < 0.6:  # cut off mid-message
        value = text[: rng.randrange(8, len(text) - 2)]
    elif variant < 0.8:  # a trailing comma
        value = text[:-1] + b",}"
    else:  # a Python repr instead of JSON
        value = repr(doc).encode()
    return _topic_of(doc), value


def _unknown_type(rng: Random, valid: _Valid) -> tuple[str, bytes]:
    cancel, receipt, _ = valid
    doc = rng.choice(
        (
            {**cancel, "type": "OrderUpdated"},
            {**receipt, "type": "InventorySnapshot"},
            {**cancel, "type": "OrderRefunded"},
        )
    )
    return _topic_of(doc), orjson.dumps(doc)


def _schema_violation(rng: Random, valid: _Valid) -> tuple[str, bytes]:
    cancel, receipt, placed = valid
    variant = rng.randrange(6)
    if variant == 0:  # a cancellation without a reason
        data = dict(cancel["data"])
        del data["reason"]
        doc = {**cancel, "data": data}
    elif variant == 1:
        doc = {
            **placed,
            "data": {
                **placed["data"],
                "customer": {**placed["data"]["customer"], "email": "not-an-email"},
            },
        }
    elif variant == 2:
        doc = {
            **placed,
            "data": {
                **placed["data"],
                "lines": [{**placed["data"]["lines"][0], "currency": "EURO"}],
            },
        }
    elif variant == 3:
        doc = {**placed, "data": {**placed["data"], "lines": []}}
    elif variant == 4:
        doc = {**receipt, "data": {**receipt["data"], "received_at": "yesterday"}}
    else:
        doc = {**cancel, "version": 2}
    return _topic_of(doc), orjson.dumps(doc)


def _bad_quantity(rng: Random, valid: _Valid) -> tuple[str, bytes]:
    """A negative quantity."""
    _, receipt, placed = valid
    if rng.random() < 0.6:
        doc = {**receipt, "data": {**receipt["data"], "quantity": -rng.randint(1, 20)}}
        return INVENTORY, orjson.dumps(doc)
    line = {**placed["data"]["lines"][0], "quantity": -rng.randint(1, 3)}
    doc = {**placed, "data": {**placed["data"], "lines": [line]}}
    return ORDERS, orjson.dumps(doc)


# How each kind of invalid input spoils a valid one: (base topic, the bytes sent).
_SPOILERS: dict[str, Callable[[Random, _Valid], tuple[str, bytes]]] = {
    "bad_json": _bad_json,
    "unknown_type": _unknown_type,
    "schema_violation": _schema_violation,
    "bad_quantity": _bad_quantity,
}
