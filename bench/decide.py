"""Throughput and memory of the pure allocator core (no broker, one process).

    .venv/bin/python -m bench.decide [--events N] [--orders N]

1. folds a `mixed_stream(N)` through `decide` and reports commands/s;
2. folds N orders (~5 % of them backordered) and reports the state's RSS
   growth and snapshot size (the snapshot store's file format).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import psutil

from services.allocator.adapters.snapshot_store import decode_snapshot, encode_snapshot
from services.allocator.domain import check_invariants, decide, new_state
from services.allocator.service_layer.partition import Snapshot
from tests.builders.inputs import Events
from tests.builders.streams import mixed_stream


def throughput(events: int, seed: int) -> dict:
    stream = mixed_stream(events, seed=seed)
    state = new_state()
    outputs = 0
    gc.collect()
    started = time.perf_counter()
    for command in stream:
        state, produced = decide(state, command)
        outputs += len(produced)
    elapsed = time.perf_counter() - started
    check_invariants(state)
    return {
        "events": events,
        "seconds": round(elapsed, 3),
        "commands_per_s": round(events / elapsed),
        "outputs": outputs,
        "state": state.stats(),
    }


def memory_workload(
    orders: int, backordered: float = 0.05, seed: int = 1, warehouses: Sequence[str] = ("WH1",)
) -> tuple[list[Any], Iterator[Any]]:
    """The memory benchmark's inputs: stock receipts first, then `orders` single-line orders.

    1 000 SKUs; the first 50 never get stock, so the ~`backordered` share of orders
    placed on them stay backordered. Orders go round-robin over `warehouses`, each
    of which receives stock for the other 950 SKUs. Orders are built lazily.
    """
    rng = random.Random(seed)
    ev = Events(prefix="m", step=timedelta(milliseconds=10))
    skus = [f"SKU-{i:05d}" for i in range(1_000)]
    out_of_stock = skus[:50]
    in_stock = skus[50:]
    stock = [ev.stock_received(wh, sku, 1_000_000) for wh in warehouses for sku in in_stock]

    def placed() -> Iterator[Any]:
        for n in range(orders):
            sku = rng.choice(out_of_stock) if rng.random() < backordered else rng.choice(in_stock)
            yield ev.order_placed(
                f"order-{n}",
                warehouses[n % len(warehouses)],
                [(sku, rng.randint(1, 3), "9.99", "EUR")],
            )

    return stock, placed()


def orders_memory(orders: int, backordered: float = 0.05, seed: int = 1) -> dict:
    """`orders` single-line orders over 1 000 SKUs; about `backordered` of them wait."""
    process = psutil.Process()
    stock, placed = memory_workload(orders, backordered, seed)
    state = new_state()
    # Stock for the ones that ship; backorders on SKUs that never get stock.
    for command in stock:
        state, _ = decide(state, command)
    del stock
    gc.collect()
    before = process.memory_info().rss
    started = time.perf_counter()
    batch = []
    for command in placed:
        batch.append(command)
        if len(batch) == 10_000:
            for queued in batch:
                state, _ = decide(state, queued)
            batch.clear()
    for queued in batch:
        state, _ = decide(state, queued)
    elapsed = time.perf_counter() - started
    batch.clear()
    gc.collect()
    check_invariants(state)
    after = process.memory_info().rss
    started = time.perf_counter()
    snapshot = encode_snapshot(Snapshot(state))
    dumped = time.perf_counter() - started
    started = time.perf_counter()
    decode_snapshot(snapshot)
    loaded = time.perf_counter() - started
    return {
        "orders": orders,
        "open_orders": len(state.orders),
        "closed_order_ids": len(state.closed_orders),
        "rss_growth_mb": round((after - before) / 2**20, 1),
        "rss_total_mb": round(after / 2**20, 1),
        "snapshot_mb": round(len(snapshot) / 2**20, 1),
        "snapshot_dump_s": round(dumped, 2),
        "snapshot_load_s": round(loaded, 2),
        "seconds_incl_building_events": round(elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    result = {}
    if args.events:
        result["throughput"] = throughput(args.events, args.seed)
    if args.orders:
        result["memory"] = orders_memory(args.orders)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
