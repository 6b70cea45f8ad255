"""Purchasing and receiving: the open purchase-order book, reviews, delays, receipts,
disruptions, cancelled inbounds, clock ticks and mid-stream SKU policies."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from typing import Any

from fulfil.simulation.base import _SimBase
from fulfil.simulation.data import (
    _COUNT,
    _DELAY,
    _DISRUPTION,
    _PO_CANCEL,
    _PO_EMIT,
    _PO_REVIEW,
    _RECEIPT,
    _STUCK,
    _TICK,
    _TREND,
    DAY,
    DELAY_REASONS,
    PO_CANCEL_RATE,
    PO_CANCEL_REASONS,
    PRELUDE_DAYS,
    SHOP_TZ,
    START,
    STUCK_POS,
)
from fulfil.simulation.model import (
    SimRecord,
    _Inbound,
    _pack,
    _Supplier,
    _Warehouse,
)
from schemas.contract import (
    ClockTicked,
    InboundCancelled,
    InboundScheduled,
    ShipmentDelayed,
    SkuPolicySet,
    StockAdjusted,
    StockReceived,
)
from schemas.registry import COMMANDS, INVENTORY


class _Supply(_SimBase):
    def _prelude(self) -> None:
        """The open purchase-order book (placed over the last 30 days) and the opening count."""
        rng = self.rng
        self._order_book()
        self._stuck_orders()
        # Today, for the allocator core: a tick every six simulated hours.
        for quarter in range(0, 12):
            self._schedule(quarter * DAY // 4, _TICK, None)
        self._opening_count()
        self._schedule(rng.randrange(11 * 3600, 16 * 3600), _DISRUPTION, None)

    def _order_book(self) -> None:
        """Each supplier's purchase orders of the last 30 days still due, and its next review."""
        rng = self.rng
        for wh in self.warehouses:
            for supplier in wh.suppliers:
                day = -rng.randrange(1, int(supplier.period) + 1)
                while day >= -PRELUDE_DAYS:
                    at = day * DAY + rng.randrange(9 * 3600, 17 * 3600)
                    lead = min(30.0, max(3.0, supplier.lead * rng.uniform(0.9, 1.1)))
                    eta = (self._at(at) + timedelta(days=lead)).date()
                    if eta >= START.date():
                        lines = {}
                        for sku in supplier.skus:
                            units = wh.planned[sku] * supplier.period * rng.uniform(0.85, 1.15)
                            if units >= 1 or rng.random() < units:
                                lines[sku] = _pack(max(1, round(units)))
                        if lines:
                            self._schedule(at, _PO_EMIT, (wh, supplier, lines, eta))
                    day -= int(supplier.period)
                supplier.last_review = 0
                self._schedule(rng.randrange(9 * 3600, 17 * 3600), _PO_REVIEW, (wh, supplier))

    def _stuck_orders(self) -> None:
        """A few purchase orders are stuck at the supplier: their ETA passed days ago and
        nothing arrived. The midnight tick that opens trading makes them overdue."""
        rng = self.rng
        for wh in self.warehouses:
            for _ in range(STUCK_POS):
                # Mostly hot SKUs: customers are waiting for them when the date lapses.
                sku = rng.choice(wh.hot) if wh.hot else rng.randrange(self.skus)
                supplier = wh.suppliers[wh.supplier_of[sku]]
                at = -rng.randrange(12, 20) * DAY + rng.randrange(9 * 3600, 17 * 3600)
                # Due three days before trading: within the grace until the first UTC midday.
                eta = (START - timedelta(days=3)).date()
                self._schedule(
                    at,
                    _STUCK,
                    (wh, supplier, {sku: _pack(max(1, round(wh.planned[sku] * 2)))}, eta),
                )

    def _opening_count(self) -> None:
        """The opening stock count, an hour before trading starts, and each warehouse's
        first demand trend."""
        rng = self.rng
        opening = -3600
        for wh in self.warehouses:
            for sku in range(self.skus):
                supplier = wh.suppliers[wh.supplier_of[sku]]
                units = (
                    wh.planned[sku] * (supplier.period + supplier.safety) * rng.uniform(0.8, 1.3)
                )
                if sku in wh.hot:  # it has been flying off the shelf: little left
                    units = wh.planned[sku] * rng.uniform(0.05, 0.35)
                units = round(units) if units >= 1 else int(rng.random() < units * 2)
                if units:
                    wh.available[sku] = units
                    self._schedule(opening, _COUNT, (wh, sku, units))
            self._schedule(rng.randrange(DAY // 2, 3 * DAY), _TREND, wh)

    def _scheduled(self, kind: int, payload: Any) -> list[SimRecord]:
        if kind == _RECEIPT:
            return self._receipt(*payload)
        if kind == _PO_EMIT:
            wh, supplier, lines, eta = payload
            return [self._inbound(wh, supplier, lines, eta)]
        if kind == _PO_REVIEW:
            return self._review(*payload)
        if kind == _DELAY:
            return self._delay(*payload)
        if kind == _DISRUPTION:
            self._schedule(self.now + self.rng.randrange(DAY, 3 * DAY), _DISRUPTION, None)
            return self._disruption()
        if kind == _COUNT:
            return [self._count(*payload)]
        if kind == _PO_CANCEL:
            return self._cancel_inbound(*payload)
        if kind == _TICK:
            return [self._tick()]
        if kind == _STUCK:
            wh, supplier, lines, eta = payload
            return [self._inbound(wh, supplier, lines, eta, stuck=True)]
        if kind == _TREND:
            self._new_trend(payload)
            self._schedule(self.now + self.rng.randrange(2 * DAY, 4 * DAY), _TREND, payload)
        return []

    # ------------------------------------------------------------ purchasing

    def _midnight(self, day: date) -> int:
        return int((datetime.combine(day, datetime.min.time(), SHOP_TZ) - START).total_seconds())

    def _inbound(
        self,
        wh: _Warehouse,
        supplier: _Supplier,
        lines: dict[int, int],
        eta: date,
        stuck: bool = False,
    ) -> SimRecord:
        rng = self.rng
        inbound_id = f"po-{self.tag}-{self._next('po'):05d}"
        data = {
            "inbound_id": inbound_id,
            "warehouse_id": wh.name,
            "lines": [{"sku": self.sku_names[sku], "quantity": qty} for sku, qty in lines.items()],
            "eta": eta,
            "supplier": supplier.name,
        }
        event_id, value = self._envelope(InboundScheduled, data, "purchasing-erp")
        inbound = _Inbound(inbound_id, wh.index, supplier, event_id, eta)
        inbound.outstanding = dict(lines)
        for sku, qty in lines.items():
            wh.incoming[sku] += qty
        if stuck:  # never arrives, nobody says so: only the clock makes it overdue
            return self._record(INVENTORY, wh, value, "InboundScheduled")
        # Receiving: the truck is unloaded line by line on the ETA date.
        at = rng.randrange(7 * 3600, 16 * 3600)
        for sku, qty in lines.items():
            at += rng.randrange(30, 240)
            roll = rng.random()
            if roll < 0.08 and qty > 1:  # short delivery: the rest follows days later, or never
                first = max(1, int(qty * rng.uniform(0.4, 0.9)))
                follows = rng.random() < 0.7
                inbound.plan.append((at, sku, first, not follows))
                if follows:
                    inbound.plan.append((at + rng.randrange(1, 5) * DAY, sku, qty - first, True))
            else:
                inbound.plan.append(
                    (at, sku, qty + max(1, qty // 20) if roll > 0.98 else qty, True)
                )
        self._plan_receipts(wh, inbound)
        supplier.open.append(inbound)
        # Some purchase orders are cancelled before they arrive (supplier out of stock).
        if rng.random() < PO_CANCEL_RATE:
            latest = self._unloading(inbound) - 3600
            if latest > self.now + 3600:
                self._schedule(rng.randrange(self.now + 3600, latest), _PO_CANCEL, (wh, inbound))
        # Some shipments are late: the supplier says so some days before the date.
        if rng.random() < 0.15:
            due = self._midnight(eta) - 6 * 3600
            earliest = self.now + DAY // 2
            if due > earliest:
                announced = max(rng.randrange(earliest, due), rng.randrange(earliest, due))
                self._schedule(
                    announced, _DELAY, (wh, inbound, self._delay_days(), rng.choice(DELAY_REASONS))
                )
        return self._record(INVENTORY, wh, value, "InboundScheduled")

    def _plan_receipts(self, wh: _Warehouse, inbound: _Inbound) -> None:
        midnight = self._midnight(inbound.eta)
        inbound.pending = len(inbound.plan)
        for offset, sku, qty, last in inbound.plan:
            self._schedule(
                midnight + offset,
                _RECEIPT,
                ("inbound", wh, sku, qty, inbound, last, inbound.version),
            )

    def _unloading(self, inbound: _Inbound) -> int:
        """When the first receipt of `inbound` is due."""
        return self._midnight(inbound.eta) + inbound.plan[0][0]

    def _cancel_inbound(self, wh: _Warehouse, inbound: _Inbound) -> list[SimRecord]:
        """The supplier cancels the purchase order: its planned receipts never come."""
        if inbound.started:
            return []
        inbound.version += 1  # drops the receipts planned for it
        inbound.pending = 0
        for sku, left in inbound.outstanding.items():
            wh.incoming[sku] -= left
        inbound.outstanding = dict.fromkeys(inbound.outstanding, 0)
        if inbound in inbound.supplier.open:
            inbound.supplier.open.remove(inbound)
        data = {
            "inbound_id": inbound.inbound_id,
            "warehouse_id": wh.name,
            "reason": self.rng.choice(PO_CANCEL_REASONS),
            "cancelled_at": self._at(self.now),
        }
        _, value = self._envelope(InboundCancelled, data, "purchasing-erp", inbound.event_id)
        return [self._record(INVENTORY, wh, value, "InboundCancelled")]

    def _tick(self) -> SimRecord:
        """ClockTicked for the allocator core (written to every command partition)."""
        _, value = self._envelope(ClockTicked, {"now": self._at(self.now)}, "fulfil-clock")
        return SimRecord(COMMANDS, b"", value, "ClockTicked", self._at(self.now))

    def _delay_days(self) -> int:
        return self.rng.choices((1, 2, 3, 4, 5, 7, 10, 14), (10, 12, 10, 7, 5, 3, 1, 1))[0]

    def _review(self, wh: _Warehouse, supplier: _Supplier) -> list[SimRecord]:
        """Purchasing's periodic review: order up to target from smoothed demand.

        SKUs with customers waiting go on a separate express shipment (air
        freight, 3-6 days) when the supplier's usual lead time is longer.
        """
        rng = self.rng
        days = max(0.25, (self.now - supplier.last_review) / DAY)
        supplier.last_review = self.now
        lines: dict[int, int] = {}
        express: dict[int, int] = {}
        for sku in supplier.skus:
            observed = wh.observed[sku] / days
            wh.observed[sku] = 0
            wh.estimate[sku] = 0.6 * wh.estimate[sku] + 0.4 * observed
            if sku in wh.discontinued:
                continue
            target = wh.estimate[sku] * (supplier.lead + supplier.period + supplier.safety)
            position = wh.available[sku] - wh.backlog[sku] + wh.incoming[sku]
            need = target - position
            if need > 0.5 and need >= 0.25 * wh.estimate[sku] * supplier.period:
                urgent = wh.backlog[sku] > 0 and supplier.lead > 6
                (express if urgent else lines)[sku] = _pack(math.ceil(need))
        next_at = self.now + int(supplier.period * DAY) + rng.randrange(-2 * 3600, 2 * 3600)
        self._schedule(next_at, _PO_REVIEW, (wh, supplier))
        records = []
        for chosen, lead in (
            (lines, supplier.lead * rng.uniform(0.9, 1.1)),
            (express, rng.uniform(3, 6)),
        ):
            if chosen:
                eta = (self._at(self.now) + timedelta(days=min(30.0, max(3.0, lead)))).date()
                records.append(self._inbound(wh, supplier, chosen, eta))
        return records

    def _delay(
        self, wh: _Warehouse, inbound: _Inbound, days: int, reason: str, again: bool = True
    ) -> list[SimRecord]:
        """A supplier delay: the ETA moves `days` later and so does the receiving."""
        if inbound.started or not inbound.pending or self._unloading(inbound) <= self.now:
            return []
        inbound.eta += timedelta(days=days)
        inbound.version += 1
        self._plan_receipts(wh, inbound)
        data = {
            "inbound_id": inbound.inbound_id,
            "warehouse_id": wh.name,
            "new_eta": inbound.eta,
            "reason": reason,
        }
        _, value = self._envelope(ShipmentDelayed, data, "purchasing-erp", inbound.event_id)
        rng = self.rng
        if again and rng.random() < 0.2:  # and sometimes once more
            due = self._midnight(inbound.eta) - 6 * 3600
            earliest = self.now + DAY // 2
            if due > earliest:
                self._schedule(
                    rng.randrange(earliest, due),
                    _DELAY,
                    (wh, inbound, self._delay_days(), reason, False),
                )
        return [self._record(INVENTORY, wh, value, "ShipmentDelayed")]

    def _disruption(self) -> list[SimRecord]:
        """A port strike, a factory outage: every open shipment of one supplier due soon is late."""
        rng = self.rng
        wh = rng.choice(self.warehouses)
        supplier = rng.choice(wh.suppliers)
        reason = rng.choice(DELAY_REASONS)
        short = [(w, sku) for w in self.warehouses for sku in w.hot if w.backlog[sku] > 0]
        if short and rng.random() < 0.85:  # a demand surge stretches its supplier
            wh, sku = rng.choice(short)
            supplier = wh.suppliers[wh.supplier_of[sku]]
            reason = "supplier capacity shortage"
        late = self._due_soon(supplier)
        days = self._delay_days()
        records = []
        if late and reason == "supplier capacity shortage" and rng.random() < 0.3:
            # The supplier gives up on one of them: the purchase order is cancelled.
            records.extend(self._cancel_inbound(wh, late.pop(0)))
        for inbound in late:
            records.extend(
                self._delay(wh, inbound, days + rng.randrange(0, 2), reason, again=False)
            )
        return records

    def _due_soon(self, supplier: _Supplier) -> list[_Inbound]:
        """The supplier's open shipments due within six days whose unloading has not begun."""
        supplier.open = [i for i in supplier.open if i.pending]
        horizon = self.now + 6 * DAY
        return [
            i
            for i in supplier.open
            if not i.started and self._unloading(i) > self.now and self._midnight(i.eta) <= horizon
        ]

    def _count(self, wh: _Warehouse, sku: int, qty: int) -> SimRecord:
        """The opening stock count."""
        data = {
            "adjustment_id": f"adj-{self.tag}-{self._next('adj'):06d}",
            "warehouse_id": wh.name,
            "sku": self.sku_names[sku],
            "delta": qty,
            "reason": "opening stock count",
        }
        _, value = self._envelope(StockAdjusted, data, f"wms-{wh.name}")
        return self._record(INVENTORY, wh, value, "StockAdjusted")

    def _receipt(
        self,
        how: str,
        wh: _Warehouse,
        sku: int,
        qty: int,
        inbound: _Inbound | None = None,
        last: bool = True,
        version: int = 0,
    ) -> list[SimRecord]:
        if inbound is not None:
            if version != inbound.version:
                return []  # planned for an ETA that moved
            inbound.started = True
            inbound.pending -= 1
        data = {
            "receipt_id": f"rcv-{self.tag}-{self._next('rcv'):06d}",
            "warehouse_id": wh.name,
            "sku": self.sku_names[sku],
            "quantity": qty,
            "inbound_id": inbound.inbound_id if inbound else None,
            "received_at": self._at(self.now),
        }
        _, value = self._envelope(
            StockReceived, data, f"wms-{wh.name}", inbound.event_id if inbound else None
        )
        if inbound is not None:
            left = inbound.outstanding.get(sku, 0)
            done = left if last else min(left, qty)
            inbound.outstanding[sku] = left - done
            wh.incoming[sku] -= done
        self._add_stock(wh, sku, qty)
        return [self._record(INVENTORY, wh, value, "StockReceived")]

    def _add_stock(self, wh: _Warehouse, sku: int, qty: int) -> None:
        queue = wh.queue[sku]
        while qty and queue:
            order, line = queue[0]
            if order.cancelled or not line[2]:
                queue.popleft()
                continue
            take = min(qty, line[2])
            line[2] -= take
            order.waiting -= take
            wh.backlog[sku] -= take
            qty -= take
            if not line[2]:
                queue.popleft()
        wh.available[sku] += qty

    def _policies(self) -> list[SimRecord]:
        """Mid-stream, per warehouse: one SKU no longer backorderable, one discontinued, one
        capped (backorder_limit), one covered_only, one pre-order (release_date)."""
        rng = self.rng
        records = []
        for wh in self.warehouses:
            candidates = [s for s in wh.hot if s not in wh.discontinued] or self.top[:10]
            closed = candidates[0]
            others = [s for s in self.top[10:60] if s not in wh.hot and s != closed] or [
                s for s in self.top if s != closed
            ]
            gone = rng.choice(others) if others else closed
            for sku, backorderable, discontinued in ((closed, False, False), (gone, False, True)):
                records.append(self._policy_record(wh, sku, backorderable, discontinued, {}))
            for sku, fields in self._merchandising(wh, closed, gone):
                records.append(self._policy_record(wh, sku, True, False, fields))
            wh.unbackorderable.add(closed)
            wh.discontinued.add(gone)
            wh.multiplier[gone] = 0.3  # still listed on some channels for a while
            wh.refresh()
        return records

    def _merchandising(
        self, wh: _Warehouse, closed: int, gone: int
    ) -> list[tuple[int, dict[str, Any]]]:
        """A hot SKU capped at a few units on backorder, another sold only as far as purchase
        orders cover it, and a SKU announced as a pre-order (release in two days: its stock
        is held until then)."""
        rng = self.rng
        hot = [s for s in wh.hot if s not in (closed, gone)]
        capped = hot[0] if hot else None
        covered = hot[1] if len(hot) > 1 else None
        later = [s for s in self.top[60:120] if s not in (closed, gone, capped, covered)]
        pre_order = rng.choice(later) if later else None
        extra: list[tuple[int, dict[str, Any]]] = []
        if capped is not None:
            extra.append((capped, {"backorder_limit": rng.randrange(2, 8)}))
        if covered is not None:
            extra.append((covered, {"backorder_mode": "covered_only"}))
        if pre_order is not None:
            release = (self._at(self.now) + timedelta(days=2)).date()
            extra.append((pre_order, {"release_date": release}))
        return extra

    def _policy_record(
        self,
        wh: _Warehouse,
        sku: int,
        backorderable: bool,
        discontinued: bool,
        fields: dict[str, Any],
    ) -> SimRecord:
        data = {
            "warehouse_id": wh.name,
            "sku": self.sku_names[sku],
            "backorderable": backorderable,
            "discontinued": discontinued,
            **fields,
        }
        _, value = self._envelope(SkuPolicySet, data, "pim")
        return self._record(INVENTORY, wh, value, "SkuPolicySet")
