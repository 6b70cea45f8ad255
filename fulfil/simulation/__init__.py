"""A seeded, reproducible simulator of realistic store traffic (`fulfil simulate`).

    values = simulate(events=20_000, seed=1)          # list[bytes], in publish order
    records = simulate_records(events=20_000, seed=1)  # [(topic, key, value)], key = warehouse_id
    for record in generate(...): ...                  # SimRecord one by one (flat memory)

What it models (a small discrete-event simulation; no wall clock, one
`random.Random(seed)`, no set iteration, so the same arguments give
byte-identical output in any process):

- **Catalogue and demand.** `skus` SKUs (a category prefix and a number,
  priced by category) stocked in each of `warehouses` warehouses, with
  Zipf-like demand: a few SKUs sell most units. A few SKUs per warehouse are
  *hot* (demand 2.5–5x what purchasing planned, and little left on the shelf
  when the stream starts); the hot set rotates every two to four days.
- **Traffic.** Orders arrive with a daily rhythm (quiet at night, busy in the
  evening): one to four lines, prices in the warehouse's currency (some in the
  customer's; a few orders without prices), ~20 % `ship_complete`, a few with
  priority 5 or 10, returning customers with names, addresses on example.com /
  .org / .net only, and locales (mostly en and de, some fr, nl, it, es, pl,
  sv; a few without). About 20 k messages make one simulated day.
- **Purchasing.** Each warehouse buys from four to six suppliers, each with
  its own lead time (ETA 3–30 days after the InboundScheduled) and order
  cycle; a planner orders up to a target from smoothed observed demand, with
  an express shipment (3–6 days) for SKUs that customers wait for. Receipts
  arrive on the ETA date, line by line, mostly in full; some lines short (the
  rest days later, or never) or slightly over. About 15 % of shipments are
  late (ShipmentDelayed, 1–14 days, sometimes twice), and every one to three
  days a supplier disruption delays all its shipments due within six days —
  often the supplier of a hot SKU ("supplier capacity shortage").
- **Start of the stream.** The open purchase-order book (InboundScheduled
  over the previous 30 days whose ETA is not past) and an opening stock count
  (one positive StockAdjusted per warehouse and SKU, an hour before trading)
  come first: about 1 k messages with the defaults.
- **Operations.** Cycle counts, damage and restocked returns (StockAdjusted,
  both signs), transfers in without an inbound, cancellations (mostly of
  orders still waiting, some of them partly shipped; some too late to stop
  anything; a few upstream re-sends), and mid-stream one SKU per warehouse made
  non-backorderable, one discontinued, one capped (backorder_limit), one
  covered_only and one announced as a pre-order (release_date in two days)
  (SkuPolicySet). Negative counts beyond what is on the shelf take reserved units
  (shrinkage).
- **Supply going wrong.** About 4 % of purchase orders are cancelled before
  they arrive (InboundCancelled); two open purchase orders per warehouse are
  stuck at the supplier, past their ETA; a `ClockTicked` every six simulated
  hours (type ClockTicked, topic allocator.commands.v1, empty key: an internal
  command, which `fulfil publish` refuses; `fulfil simulate --publish`
  (`fulfil/simulation/publish.py`) writes it to every command partition) makes
  those overdue.
- **Bad input.** About `invalid_rate` of the messages are invalid per the
  contract — bad JSON, unknown type, schema violation, negative quantity — so
  the router dead-letters them. Some of them name a real order.

Stock follows demand, so most orders ship at once and a few percent wait for
an inbound (mostly on the hot SKUs). Time only moves forward: `occurred_at`
(and `placed_at`, `cancelled_at`, `received_at`, which equal it) never
decreases from one message to the next.

Publishing: orders.v1 and inventory.v1 are separate topics, so the router
interleaves them as it reads them. Published all at once, receipts meant for
the afternoon can be routed before the morning's orders (far fewer backorders
than the stream describes); published at a steady rate with the router
running (`fulfil simulate --publish --rate 4000`), the command log follows the
simulated order closely.
"""

from __future__ import annotations

from collections.abc import Iterator

from fulfil.simulation.data import (
    DEFAULT_EVENTS,
    DEFAULT_INVALID_RATE,
    DEFAULT_SEED,
    DEFAULT_SKUS,
    DEFAULT_WAREHOUSES,
    SHOP_TZ,
    START,
)
from fulfil.simulation.model import SimRecord
from fulfil.simulation.traffic import _Simulation

__all__ = [
    "DEFAULT_EVENTS",
    "DEFAULT_INVALID_RATE",
    "DEFAULT_SEED",
    "DEFAULT_SKUS",
    "DEFAULT_WAREHOUSES",
    "SHOP_TZ",
    "START",
    "SimRecord",
    "generate",
    "simulate",
    "simulate_records",
]


def generate(
    events: int = DEFAULT_EVENTS,
    seed: int = DEFAULT_SEED,
    warehouses: int = DEFAULT_WAREHOUSES,
    skus: int = DEFAULT_SKUS,
    invalid_rate: float = DEFAULT_INVALID_RATE,
) -> Iterator[SimRecord]:
    """The simulated messages one by one, in publish order (memory stays flat)."""
    return _Simulation(events, seed, warehouses, skus, invalid_rate).run()


def simulate(
    events: int = DEFAULT_EVENTS,
    seed: int = DEFAULT_SEED,
    warehouses: int = DEFAULT_WAREHOUSES,
    skus: int = DEFAULT_SKUS,
    invalid_rate: float = DEFAULT_INVALID_RATE,
) -> list[bytes]:
    """`events` messages in publish order: valid v1 envelopes (encoded with
    `schemas.registry.encode`) and, at about `invalid_rate`, invalid raw bytes."""
    return [r.value for r in generate(events, seed, warehouses, skus, invalid_rate)]


def simulate_records(
    events: int = DEFAULT_EVENTS,
    seed: int = DEFAULT_SEED,
    warehouses: int = DEFAULT_WAREHOUSES,
    skus: int = DEFAULT_SKUS,
    invalid_rate: float = DEFAULT_INVALID_RATE,
) -> list[tuple[str, bytes, bytes]]:
    """Like `simulate`, as (base topic, key, value) triples; the key is the warehouse_id."""
    return [
        (r.topic, r.key, r.value) for r in generate(events, seed, warehouses, skus, invalid_rate)
    ]
