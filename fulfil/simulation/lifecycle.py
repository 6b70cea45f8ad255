"""Customers changing their orders after placement: part cancels, policy switches,
consent to a later date, and back-in-stock alerts (asked for and withdrawn)."""

from __future__ import annotations

from fulfil.simulation.data import WAIT_CANCEL_REASONS
from fulfil.simulation.model import SimRecord, _Order
from fulfil.simulation.supply import _Supply
from schemas.contract import (
    BackorderConsentGiven,
    OrderLinesCancelled,
    OrderPolicyChanged,
    StockAlertCancelled,
    StockAlertRequested,
)
from schemas.registry import ORDERS


class _Lifecycle(_Supply):
    def _waiting_order(self) -> _Order | None:
        """A random order still waiting for units, or None."""
        rng = self.rng
        for _ in range(4):
            if not self.waiting:
                return None
            order = self.waiting[rng.randrange(len(self.waiting))]
            if order.waiting and not order.cancelled:
                return order
        return None

    def _part_cancel(self) -> SimRecord | None:
        """ "Keep the lamp, drop the chairs still on backorder": part of a waiting line."""
        order = self._waiting_order()
        if order is None:
            return None
        rng = self.rng
        wh = self.warehouses[order.wh]
        waiting = [(n, entry) for n, entry in enumerate(order.lines, start=1) if entry[2]]
        number, entry = rng.choice(waiting)
        # Mostly what waits, sometimes more than that (the allocator says what it could not).
        quantity = entry[2] if rng.random() < 0.7 else entry[2] + rng.randint(1, 2)
        data = {
            "order_id": order.order_id,
            "warehouse_id": wh.name,
            "lines": [{"line_no": number * order.step, "quantity": quantity}],
            "reason": rng.choice(WAIT_CANCEL_REASONS),
            "cancelled_at": self._at(self.now),
        }
        _, value = self._envelope(OrderLinesCancelled, data, "shop-web", order.event_id)
        taken = min(entry[2], quantity)
        entry[2] -= taken
        order.waiting -= taken
        wh.backlog[entry[0]] -= taken
        return self._record(ORDERS, wh, value, "OrderLinesCancelled")

    def _switch(self) -> SimRecord | None:
        """A ship_complete customer tired of waiting takes what is there (or the reverse)."""
        order = self._waiting_order()
        if order is None:
            return None
        wh = self.warehouses[order.wh]
        order.complete = not order.complete
        data = {
            "order_id": order.order_id,
            "warehouse_id": wh.name,
            "fulfilment_policy": "ship_complete" if order.complete else "ship_partial",
        }
        _, value = self._envelope(OrderPolicyChanged, data, "shop-web", order.event_id)
        return self._record(ORDERS, wh, value, "OrderPolicyChanged")

    def _consent(self) -> SimRecord | None:
        order = self._waiting_order()
        if order is None:
            return None
        wh = self.warehouses[order.wh]
        data = {"order_id": order.order_id, "warehouse_id": wh.name, "lines": None}
        _, value = self._envelope(BackorderConsentGiven, data, "shop-web", order.event_id)
        return self._record(ORDERS, wh, value, "BackorderConsentGiven")

    def _alert(self) -> SimRecord:
        """Mostly for a SKU a customer could not order; sometimes for any SKU."""
        rng = self.rng
        wh = self._warehouse()
        closed = sorted(wh.unbackorderable | wh.discontinued)
        if closed and rng.random() < 0.8:
            sku = rng.choice(closed)
        else:
            sku = rng.choices(range(self.skus), cum_weights=wh.cum)[0]
        alert_id = f"alert-{self.tag}-{self._next('alert'):06d}"
        data = {
            "alert_id": alert_id,
            "warehouse_id": wh.name,
            "sku": self.sku_names[sku],
            "customer": self._customer(),
        }
        _, value = self._envelope(StockAlertRequested, data, "shop-web")
        self.alerts.append((wh.index, alert_id))
        return self._record(ORDERS, wh, value, "StockAlertRequested")

    def _unalert(self) -> SimRecord | None:
        if not self.alerts:
            return None
        index, alert_id = self.alerts.pop(self.rng.randrange(len(self.alerts)))
        wh = self.warehouses[index]
        data = {"alert_id": alert_id, "warehouse_id": wh.name}
        _, value = self._envelope(StockAlertCancelled, data, "shop-web")
        return self._record(ORDERS, wh, value, "StockAlertCancelled")
