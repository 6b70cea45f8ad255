"""Read-side queries over the live read models, returned as plain dicts.

Each function takes a connection whose search_path is the live schema. Rules
(aging buckets, lateness, the reorder formula) come from the domain; SQL only
aggregates. Customer PII is never selected here.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from services.projector.domain.aging import BUCKET_NAMES, bucket
from services.projector.domain.inbounds import is_late, is_overdue, receipt_status
from services.projector.domain.reorder import LeadTimeStats, demand_stats, suggest

BACKLOG_FIELDS = (
    "warehouse_id", "sku", "backordered_units", "open_orders", "oldest_backorder_at",
    "next_eta", "promise_eta", "available", "reserved", "incoming",
)  # fmt: skip
LINE_FIELDS = (
    "line_no", "sku", "quantity", "allocated", "backordered", "reserved", "rejected",
    "cancelled", "eta", "eta_reason", "backorder_reason", "reason", "unit_price", "currency",
)  # fmt: skip


async def backlog(
    conn: asyncpg.Connection,
    *,
    warehouse_id: str | None = None,
    sku: str | None = None,
    include_all: bool = False,
) -> list[dict[str, Any]]:
    """Per (warehouse, SKU) backlog; SKUs without backorders only with `include_all` or `sku`."""
    rows = await conn.fetch(
        """SELECT warehouse_id, sku, backordered_units, open_orders, oldest_backorder_at,
                  next_eta, promise_eta, available, reserved, incoming
           FROM sku_backlog
           WHERE ($1::text IS NULL OR warehouse_id = $1)
             AND ($2::text IS NULL OR sku = $2)
             AND ($3 OR backordered_units > 0)
           ORDER BY backordered_units DESC, oldest_backorder_at, warehouse_id, sku""",
        warehouse_id,
        sku,
        include_all or sku is not None,
    )
    return [dict(r) for r in rows]


async def order(
    conn: asyncpg.Connection, order_id: str, *, warehouse_id: str | None = None
) -> list[dict[str, Any]]:
    """Every warehouse's part of the order (a split order has one per warehouse),
    ordered by warehouse; empty when unknown."""
    heads = await conn.fetch(
        """SELECT order_id, warehouse_id, status, placed_at, updated_at, backordered_since
           FROM orders WHERE order_id = $1 AND ($2::text IS NULL OR warehouse_id = $2)
           ORDER BY warehouse_id""",
        order_id,
        warehouse_id,
    )
    if not heads:
        return []
    lines: dict[str, list[dict[str, Any]]] = {}
    for r in await conn.fetch(
        """SELECT warehouse_id, line_no, sku, quantity, allocated, backordered, reserved, rejected,
                  cancelled, eta, eta_reason, backorder_reason, reason, unit_price, currency
           FROM order_lines WHERE order_id = $1 AND ($2::text IS NULL OR warehouse_id = $2)
           ORDER BY warehouse_id, line_no""",
        order_id,
        warehouse_id,
    ):
        line = dict(r)
        lines.setdefault(line.pop("warehouse_id"), []).append(line)
    return [{**dict(head), "lines": lines.get(head["warehouse_id"], [])} for head in heads]


async def inbound(
    conn: asyncpg.Connection,
    *,
    as_of: datetime,
    late_only: bool = False,
    grace_days: int = 2,
    warehouse_id: str | None = None,
) -> list[dict[str, Any]]:
    """Inbound shipments with their receipt status (`cancelled`/`closed_short` once an
    InboundCancelled said the rest will not arrive), `late` (delayed, or open past its
    ETA) and `overdue` (open past its ETA plus `grace_days`, as the allocator judges it:
    the lines it covered have no date). `late_only`: late or overdue ones;
    `warehouse_id`: that warehouse's only."""
    rows = await conn.fetch(
        """SELECT i.warehouse_id, i.inbound_id, i.supplier, i.original_eta, i.current_eta,
                  i.delay_days, i.scheduled_at, i.cancelled_at, i.cancel_reason,
                  COALESCE(sum(l.quantity_expected), 0)::bigint AS quantity_expected,
                  COALESCE(sum(l.quantity_received), 0)::bigint AS quantity_received,
                  COALESCE(sum(l.quantity_cancelled), 0)::bigint AS quantity_cancelled
           FROM inbounds i LEFT JOIN inbound_lines l USING (warehouse_id, inbound_id)
           WHERE ($1::text IS NULL OR i.warehouse_id = $1)
           GROUP BY i.warehouse_id, i.inbound_id
           ORDER BY i.current_eta NULLS LAST, i.warehouse_id, i.inbound_id""",
        warehouse_id,
    )
    today = as_of.date()
    out = []
    for r in rows:
        item = dict(r)
        expected, received = item["quantity_expected"], item["quantity_received"]
        cancelled = item["cancelled_at"] is not None
        item["status"] = receipt_status(expected, received, cancelled)
        item["late"] = is_late(
            item["current_eta"], item["delay_days"], expected, received, today, cancelled
        )
        item["overdue"] = is_overdue(
            item["current_eta"], expected, received, today, grace_days, cancelled
        )
        if item["overdue"]:
            item["late"] = True
        if item["late"] or not late_only:
            out.append(item)
    return out


async def promise(
    conn: asyncpg.Connection,
    *,
    warehouse_id: str,
    sku: str,
    quantity: int = 1,
    as_of: datetime,
    grace_days: int = 2,
) -> dict[str, Any] | None:
    """The date a new order of `quantity` units would get for its units beyond `available`,
    after everything already queued; None when the SKU is unknown here.

    One unit beyond available: the allocator's own answer, the last StockPositionChanged's
    promise_eta. More units: the date of the scheduled inbound that covers the last of
    them after the waiting units (open inbounds by current ETA, overdue ones without a
    date, dates before `as_of` moved to it), never before the one-unit promise (which
    knows pre-order release dates); null when no inbound covers them all.
    """
    row = await conn.fetchrow(
        """SELECT warehouse_id, sku, available, reserved, backordered_units, incoming, next_eta,
                  promise_eta, position_at
           FROM sku_backlog WHERE warehouse_id = $1 AND sku = $2""",
        warehouse_id,
        sku,
    )
    if row is None:
        return None
    available = row["available"]
    beyond = max(0, quantity - available)
    eta: date | None = None
    if beyond:
        eta = row["promise_eta"]
        if beyond > 1 and eta is not None:
            inbounds = await conn.fetch(
                """SELECT i.inbound_id, i.current_eta,
                          GREATEST(l.quantity_expected - l.quantity_received
                                   - l.quantity_cancelled, 0)::bigint AS remaining
                   FROM inbounds i JOIN inbound_lines l USING (warehouse_id, inbound_id)
                   WHERE i.warehouse_id = $1 AND l.sku = $2 AND i.current_eta IS NOT NULL
                     AND i.cancelled_at IS NULL
                   ORDER BY i.current_eta, i.inbound_id""",
                warehouse_id,
                sku,
            )
            waiting = max(0, row["backordered_units"] - row["reserved"])
            walked = _cover(inbounds, waiting + beyond, as_of.date(), grace_days)
            eta = None if walked is None else max(walked, eta)
    return {
        "warehouse_id": warehouse_id,
        "sku": sku,
        "quantity": quantity,
        "available": available,
        "from_stock": quantity - beyond,
        "beyond_available": beyond,
        "promise_eta": eta,
        "covered": beyond == 0 or eta is not None,
        "backordered_units": row["backordered_units"],
        "incoming": row["incoming"],
        "next_eta": row["next_eta"],
        "position_at": row["position_at"],
    }


def _cover(inbounds: list[Any], units: int, today: date, grace_days: int) -> date | None:
    """Date of the `units`-th unit of scheduled supply (None: not scheduled, or overdue)."""
    for r in inbounds:
        remaining = r["remaining"]
        if not remaining:
            continue
        units -= remaining
        if units <= 0:
            eta: date = r["current_eta"]
            if today > eta + timedelta(days=grace_days):
                return None
            return max(eta, today)
    return None


async def aging(
    conn: asyncpg.Connection,
    *,
    as_of: datetime,
    warehouse_id: str | None = None,
    sku: str | None = None,
) -> dict[str, Any]:
    """Backordered units per age bucket (days waited at `as_of`), per SKU and overall
    (overall: of the SKUs selected by `warehouse_id` and `sku`)."""
    rows = await conn.fetch(
        """SELECT warehouse_id, sku,
                  floor(extract(epoch FROM ($1::timestamptz - backordered_since)) / 86400)::bigint
                      AS age_days,
                  sum(backordered)::bigint AS units
           FROM order_lines
           WHERE backordered > 0
             AND ($2::text IS NULL OR warehouse_id = $2) AND ($3::text IS NULL OR sku = $3)
           GROUP BY 1, 2, 3""",
        as_of,
        warehouse_id,
        sku,
    )
    empty = dict.fromkeys(BUCKET_NAMES, 0)
    per_sku: dict[tuple[str, str], dict[str, int]] = {}
    overall = dict(empty)
    for r in rows:
        name = bucket(max(0, r["age_days"]))
        counts = per_sku.setdefault((r["warehouse_id"], r["sku"]), dict(empty))
        counts[name] += r["units"]
        overall[name] += r["units"]
    skus = [
        {"warehouse_id": wh, "sku": sku, **counts, "backordered_units": sum(counts.values())}
        for (wh, sku), counts in sorted(per_sku.items())
    ]
    return {
        "as_of": as_of,
        "overall": {**overall, "backordered_units": sum(overall.values())},
        "skus": skus,
    }


async def deposits(
    conn: asyncpg.Connection, *, limit: int | None = None, warehouse_id: str | None = None
) -> dict[str, Any]:
    """Customer deposits: value of paid, backordered (not yet shipped) units (of one
    warehouse with `warehouse_id`)."""
    totals = await conn.fetch(
        """SELECT currency, sum(backordered * unit_price) AS amount,
                  sum(backordered)::bigint AS backordered_units,
                  count(DISTINCT (warehouse_id, order_id))::bigint AS orders
           FROM order_lines
           WHERE backordered > 0 AND unit_price IS NOT NULL
             AND ($1::text IS NULL OR warehouse_id = $1)
           GROUP BY currency ORDER BY currency""",
        warehouse_id,
    )
    per_order = await conn.fetch(
        """SELECT warehouse_id, order_id, currency, sum(backordered * unit_price) AS amount,
                  sum(backordered)::bigint AS backordered_units
           FROM order_lines
           WHERE backordered > 0 AND unit_price IS NOT NULL
             AND ($2::text IS NULL OR warehouse_id = $2)
           GROUP BY warehouse_id, order_id, currency
           ORDER BY amount DESC, order_id, warehouse_id, currency
           LIMIT $1""",
        limit,
        warehouse_id,
    )
    return {"totals": [dict(r) for r in totals], "orders": [dict(r) for r in per_order]}


_REORDER_SQL = """
WITH last_day AS (
    SELECT warehouse_id, max(day) AS last_day FROM daily_demand GROUP BY warehouse_id
), demand AS (
    SELECT warehouse_id, sku, sum(units)::bigint AS units, max(units)::bigint AS max_daily,
           min(day) AS first_day
    FROM daily_demand
    WHERE ($1::text IS NULL OR warehouse_id = $1) AND ($2::text IS NULL OR sku = $2)
    GROUP BY warehouse_id, sku
), leads AS (
    SELECT l.warehouse_id, l.sku,
           extract(epoch FROM (l.first_received_at - i.scheduled_at))::float8 / 86400 AS days
    FROM inbound_lines l JOIN inbounds i USING (warehouse_id, inbound_id)
    WHERE l.first_received_at IS NOT NULL AND i.scheduled_at IS NOT NULL
      AND l.first_received_at >= i.scheduled_at
), sku_lead AS (
    SELECT warehouse_id, sku, count(*) AS n, avg(days) AS avg_days, max(days) AS max_days
    FROM leads GROUP BY warehouse_id, sku
), warehouse_lead AS (
    SELECT warehouse_id, count(*) AS n, avg(days) AS avg_days, max(days) AS max_days
    FROM leads GROUP BY warehouse_id
)
SELECT d.warehouse_id, d.sku, d.units, d.max_daily, d.first_day, ld.last_day,
       sl.n AS sku_n, sl.avg_days AS sku_avg, sl.max_days AS sku_max,
       wl.n AS wh_n, wl.avg_days AS wh_avg, wl.max_days AS wh_max,
       COALESCE(b.available, 0) AS available, COALESCE(b.incoming, 0) AS incoming,
       COALESCE(b.backordered_units, 0) AS backordered
FROM demand d
JOIN last_day ld USING (warehouse_id)
LEFT JOIN sku_lead sl USING (warehouse_id, sku)
LEFT JOIN warehouse_lead wl USING (warehouse_id)
LEFT JOIN sku_backlog b USING (warehouse_id, sku)
ORDER BY d.warehouse_id, d.sku
"""


async def reorder(
    conn: asyncpg.Connection, *, warehouse_id: str | None = None, sku: str | None = None
) -> list[dict[str, Any]]:
    out = []
    for r in await conn.fetch(_REORDER_SQL, warehouse_id, sku):
        demand = demand_stats(r["units"], r["max_daily"], r["first_day"], r["last_day"])
        if r["sku_n"]:
            lead: LeadTimeStats | None = LeadTimeStats(
                r["sku_n"], r["sku_avg"], r["sku_max"], "sku"
            )
        elif r["wh_n"]:
            lead = LeadTimeStats(r["wh_n"], r["wh_avg"], r["wh_max"], "warehouse")
        else:
            lead = None
        item: dict[str, Any] = {
            "warehouse_id": r["warehouse_id"],
            "sku": r["sku"],
            "units_ordered": demand.units_ordered,
            "days_observed": demand.days_observed,
            "avg_daily_demand": demand.avg_daily,
            "max_daily_demand": demand.max_daily,
            "lead_time_observations": lead.observations if lead else 0,
            "lead_time_source": lead.source if lead else None,
            "avg_lead_time_days": lead.avg_days if lead else None,
            "max_lead_time_days": lead.max_days if lead else None,
            "available": r["available"],
            "incoming": r["incoming"],
            "backordered": r["backordered"],
            "safety_stock": None,
            "reorder_point": None,
            "position": r["available"] + r["incoming"] - r["backordered"],
            "gap": None,
            "suggested_order_quantity": None,
        }
        if lead is not None:
            s = suggest(demand, lead, r["available"], r["incoming"], r["backordered"])
            item.update(
                safety_stock=s.safety_stock,
                reorder_point=s.reorder_point,
                gap=s.gap,
                suggested_order_quantity=s.suggested_order_quantity,
            )
        out.append(item)
    return out


# Schema-qualified, so any connection will do: "projection" is the live schema
# (service_layer/projector.py LIVE_SCHEMA).
_LIVE_OFFSETS = "SELECT topic, partition, next_offset FROM projection.projector_offsets"


async def live_offsets(conn: asyncpg.Connection) -> dict[tuple[str, int], int]:
    """How far the live projection has applied each (topic, partition): its next offset.

    For tools that watch progress (`fulfil demo`); raises asyncpg's
    UndefinedTableError before the projector has migrated."""
    return {(r[0], r[1]): r[2] for r in await conn.fetch(_LIVE_OFFSETS)}


_LIVE_POSITIONS = (
    "SELECT topic, partition, next_offset, updated_at FROM projection.projector_offsets"
)


async def live_positions(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every (topic, partition) the live projection reads: its next offset and when a
    batch last stored it (for `fulfil status`). Raises asyncpg's UndefinedTableError
    before the projector has migrated."""
    return [dict(r) for r in await conn.fetch(_LIVE_POSITIONS)]
