"""One valid raw envelope (a JSON document, as a producer sends it) per input event type."""

from __future__ import annotations

VALID_ORDER = {
    "id": "evt-1",
    "type": "OrderPlaced",
    "version": 1,
    "occurred_at": "2026-11-01T10:00:00+01:00",
    "source": "shop",
    "data": {
        "order_id": "o-1",
        "warehouse_id": "wh-1",
        "customer": {"customer_id": "c-1", "email": "ann@shop.example", "name": "Ann"},
        "lines": [
            {
                "line_no": 1,
                "sku": "SKU-1",
                "quantity": 10,
                "unit_price": "19.90",
                "currency": "EUR",
            },
            {"line_no": 2, "sku": "SKU-2", "quantity": 1},
        ],
        "fulfilment_policy": "ship_partial",
        "priority": 0,
        "placed_at": "2026-11-01T09:59:00Z",
    },
}
VALID = {
    "OrderPlaced": VALID_ORDER,
    "OrderCancelled": {
        **VALID_ORDER,
        "type": "OrderCancelled",
        "data": {
            "order_id": "o-1",
            "warehouse_id": "wh-1",
            "reason": "changed mind",
            "cancelled_at": "2026-11-02T10:00:00Z",
        },
    },
    "StockReceived": {
        **VALID_ORDER,
        "type": "StockReceived",
        "data": {
            "receipt_id": "r-1",
            "warehouse_id": "wh-1",
            "sku": "SKU-1",
            "quantity": 5,
            "received_at": "2026-11-02T10:00:00Z",
        },
    },
    "StockAdjusted": {
        **VALID_ORDER,
        "type": "StockAdjusted",
        "data": {
            "adjustment_id": "a-1",
            "warehouse_id": "wh-1",
            "sku": "SKU-1",
            "delta": -2,
            "reason": "damage",
        },
    },
    "InboundScheduled": {
        **VALID_ORDER,
        "type": "InboundScheduled",
        "data": {
            "inbound_id": "in-1",
            "warehouse_id": "wh-1",
            "lines": [{"sku": "SKU-1", "quantity": 50}],
            "eta": "2026-11-20",
        },
    },
    "ShipmentDelayed": {
        **VALID_ORDER,
        "type": "ShipmentDelayed",
        "data": {
            "inbound_id": "in-1",
            "warehouse_id": "wh-1",
            "new_eta": "2026-11-27",
            "reason": "port congestion",
        },
    },
    "SkuPolicySet": {
        **VALID_ORDER,
        "type": "SkuPolicySet",
        "data": {
            "warehouse_id": "wh-1",
            "sku": "SKU-1",
            "backorderable": False,
            "discontinued": False,
        },
    },
}
