"""The simulation's state, set-up (catalogue, suppliers, hot SKUs) and envelopes."""

from __future__ import annotations

import heapq
import random
import uuid
from collections import deque
from datetime import datetime, timedelta
from itertools import accumulate
from typing import Any

from fulfil.simulation.data import (
    CATEGORIES,
    DAY,
    EMAIL_DOMAINS,
    LOCALES,
    NAMES,
    PRELUDE_DAYS,
    START,
    SUPPLIER_LEADS,
    SUPPLIERS,
    TRAFFIC_CUM,
    TRAFFIC_PER_DAY,
    UNITS_PER_ORDER,
    WAREHOUSES,
)
from fulfil.simulation.model import (
    SimRecord,
    _fold_ascii,
    _Order,
    _Supplier,
    _Warehouse,
)
from schemas.registry import encode


class _SimBase:
    def __init__(
        self, events: int, seed: int, warehouses: int, skus: int, invalid_rate: float
    ) -> None:
        if events < 0:
            raise ValueError("events must not be negative")
        if warehouses < 1 or skus < 1:
            raise ValueError("need at least one warehouse and one SKU")
        if not 0 <= invalid_rate <= 1:
            raise ValueError("invalid_rate must be between 0 and 1")
        self.events = events
        self.seed = seed
        self.invalid_rate = invalid_rate
        self.rng = random.Random(seed)
        self.tag = f"{seed}"
        self.counters: dict[str, int] = {}
        self.heap: list[tuple[int, int, int, Any]] = []
        self.seq = 0
        self.now = -PRELUDE_DAYS * DAY  # seconds since START
        self.skus = skus
        self.emitted = 0
        self.customers: dict[int, dict[str, Any]] = {}
        self.customer_pool = max(100, events // 6)
        self.recent: deque[_Order] = deque(maxlen=3_000)
        self.waiting: list[_Order] = []
        self.cancelled: deque[tuple[_Order, str]] = deque(maxlen=500)
        self.policies_set = False
        self.alerts: list[tuple[int, str]] = []  # (warehouse index, alert_id) still open
        self._catalogue(warehouses)

    # ------------------------------------------------------------ set-up

    def _next(self, name: str) -> int:
        self.counters[name] = self.counters.get(name, 0) + 1
        return self.counters[name]

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _at(self, seconds: int) -> datetime:
        return START + timedelta(seconds=seconds)

    def _schedule(self, at: int, kind: int, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (at, self.seq, kind, payload))

    def _catalogue(self, warehouses: int) -> None:
        rng = self.rng
        categories = [rng.choice(list(CATEGORIES)) for _ in range(self.skus)]
        self.sku_names = [f"{category}-{i + 1:04d}" for i, category in enumerate(categories)]
        self.base_price = [
            CATEGORIES[category] * rng.lognormvariate(0, 0.35) for category in categories
        ]
        zipf = [1.0 / (rank + 1) for rank in range(self.skus)]
        order = list(range(self.skus))
        rng.shuffle(order)  # SKU numbers do not tell popularity
        base = [0.0] * self.skus
        for rank, sku in enumerate(order):
            base[sku] = zipf[rank]
        self.top = order  # SKUs by global popularity
        shares = [1.0 / (i + 1) ** 0.6 for i in range(warehouses)]
        orders_per_day = TRAFFIC_PER_DAY * (TRAFFIC_CUM[0] / TRAFFIC_CUM[-1])
        self.warehouses: list[_Warehouse] = []
        for w in range(warehouses):
            name, currency = WAREHOUSES[w] if w < len(WAREHOUSES) else (f"wh-{w + 1:02d}", "EUR")
            wh = _Warehouse(w, name, currency, self.skus)
            wh.popularity = [b * rng.lognormvariate(0, 0.25) for b in base]
            total = sum(wh.popularity)
            units = orders_per_day * shares[w] / sum(shares) * UNITS_PER_ORDER
            wh.planned = [units * p / total for p in wh.popularity]
            wh.estimate = list(wh.planned)
            count = min(len(SUPPLIERS), 4 + rng.randrange(3))
            names = rng.sample(SUPPLIERS, count)
            for s in range(count):
                lead = SUPPLIER_LEADS[s % len(SUPPLIER_LEADS)] * rng.uniform(0.9, 1.2)
                wh.suppliers.append(_Supplier(names[s], lead, rng.choice((1.0, 1.0, 2.0, 3.0))))
            for sku in range(self.skus):
                supplier = rng.randrange(count)
                wh.supplier_of[sku] = supplier
                wh.suppliers[supplier].skus.append(sku)
            self._new_trend(wh, (3, 5))
            self.warehouses.append(wh)
        self.wh_cum = list(accumulate(sum(w.planned) for w in self.warehouses))

    # ------------------------------------------------------------ envelopes

    def _warehouse(self) -> _Warehouse:
        if len(self.warehouses) == 1:
            return self.warehouses[0]
        return self.rng.choices(self.warehouses, cum_weights=self.wh_cum)[0]

    def _customer(self) -> dict[str, Any]:
        rng = self.rng
        index = rng.randrange(self.customer_pool)
        found = self.customers.get(index)
        if found is not None:
            return found
        language, variants, _ = rng.choices(LOCALES, weights=[w for _, _, w in LOCALES])[0]
        firsts, lasts = NAMES[language]
        first, last = rng.choice(firsts), rng.choice(lasts)
        local = f"{_fold_ascii(first)}{rng.choice(('.', '_', '', '.'))}{_fold_ascii(last)}"
        if rng.random() < 0.4:
            local += str(rng.randrange(1, 100))
        customer = {
            "customer_id": f"cus-{self.tag}-{index + 1:06d}",
            "email": f"{local}@{rng.choice(EMAIL_DOMAINS)}",
            "name": f"{first} {last}" if rng.random() < 0.92 else None,
            "locale": rng.choice(variants) if rng.random() < 0.95 else None,
        }
        self.customers[index] = customer
        return customer

    def _envelope(
        self, model: Any, data: dict[str, Any], source: str, correlation_id: str | None = None
    ) -> tuple[str, bytes]:
        event_id = self._uuid()
        event = model.model_validate(
            {
                "id": event_id,
                "type": model.__name__,
                "version": 1,
                "occurred_at": self._at(self.now),
                "source": source,
                "correlation_id": correlation_id,
                "causation_id": None,
                "data": data,
            }
        )
        return event_id, encode(event)

    def _record(self, topic: str, wh: _Warehouse, value: bytes, type_: str) -> SimRecord:
        return SimRecord(topic, wh.key, value, type_, self._at(self.now))

    def _new_trend(self, wh: _Warehouse, count: tuple[int, int] = (2, 4)) -> None:
        """Rotate the hot SKUs of a warehouse: demand 2.5-5x the plan for a while."""
        rng = self.rng
        for sku in wh.hot:
            wh.multiplier[sku] = 0.3 if sku in wh.discontinued else 1.0
        pool = [
            s for s in self.top[1:40] if s not in wh.discontinued and s not in wh.unbackorderable
        ]
        wh.hot = rng.sample(pool, min(len(pool), rng.randint(*count)))
        for sku in wh.hot:
            wh.multiplier[sku] = rng.uniform(2.5, 5.0)
        wh.refresh()
