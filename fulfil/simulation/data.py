"""The simulation's fixed inputs: time, catalogue, warehouses, suppliers, rhythms, names."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import accumulate

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
# Traffic mix: orders, cancellations, stock adjustments, transfers in (receipts without
# inbound), and customers changing orders: part cancels, policy switches, consents to a
# later date, back-in-stock alerts asked for and withdrawn.
TRAFFIC_KINDS = [
    "order", "cancel", "adjust", "transfer", "part_cancel", "switch", "consent", "alert", "unalert"
]  # fmt: skip
TRAFFIC_CUM = list(accumulate([92.6, 1.2, 4.6, 0.6, 0.4, 0.15, 0.1, 0.3, 0.05]))
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
