"""Throughput and memory of the pure allocator core (no broker, one process).

    .venv/bin/python -m tests.services.allocator.domain.bench_decide [--events N] [--orders N]

1. folds a `mixed_stream(N)` through `decide` and reports commands/s;
2. folds N orders (~5 % of them backordered) and reports the state's RSS
   growth and pickled snapshot size.
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import random
import time
from datetime import timedelta

import psutil

from services.allocator.domain import check_invariants, decide, new_state

from .builders import Events
from .streams import mixed_stream


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


def orders_memory(orders: int, backordered: float = 0.05, seed: int = 1) -> dict:
    """`orders` single-line orders over 1 000 SKUs; about `backordered` of them wait."""
    rng = random.Random(seed)
    ev = Events(prefix="m", step=timedelta(milliseconds=10))
    process = psutil.Process()
    skus = [f"SKU-{i:05d}" for i in range(1_000)]
    state = new_state()
    # Stock for the ones that ship; backorders on SKUs that never get stock.
    out_of_stock = skus[:50]
    in_stock = skus[50:]
    for sku in in_stock:
        state, _ = decide(state, ev.stock_received("WH1", sku, 1_000_000))
    gc.collect()
    before = process.memory_info().rss
    started = time.perf_counter()
    batch = []
    for n in range(orders):
        sku = rng.choice(out_of_stock) if rng.random() < backordered else rng.choice(in_stock)
        batch.append(
            ev.order_placed(f"order-{n}", "WH1", [(sku, rng.randint(1, 3), "9.99", "EUR")])
        )
        if len(batch) == 10_000:
            for command in batch:
                state, _ = decide(state, command)
            batch.clear()
    for command in batch:
        state, _ = decide(state, command)
    elapsed = time.perf_counter() - started
    batch.clear()
    gc.collect()
    check_invariants(state)
    after = process.memory_info().rss
    started = time.perf_counter()
    snapshot = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    dumped = time.perf_counter() - started
    started = time.perf_counter()
    pickle.loads(snapshot)
    loaded = time.perf_counter() - started
    return {
        "orders": orders,
        "open_orders": len(state.orders),
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
