"""Hypothesis strategies producing valid v1 envelopes (as JSON-ready dicts)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from hypothesis import strategies as st

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=40)
skus = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=20)
quantities = st.integers(1, 1_000_000)
counts = st.integers(0, 1_000_000)
# Any printable text: the contract refuses control characters (Cc) and JSON lone surrogates (Cs).
printable = st.characters(exclude_categories=("Cc", "Cs"))
texts = st.text(printable, min_size=1, max_size=60).map(str.strip).filter(bool)
offsets = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=2)),
        timezone(timedelta(hours=-5, minutes=-30)),
        timezone(timedelta(hours=14)),
        timezone(timedelta(hours=-12)),
    ]
)
# Close to both ends of the contract's range (1970-01-01 .. 9000-01-01 UTC), whatever the offset.
timestamps = st.builds(
    lambda dt, tz: dt.replace(tzinfo=tz).isoformat(),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(8999, 12, 30)),
    offsets,
)
dates = st.dates(min_value=date(1970, 1, 1), max_value=date(8999, 12, 31)).map(date.isoformat)
money = st.decimals(min_value=0, max_value=100_000, places=2, allow_nan=False).map(str)
currencies = st.sampled_from(["EUR", "USD", "GBP", "JPY", "CHF"])
emails = st.builds(
    lambda u, d: f"{u}@{d}.example",
    st.from_regex(r"[a-z][a-z0-9]{0,10}(\.[a-z0-9]{1,5})?", fullmatch=True),
    st.from_regex(r"[a-z]{1,10}", fullmatch=True),
)
customers = st.fixed_dictionaries(
    {"customer_id": ids, "email": emails},
    optional={
        "name": st.text(printable, max_size=40),
        "locale": st.sampled_from(["en", "de", "fr-CA"]),
    },
)


def _priced(line: dict, price: str | None, currency: str) -> dict:
    if price is not None:
        line = {**line, "unit_price": price, "currency": currency}
    return line


order_lines = st.lists(
    st.builds(
        _priced,
        st.fixed_dictionaries({"sku": skus, "quantity": quantities}),
        st.none() | money,
        currencies,
    ),
    min_size=1,
    max_size=8,
).map(lambda lines: [{**line, "line_no": i + 1} for i, line in enumerate(lines)])

allocation_lines = st.lists(
    st.fixed_dictionaries(
        {"sku": skus, "quantity": quantities},
        optional={
            "shipped": counts,
            "allocated": counts,
            "backordered": counts,
            "eta": st.none() | dates,
            "promised_eta": st.none() | dates,
            "consent": st.sampled_from([None, "offered", "required", "given"]),
        },
    ),
    min_size=1,
    max_size=5,
).map(lambda lines: [{**line, "line_no": i + 1} for i, line in enumerate(lines)])

order_output = {
    "order_id": ids,
    "warehouse_id": ids,
    "customer": customers,
    "lines": allocation_lines,
}

DATA: dict[str, st.SearchStrategy] = {
    "OrderPlaced": st.fixed_dictionaries(
        {
            "order_id": ids,
            "warehouse_id": ids,
            "customer": customers,
            "lines": order_lines,
            "placed_at": timestamps,
        },
        optional={
            "fulfilment_policy": st.sampled_from(["ship_partial", "ship_complete"]),
            "priority": st.integers(-1000, 1000),
        },
    ),
    "OrderCancelled": st.fixed_dictionaries(
        {"order_id": ids, "warehouse_id": ids, "reason": texts, "cancelled_at": timestamps}
    ),
    "StockReceived": st.fixed_dictionaries(
        {
            "receipt_id": ids,
            "warehouse_id": ids,
            "sku": skus,
            "quantity": quantities,
            "received_at": timestamps,
        },
        optional={"inbound_id": ids},
    ),
    "StockAdjusted": st.fixed_dictionaries(
        {
            "adjustment_id": ids,
            "warehouse_id": ids,
            "sku": skus,
            "delta": st.integers(-1_000_000, 1_000_000).filter(bool),
            "reason": texts,
        }
    ),
    "InboundScheduled": st.fixed_dictionaries(
        {
            "inbound_id": ids,
            "warehouse_id": ids,
            "lines": st.lists(
                st.fixed_dictionaries({"sku": skus, "quantity": quantities}),
                min_size=1,
                max_size=5,
                unique_by=lambda x: x["sku"],
            ),
            "eta": dates,
        },
        optional={"supplier": texts},
    ),
    "ShipmentDelayed": st.fixed_dictionaries(
        {"inbound_id": ids, "warehouse_id": ids, "new_eta": dates, "reason": texts}
    ),
    "SkuPolicySet": st.fixed_dictionaries(
        {
            "warehouse_id": ids,
            "sku": skus,
            "backorderable": st.booleans(),
            "discontinued": st.booleans(),
        },
        optional={
            "backorder_limit": st.none() | counts,
            "backorder_mode": st.sampled_from(["any", "covered_only"]),
            "release_date": st.none() | dates,
        },
    ),
    "InboundCancelled": st.fixed_dictionaries(
        {"inbound_id": ids, "warehouse_id": ids, "reason": texts, "cancelled_at": timestamps}
    ),
    "OrderLinesCancelled": st.fixed_dictionaries(
        {
            "order_id": ids,
            "warehouse_id": ids,
            "lines": st.lists(
                st.fixed_dictionaries({"quantity": quantities}), min_size=1, max_size=5
            ).map(lambda lines: [{**line, "line_no": i + 1} for i, line in enumerate(lines)]),
            "reason": texts,
            "cancelled_at": timestamps,
        }
    ),
    "OrderPolicyChanged": st.fixed_dictionaries(
        {
            "order_id": ids,
            "warehouse_id": ids,
            "fulfilment_policy": st.sampled_from(["ship_partial", "ship_complete"]),
        }
    ),
    "BackorderConsentGiven": st.fixed_dictionaries(
        {"order_id": ids, "warehouse_id": ids},
        optional={"lines": st.none() | st.lists(st.integers(1, 100_000), min_size=1, max_size=5)},
    ),
    "StockAlertRequested": st.fixed_dictionaries(
        {"alert_id": ids, "warehouse_id": ids, "sku": skus, "customer": customers}
    ),
    "StockAlertCancelled": st.fixed_dictionaries({"alert_id": ids, "warehouse_id": ids}),
    "ClockTicked": st.fixed_dictionaries({"now": timestamps}),
    "InvalidOrderReceived": st.fixed_dictionaries(
        {
            "order_id": ids,
            "warehouse_id": ids,
            "event_id": ids,
            "errors": st.lists(
                st.fixed_dictionaries({"path": ids, "message": texts}), min_size=1, max_size=5
            ),
        }
    ),
    "BackorderConsentRecorded": st.fixed_dictionaries(order_output),
    "StockAlertTriggered": st.fixed_dictionaries(
        {
            "alert_id": ids,
            "warehouse_id": ids,
            "sku": skus,
            "customer": customers,
            "available": counts,
        },
        optional={"promise_eta": st.none() | dates},
    ),
    "OrderAllocated": st.fixed_dictionaries({**order_output, "shipment_id": ids}),
    "PartiallyShipped": st.fixed_dictionaries({**order_output, "shipment_id": ids}),
    "Backordered": st.fixed_dictionaries(
        {
            **order_output,
            "reason": st.sampled_from(
                ["insufficient_stock", "ship_complete_hold", "reservation_lost", "pre_order"]
            ),
        }
    ),
    "BackorderAllocated": st.fixed_dictionaries({**order_output, "shipment_id": ids}),
    "BackorderEtaChanged": st.fixed_dictionaries(
        {
            **order_output,
            "cause": st.fixed_dictionaries(
                {"event_type": st.just("ShipmentDelayed"), "event_id": ids},
                optional={"inbound_id": ids},
            ),
        }
    ),
    "OrderRejected": st.fixed_dictionaries(order_output)
    | st.fixed_dictionaries(
        {
            "order_id": ids,
            "warehouse_id": ids,
            "reason": st.just("invalid"),
            "errors": st.lists(
                st.fixed_dictionaries({"path": ids, "message": texts}), min_size=1, max_size=3
            ),
            "lines": st.just([]),
        },
    ),
    "OrderCancellationProcessed": st.fixed_dictionaries(
        {**order_output, "reason": texts},
        optional={
            "not_cancelled": st.none()
            | st.lists(
                st.fixed_dictionaries(
                    {
                        "line_no": st.integers(1, 100_000),
                        "quantity": quantities,
                        "reason": st.sampled_from(["not_open", "unknown_line"]),
                    }
                ),
                min_size=1,
                max_size=3,
            )
        },
    ),
    "StockPositionChanged": st.fixed_dictionaries(
        {
            "warehouse_id": ids,
            "sku": skus,
            "available": counts,
            "backordered": counts,
            "reserved": counts,
            "incoming": counts,
        },
        optional={
            "next_eta": st.none() | dates,
            "shortfall": counts,
            "promise_eta": st.none() | dates,
        },
    ),
}


def envelopes(event_type: str) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {
            "id": ids,
            "type": st.just(event_type),
            "version": st.just(1),
            "occurred_at": timestamps,
            "source": ids,
            "data": DATA[event_type],
        },
        optional={"correlation_id": ids, "causation_id": ids},
    )
