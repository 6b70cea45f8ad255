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
  hours (type ClockTicked, topic allocator.commands.v1, empty key: publish
  it to every command partition) makes those overdue.
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

import heapq
import math
import random
import unicodedata
import uuid
from collections import deque
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from itertools import accumulate
from typing import Any, NamedTuple

import orjson

from schemas.contract import (
    ClockTicked,
    InboundCancelled,
    InboundScheduled,
    OrderCancelled,
    OrderPlaced,
    ShipmentDelayed,
    SkuPolicySet,
    StockAdjusted,
    StockReceived,
)
from schemas.registry import COMMANDS, INVENTORY, ORDERS, encode

SHOP_TZ = timezone(timedelta(hours=1))  # the shop's local time (CET); timestamps carry +01:00
START = datetime(2026, 11, 2, 0, 0, tzinfo=SHOP_TZ)  # the first trading day starts at midnight
DAY = 86_400
PRELUDE_DAYS = 30  # how far back the open purchase-order book reaches
SAFETY_DAYS = 0.5  # purchasing's safety stock, in days of planned demand

DEFAULT_EVENTS = 20_000
DEFAULT_SEED = 1
DEFAULT_WAREHOUSES = 3
DEFAULT_SKUS = 300
DEFAULT_INVALID_RATE = 0.005

# (name, currency); more warehouses than listed are named wh-NN and trade in EUR.
WAREHOUSES = [
    ("berlin-1", "EUR"),
    ("vienna-1", "EUR"),
    ("zurich-1", "CHF"),
    ("hamburg-1", "EUR"),
    ("amsterdam-1", "EUR"),
    ("warsaw-1", "PLN"),
    ("milan-1", "EUR"),
    ("stockholm-1", "SEK"),
    ("lyon-1", "EUR"),
    ("madrid-1", "EUR"),
]
RATES = {"EUR": 1.0, "CHF": 0.94, "PLN": 4.3, "SEK": 11.5, "GBP": 0.86, "USD": 1.08}
FOREIGN = ["EUR", "GBP", "USD", "CHF"]
CATEGORIES = {  # SKU prefix -> typical price in EUR
    "LAMP": 60,
    "CHAIR": 120,
    "TABLE": 350,
    "SOFA": 900,
    "RUG": 180,
    "VASE": 35,
    "MUG": 12,
    "SHELF": 90,
    "PLANT": 25,
    "FRAME": 20,
    "CLOCK": 45,
    "BLANKET": 50,
    "CUSHION": 25,
    "MIRROR": 110,
    "BOWL": 18,
}
SUPPLIERS = [
    "Nordic Lights",
    "Baltic Timber",
    "Porto Ceramics",
    "Anatolia Textiles",
    "Shenzhen Home",
    "Lombardia Design",
    "Silesia Glass",
    "Flanders Linen",
    "Valencia Clay",
    "Bavaria Metal",
]
SUPPLIER_LEADS = [4, 6, 9, 13, 18, 24]  # mean lead time in days, one per supplier slot
DELAY_REASONS = [
    "port congestion",
    "supplier capacity shortage",
    "customs inspection",
    "carrier missed pickup",
    "raw material shortage",
    "quality check failed at origin",
]
CANCEL_REASONS = [
    "customer changed their mind",
    "found a better price elsewhere",
    "ordered by mistake",
    "duplicate order",
    "payment failed",
]
PO_CANCEL_REASONS = [
    "supplier out of stock",
    "purchase order closed short",
    "supplier cancelled the order",
]
WAIT_CANCEL_REASONS = [
    "delivery date too late",
    "no longer needed by the date offered",
    "bought elsewhere",
]
ADJUST_REASONS = {
    "count": ["cycle count", "cycle count correction", "found during cycle count"],
    "damage": ["damaged in storage", "damaged during picking", "water damage"],
    "return": ["customer return restocked"],
}
ORDER_SOURCES = ["shop-web", "shop-app", "marketplace-connector", "oms"]
ORDER_SOURCE_WEIGHTS = [70, 15, 10, 5]
# Traffic: web shop orders by hour of day (local time), normalised to a mean of 1.
HOURLY = [
    0.35,
    0.25,
    0.2,
    0.18,
    0.2,
    0.3,
    0.5,
    0.75,
    0.95,
    1.05,
    1.1,
    1.15,
    1.2,
    1.15,
    1.1,
    1.1,
    1.15,
    1.25,
    1.4,
    1.6,
    1.7,
    1.55,
    1.1,
    0.65,
]
HOURLY = [h * 24 / sum(HOURLY) for h in HOURLY]
TRAFFIC_PER_DAY = 19_550  # plus ~2 % purchasing and receiving: 20 k events a day
# Traffic mix: orders, cancellations, stock adjustments, transfers in (receipts without inbound).
TRAFFIC_KINDS = ["order", "cancel", "adjust", "transfer"]
TRAFFIC_CUM = list(accumulate([93.6, 1.2, 4.6, 0.6]))
LINE_COUNTS, LINE_COUNT_W = [1, 2, 3, 4], [62, 24, 9, 5]
QUANTITIES, QUANTITY_W = [1, 2, 3, 5, 10], [72, 17, 6, 3, 2]
UNITS_PER_ORDER = 1.55 * 1.59  # mean lines x mean quantity (a little less: duplicate SKUs fold)

LOCALES = [  # (language, locale variants, weight)
    ("en", ["en", "en", "en-GB", "en-US"], 40),
    ("de", ["de", "de", "de-AT", "de-CH"], 32),
    ("fr", ["fr", "fr-BE"], 7),
    ("nl", ["nl"], 6),
    ("it", ["it"], 5),
    ("es", ["es"], 4),
    ("pl", ["pl"], 4),
    ("sv", ["sv"], 2),
]
NAMES = {
    "en": (
        [
            "Oliver",
            "Amelia",
            "Harry",
            "Isla",
            "Jack",
            "Ava",
            "Noah",
            "Mia",
            "Leo",
            "Grace",
            "Liam",
            "Chloe",
            "Priya",
            "Emily",
            "Sophie",
            "Ethan",
        ],
        [
            "Smith",
            "Jones",
            "Taylor",
            "Brown",
            "Williams",
            "Wilson",
            "Johnson",
            "Davies",
            "O'Brien",
            "Evans",
            "Walker",
            "Patel",
            "Khan",
            "Murphy",
        ],
    ),
    "de": (
        [
            "Lukas",
            "Anna",
            "Jürgen",
            "Lea",
            "Felix",
            "Marie",
            "Jonas",
            "Sophie",
            "Maximilian",
            "Hannah",
            "Paul",
            "Lena",
            "Anna-Lena",
            "Björn",
        ],
        [
            "Müller",
            "Schmidt",
            "Schneider",
            "Fischer",
            "Weber",
            "Meyer",
            "Wagner",
            "Becker",
            "Schulz",
            "Hoffmann",
            "Groß",
            "Köhler",
            "Jäger",
            "von Bülow",
        ],
    ),
    "fr": (
        ["Léa", "Hugo", "Chloé", "Louis", "Zoé", "Gabriel", "Inès", "Raphaël"],
        ["Martin", "Bernard", "Dubois", "Lefèvre", "Moreau", "Girard", "Faure"],
    ),
    "nl": (
        ["Daan", "Emma", "Sem", "Julia", "Lotte", "Bram"],
        ["de Jong", "Jansen", "de Vries", "van den Berg", "Bakker", "Visser"],
    ),
    "it": (
        ["Giulia", "Lorenzo", "Sofia", "Matteo", "Aurora"],
        ["Rossi", "Russo", "Ferrari", "Esposito", "Bianchi"],
    ),
    "es": (
        ["Lucía", "Hugo", "Martina", "Mateo", "Sofía"],
        ["García", "Fernández", "López", "Martínez", "Sánchez"],
    ),
    "pl": (
        ["Łukasz", "Zofia", "Jakub", "Małgorzata", "Wojciech"],
        ["Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kamińska"],
    ),
    "sv": (["Astrid", "Erik", "Maja", "Olle"], ["Andersson", "Johansson", "Karlsson", "Sjöberg"]),
}
EMAIL_DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com"]
_FOLD = str.maketrans({"ß": "ss", "ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "å": "a"})

# Invalid messages: the kind the router reports for each (see schemas.registry.ContractError).
INVALID_KINDS = ["bad_json", "unknown_type", "schema_violation", "bad_quantity"]
INVALID_WEIGHTS = [25, 20, 35, 20]

# Scheduled-event kinds (heap entries); ints so ties never compare payloads.
_PO_EMIT, _PO_REVIEW, _DELAY, _RECEIPT, _TREND, _DISRUPTION, _COUNT, _PO_CANCEL, _TICK, _STUCK = (
    range(10)
)
PO_CANCEL_RATE = 0.05  # purchase orders cancelled (or closed short) before they arrive
STUCK_POS = 2  # per warehouse: open purchase orders already past their ETA, stuck at the supplier


class SimRecord(NamedTuple):
    """One simulated message: where it goes and what it is."""

    topic: str  # base topic name (no prefix)
    key: bytes  # warehouse_id
    value: bytes  # the envelope (or the invalid bytes)
    type: str  # event type; for invalid messages "invalid:<kind>"
    occurred_at: datetime


class _Supplier:
    __slots__ = ("name", "lead", "period", "safety", "skus", "last_review", "open")

    def __init__(self, name: str, lead: float, period: float) -> None:
        self.name = name
        self.lead = lead  # mean lead time, days
        self.period = period  # days between purchase orders
        # Safety stock in days of demand: covers the lead time's spread (+-10 %).
        self.safety = SAFETY_DAYS + 0.12 * lead
        self.skus: list[int] = []
        self.last_review = 0
        self.open: list[_Inbound] = []


class _Order:
    __slots__ = ("order_id", "wh", "event_id", "lines", "waiting", "cancelled", "complete")

    def __init__(self, order_id: str, wh: int, event_id: str, complete: bool) -> None:
        self.order_id = order_id
        self.wh = wh
        self.event_id = event_id
        self.lines: list[list[int]] = []  # [sku index, quantity, units still waiting]
        self.waiting = 0
        self.cancelled = False
        self.complete = complete


class _Inbound:
    __slots__ = (
        "inbound_id",
        "wh",
        "supplier",
        "event_id",
        "eta",
        "outstanding",
        "plan",
        "version",
        "started",
        "pending",
    )

    def __init__(
        self, inbound_id: str, wh: int, supplier: _Supplier, event_id: str, eta: date
    ) -> None:
        self.inbound_id = inbound_id
        self.wh = wh
        self.supplier = supplier
        self.event_id = event_id
        self.eta = eta  # current ETA (moves with delays)
        self.outstanding: dict[int, int] = {}  # sku index -> units ordered, not yet received
        # Receipts as planned: (seconds after midnight of the ETA date, sku, units, last for its line).
        self.plan: list[tuple[int, int, int, bool]] = []
        self.version = 0  # receipts scheduled for an older ETA are dropped
        self.started = False  # unloading began: too late for a delay
        self.pending = 0  # receipts still to come


class _Warehouse:
    """Purchasing's plan and a shadow of the allocator's stock view for one warehouse."""

    def __init__(self, index: int, name: str, currency: str, skus: int) -> None:
        self.index = index
        self.name = name
        self.key = name.encode()
        self.currency = currency
        self.popularity: list[float] = []  # base demand weights
        self.multiplier = [1.0] * skus  # hot items, discontinued ones
        self.cum: list[float] = []
        self.planned = [0.0] * skus  # units/day purchasing planned for
        self.estimate = [0.0] * skus  # smoothed observed demand, units/day
        self.observed = [0] * skus  # units ordered since the supplier's last review
        self.available = [0] * skus  # shadow: units on the shelf, uncommitted
        self.backlog = [0] * skus  # shadow: units waiting
        self.queue: list[deque[tuple[_Order, list[int]]]] = [deque() for _ in range(skus)]
        self.incoming = [0] * skus
        self.supplier_of = [0] * skus
        self.suppliers: list[_Supplier] = []
        self.hot: list[int] = []
        self.unbackorderable: set[int] = set()
        self.discontinued: set[int] = set()

    def refresh(self) -> None:
        self.cum = list(
            accumulate(p * m for p, m in zip(self.popularity, self.multiplier, strict=True))
        )


def _fold_ascii(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.translate(_FOLD)).encode("ascii", "ignore").decode()
    return "".join(c for c in text.lower() if c.isalnum())


def _price(base_eur: float, currency: str) -> str:
    value = base_eur * RATES[currency]
    return f"{max(1, round(value)) - 0.01:.2f}"


def _pack(units: int) -> int:
    """Round a purchase quantity up to the supplier's pack size."""
    pack = 1 if units < 10 else 5 if units < 50 else 10 if units < 200 else 25
    return -(-units // pack) * pack


class _Simulation:
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

    # ------------------------------------------------------------ the stream

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

    def _prelude(self) -> None:
        """The open purchase-order book (placed over the last 30 days) and the opening count."""
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
        # A few purchase orders are stuck at the supplier: their ETA passed days ago and
        # nothing arrived. The midnight tick that opens trading makes them overdue.
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
        # Today, for the allocator core: a tick every six simulated hours.
        for quarter in range(0, 12):
            self._schedule(quarter * DAY // 4, _TICK, None)
        # The opening stock count, an hour before trading starts.
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
        self._schedule(rng.randrange(11 * 3600, 16 * 3600), _DISRUPTION, None)

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
        supplier.open = [i for i in supplier.open if i.pending]
        horizon = self.now + 6 * DAY
        late = [
            i
            for i in supplier.open
            if not i.started and self._unloading(i) > self.now and self._midnight(i.eta) <= horizon
        ]
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
                data = {
                    "warehouse_id": wh.name,
                    "sku": self.sku_names[sku],
                    "backorderable": backorderable,
                    "discontinued": discontinued,
                }
                _, value = self._envelope(SkuPolicySet, data, "pim")
                records.append(self._record(INVENTORY, wh, value, "SkuPolicySet"))
            # Merchandising: a hot SKU capped at a few units on backorder, another sold only
            # as far as purchase orders cover it, and a SKU announced as a pre-order
            # (release in two days: its stock is held until then).
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
            for sku, fields in extra:
                data = {
                    "warehouse_id": wh.name,
                    "sku": self.sku_names[sku],
                    "backorderable": True,
                    "discontinued": False,
                    **fields,
                }
                _, value = self._envelope(SkuPolicySet, data, "pim")
                records.append(self._record(INVENTORY, wh, value, "SkuPolicySet"))
            wh.unbackorderable.add(closed)
            wh.discontinued.add(gone)
            wh.multiplier[gone] = 0.3  # still listed on some channels for a while
            wh.refresh()
        return records

    # ------------------------------------------------------------ traffic

    def _traffic(self) -> list[SimRecord]:
        rng = self.rng
        kind = rng.choices(TRAFFIC_KINDS, cum_weights=TRAFFIC_CUM)[0]
        if kind == "cancel":
            record = self._cancel()
            if record is not None:
                return [record]
            kind = "order"
        if kind == "adjust":
            return [self._adjust()]
        if kind == "transfer":
            return [self._transfer()]
        return [self._order()]

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

    def _order(self) -> SimRecord:
        rng = self.rng
        wh = self._warehouse()
        customer = self._customer()
        currency = wh.currency if rng.random() < 0.88 else rng.choice(FOREIGN)
        priced = rng.random() < 0.97
        step = 10 if rng.random() < 0.05 else 1  # some upstream systems number lines 10, 20, 30
        chosen: list[int] = []
        for _ in range(rng.choices(LINE_COUNTS, LINE_COUNT_W)[0]):
            sku = rng.choices(range(self.skus), cum_weights=wh.cum)[0]
            if sku not in chosen:
                chosen.append(sku)
        complete = rng.random() < 0.2
        roll = rng.random()
        priority = 10 if roll < 0.02 else 5 if roll < 0.035 else 0
        order_id = f"ord-{self.tag}-{self._next('order'):07d}"
        lines = []
        for number, sku in enumerate(chosen, start=1):
            line: dict[str, Any] = {
                "line_no": number * step,
                "sku": self.sku_names[sku],
                "quantity": rng.choices(QUANTITIES, QUANTITY_W)[0],
            }
            if priced:
                line["unit_price"] = _price(self.base_price[sku], currency)
                line["currency"] = currency
            lines.append(line)
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
        order = _Order(order_id, wh.index, event_id, complete)
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
        self.recent.append(order)
        if order.waiting:
            self.waiting.append(order)
            if len(self.waiting) > 2_000:
                self.waiting = [o for o in self.waiting if o.waiting and not o.cancelled][-1_500:]
        return self._record(ORDERS, wh, value, "OrderPlaced")

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
        topic = ORDERS
        if kind == "bad_json":
            doc = rng.choice((cancel, receipt, placed))
            topic = ORDERS if doc["type"].startswith("Order") else INVENTORY
            text = orjson.dumps(doc)
            variant = rng.random()
            if variant < 0.6:  # cut off mid-message
                value = text[: rng.randrange(8, len(text) - 2)]
            elif variant < 0.8:  # a trailing comma
                value = text[:-1] + b",}"
            else:  # a Python repr instead of JSON
                value = repr(doc).encode()
        elif kind == "unknown_type":
            doc = rng.choice(
                (
                    {**cancel, "type": "OrderUpdated"},
                    {**receipt, "type": "InventorySnapshot"},
                    {**cancel, "type": "OrderRefunded"},
                )
            )
            topic = ORDERS if doc["type"].startswith("Order") else INVENTORY
            value = orjson.dumps(doc)
        elif kind == "schema_violation":
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
            topic = ORDERS if doc["type"].startswith("Order") else INVENTORY
            value = orjson.dumps(doc)
        else:  # negative (or zero) quantities
            if rng.random() < 0.6:
                doc = {**receipt, "data": {**receipt["data"], "quantity": -rng.randint(1, 20)}}
                topic = INVENTORY
            else:
                line = {**placed["data"]["lines"][0], "quantity": -rng.randint(1, 3)}
                doc = {**placed, "data": {**placed["data"], "lines": [line]}}
            value = orjson.dumps(doc)
        return SimRecord(topic, wh.key, value, f"invalid:{kind}", self._at(self.now))


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
