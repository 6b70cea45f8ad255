"""A seeded generator of realistic, valid, mixed allocator input streams.

`mixed_stream(n, seed)` returns `n` parsed input envelopes: about 60 % orders
(some multi-line, ~20 % ship_complete, a few high-priority), receipts (most
against scheduled inbounds), inbound schedules and re-schedules, supplier
delays, stock adjustments (both signs), cancellations (a few of unknown
orders, some of which are placed later: tombstones), SKU policy changes, and
~1 % re-deliveries (same envelope id, or same order/receipt under a new id).

Supply follows demand per SKU so that most orders ship at once and a few
percent wait, like a healthy store with some hot items. Same (n, seed, ...)
always yields the same events.
"""

from __future__ import annotations

import random
from datetime import timedelta
from itertools import accumulate
from typing import Any

from .inputs import START, Events

KIND_WEIGHTS = {
    "order": 60,
    "receipt": 17,
    "cancel": 5,
    "adjust": 5,
    "inbound": 4,
    "delay": 3,
    "policy": 1,
    "duplicate": 1,
    "early_cancel": 0.5,
}
PRICES = ["4.99", "12.50", "19.90", "49.00", "129.00"]


class _Sku:
    __slots__ = ("wh", "name", "net", "target", "stock")

    def __init__(self, wh: str, name: str, target: int) -> None:
        self.wh = wh
        self.name = name
        self.net = 0  # units supplied (or scheduled) minus units ordered, roughly
        self.target = target  # the stock level replenishment aims for
        self.stock = 0  # units received minus units ordered, roughly (negative: backorders)


def mixed_stream(
    n: int,
    seed: int = 0,
    warehouses: int = 3,
    skus_per_warehouse: int = 200,
    prefix: str | None = None,
) -> list[Any]:
    """`n` valid input envelopes; ids are prefixed with `prefix` (default `s{seed}`)."""
    rng = random.Random(seed)
    tag = prefix if prefix is not None else f"s{seed}"
    ev = Events(prefix=tag, start=START)
    whs = [f"WH{i + 1}" for i in range(warehouses)]
    weights = [1.0 / (i + 1) ** 1.1 for i in range(skus_per_warehouse)]
    cum = list(accumulate(weights))
    skus = {
        wh: [_Sku(wh, f"SKU-{i:04d}", 4 + int(100 * w)) for i, w in enumerate(weights)]
        for wh in whs
    }
    by_name = {(sku.wh, sku.name): sku for wh in whs for sku in skus[wh]}
    kinds = list(KIND_WEIGHTS)
    kind_cum = list(accumulate(KIND_WEIGHTS.values()))

    out: list[Any] = []
    orders: list[tuple[str, str]] = []  # (wh, order_id), most recent last
    inbounds: list[list[Any]] = []  # [wh, inbound_id, eta, {sku: remaining}]
    early: list[tuple[str, str]] = []  # cancelled before placement, may be placed later
    waiting: list[tuple[str, str]] = []  # orders placed while a SKU of theirs ran short
    counter = 0

    def pick_sku(wh: str) -> _Sku:
        return rng.choices(skus[wh], cum_weights=cum)[0]

    def pick_low(wh: str) -> _Sku:
        """Replenishment: of a few popular SKUs, the one furthest below its target."""
        candidates = rng.choices(skus[wh], cum_weights=cum, k=3) + rng.choices(skus[wh], k=3)
        return min(candidates, key=lambda s: s.net - s.target)

    # Opening stock: a receipt per popular SKU.
    for wh in whs:
        for sku in skus[wh]:
            if len(out) >= n:
                break
            qty = sku.target + rng.randint(0, 10)
            sku.net += qty
            sku.stock += qty
            out.append(
                ev.stock_received(wh, sku.name, qty, receipt_id=f"{tag}-open-{wh}-{sku.name}")
            )

    while len(out) < n:
        counter += 1
        ev.step = timedelta(seconds=rng.randint(1, 30))
        kind = rng.choices(kinds, cum_weights=kind_cum)[0]
        wh = rng.choice(whs)

        if kind == "order" or (kind == "cancel" and not orders):
            if early and rng.random() < 0.2:
                wh, order_id = early.pop(0)
            else:
                order_id = f"{tag}-o{counter}"
            lines = []
            used: list[_Sku] = []
            for _ in range(rng.choices((1, 2, 3), weights=(60, 30, 10))[0]):
                sku = pick_sku(wh)
                if sku in used:
                    continue
                used.append(sku)
                qty = rng.choices((1, 2, 3, 5, 10), weights=(50, 25, 12, 8, 5))[0]
                sku.net -= qty
                sku.stock -= qty
                if rng.random() < 0.8:
                    lines.append((sku.name, qty, rng.choice(PRICES), "EUR"))
                else:
                    lines.append((sku.name, qty))
            priority = rng.choice((1, 5, 10)) if rng.random() < 0.05 else 0
            policy = "ship_complete" if rng.random() < 0.2 else "ship_partial"
            out.append(ev.order_placed(order_id, wh, lines, policy=policy, priority=priority))
            orders.append((wh, order_id))
            if len(orders) > 5_000:
                del orders[:1_000]
            if any(sku.stock < 0 for sku in used):  # probably backordered
                waiting.append((wh, order_id))
                if len(waiting) > 1_000:
                    del waiting[:200]

        elif kind == "cancel":
            if waiting and rng.random() < 0.7:  # customers mostly cancel what does not ship
                wh, order_id = waiting.pop(rng.randrange(len(waiting)))
            else:
                wh, order_id = orders[-1 - min(len(orders) - 1, int(rng.expovariate(1 / 200)))]
            out.append(ev.order_cancelled(order_id, wh, reason="customer changed their mind"))

        elif kind == "early_cancel":
            order_id = f"{tag}-early{counter}"
            early.append((wh, order_id))
            out.append(ev.order_cancelled(order_id, wh, reason="duplicate checkout"))

        elif kind == "receipt":
            open_here = [ib for ib in inbounds if ib[0] == wh and ib[3]]
            if open_here and rng.random() < 0.8:
                inbound = open_here[0] if rng.random() < 0.6 else rng.choice(open_here)
                sku_name = next(iter(inbound[3]))
                remaining = inbound[3][sku_name]
                qty = remaining if rng.random() < 0.8 else max(1, remaining + rng.randint(-5, 5))
                del inbound[3][sku_name]
                by_name[wh, sku_name].stock += qty
                out.append(ev.stock_received(wh, sku_name, qty, inbound_id=inbound[1]))
            else:
                sku = pick_low(wh)
                qty = max(1, sku.target - sku.net + rng.randint(-5, 10))
                sku.net += qty
                sku.stock += qty
                out.append(ev.stock_received(wh, sku.name, qty))
            inbounds[:] = [ib for ib in inbounds if ib[3]]

        elif kind == "inbound":
            existing = [ib for ib in inbounds if ib[0] == wh]
            if existing and rng.random() < 0.1:
                inbound = rng.choice(existing)  # re-scheduled: new quantities, maybe new date
                for sku_name in inbound[3]:
                    inbound[3][sku_name] = max(1, inbound[3][sku_name] + rng.randint(-3, 10))
                inbound[2] = inbound[2] + timedelta(days=rng.randint(-2, 5))
            else:
                lines_map: dict[str, int] = {}
                for _ in range(rng.randint(1, 3)):
                    sku = pick_low(wh)
                    if sku.name in lines_map:
                        continue
                    qty = max(5, sku.target - sku.net + rng.randint(0, 20))
                    sku.net += qty
                    lines_map[sku.name] = qty
                eta = (ev.clock + timedelta(days=rng.randint(3, 30))).date()
                inbound = [wh, f"{tag}-in{counter}", eta, lines_map]
                inbounds.append(inbound)
            out.append(ev.inbound_scheduled(inbound[1], wh, list(inbound[3].items()), inbound[2]))

        elif kind == "delay":
            existing = [ib for ib in inbounds if ib[0] == wh]
            if existing:
                inbound = rng.choice(existing)
                inbound[2] = inbound[2] + timedelta(days=rng.randint(1, 14))
                out.append(
                    ev.shipment_delayed(inbound[1], wh, inbound[2], reason="port congestion")
                )
            else:  # a delay for an inbound this allocator never heard of
                out.append(ev.shipment_delayed(f"{tag}-ghost{counter}", wh, ev.clock.date()))

        elif kind == "adjust":
            sku = pick_sku(wh)
            delta = rng.choice((-3, -2, -1, -1, 1, 2, 4))
            sku.net += delta
            sku.stock += delta
            out.append(ev.stock_adjusted(wh, sku.name, delta, reason="cycle count"))

        elif kind == "policy":
            sku = rng.choice(skus[wh][skus_per_warehouse // 4 :])  # never the top sellers
            roll = rng.random()
            out.append(
                ev.sku_policy_set(
                    wh, sku.name, backorderable=roll >= 0.4, discontinued=0.4 <= roll < 0.55
                )
            )

        elif kind == "duplicate" and out:
            original = out[rng.randrange(max(0, len(out) - 500), len(out))]
            if rng.random() < 0.5:
                out.append(original)  # redelivery: same envelope id
            else:  # an upstream retry with a fresh envelope id, same business key
                out.append(original.model_copy(update={"id": f"{tag}-dup{counter}"}))

    return out[:n]
