"""The projector's read model, read-only: orders with lines still backordered.

Tables (owned by services/projector): `orders((warehouse_id, order_id) PK,
customer_id, customer_email, customer_name, customer_locale, status,
placed_at, updated_at, backordered_since)` and `order_lines(order_id,
line_no, sku, quantity, allocated, backordered, reserved, rejected,
cancelled, eta, unit_price, currency)`. An order is (warehouse_id, order_id): a
split order (one order_id in two warehouses) is two orders, reminded apart.
"""

from __future__ import annotations

from typing import Any

import asyncpg

_QUERY = """
SELECT o.order_id, o.warehouse_id, o.customer_id, o.customer_email, o.customer_name,
       o.customer_locale, o.placed_at, o.backordered_since,
       l.line_no, l.sku, l.quantity, l.allocated, l.backordered, l.reserved, l.rejected,
       l.cancelled, l.eta, l.unit_price, l.currency
FROM {orders} o
JOIN {lines} l ON l.warehouse_id = o.warehouse_id AND l.order_id = o.order_id
WHERE l.backordered > 0 AND o.customer_email IS NOT NULL
ORDER BY o.order_id, o.warehouse_id, l.line_no
"""

_ORDER_FIELDS = (
    "order_id",
    "warehouse_id",
    "customer_id",
    "customer_email",
    "customer_name",
    "customer_locale",
    "placed_at",
    "backordered_since",
)
_LINE_FIELDS = (
    "line_no",
    "sku",
    "quantity",
    "allocated",
    "backordered",
    "reserved",
    "rejected",
    "cancelled",
    "eta",
    "unit_price",
    "currency",
)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


class ReadModel:
    def __init__(self, pool: asyncpg.Pool, schema: str | None = None):
        self.pool = pool
        # Identifiers cannot be parameters: the schema name is validated by the
        # settings pattern and quoted here; every value stays a parameter.
        prefix = f"{_quote(schema)}." if schema else ""
        self.query = _QUERY.format(orders=prefix + "orders", lines=prefix + "order_lines")

    async def backordered_orders(self) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """Each order with at least one backordered line, and those lines."""
        rows = await self.pool.fetch(self.query)
        orders: dict[tuple[str, str], tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        for r in rows:
            key = (r["warehouse_id"], r["order_id"])
            entry = orders.get(key)
            if entry is None:
                entry = orders[key] = ({k: r[k] for k in _ORDER_FIELDS}, [])
            entry[1].append({k: r[k] for k in _LINE_FIELDS})
        return list(orders.values())
