"""A reference fold of the projector's read models in plain Python.

Written from the issue's definitions, independently of services/projector
(it shares no code with it): the tests compare every table and query the
projector produces with what this computes from the same events.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

DAY = timedelta(days=1)


def _status(lines: list[dict[str, Any]], ever: bool) -> str:
    total = sum(ln["quantity"] for ln in lines)
    allocated = sum(ln["allocated"] for ln in lines)
    open_units = sum(ln["backordered"] for ln in lines)
    if not lines:
        return "pending"
    if open_units:
        return "backordered" if allocated == 0 else "partially_shipped"
    if sum(ln["rejected"] for ln in lines) == total:
        return "rejected"
    if sum(ln["cancelled"] for ln in lines) and not allocated:
        return "cancelled"
    return "shipped" if ever else "allocated"


def fold(inputs: list[Any], outputs: list[Any]) -> dict[str, Any]:
    """Tables as {table: {key: row}} from parsed input and allocation envelopes."""
    # Keyed like the allocator: (warehouse_id, order_id); lines add line_no.
    orders: dict[tuple[str, str], dict[str, Any]] = {}
    lines: dict[tuple[str, str, int], dict[str, Any]] = {}
    ever: set[tuple[str, str]] = set()
    positions: dict[tuple[str, str], dict[str, Any]] = {}
    touched_skus: set[tuple[str, str]] = set()

    def order_row(order_id: str, wh: str) -> dict[str, Any]:
        return orders.setdefault((wh, order_id), {
            "order_id": order_id, "warehouse_id": wh, "customer_id": None,
            "customer_email": None, "customer_name": None, "customer_locale": None,
            "status": "pending", "placed_at": None, "updated_at": None,
            "backordered_since": None, "backordered_ever": False,
            "last_event_type": None, "last_event_id": None,
        })  # fmt: skip

    def later(a: datetime | None, b: datetime) -> datetime:
        return b if a is None or b > a else a

    for ev in outputs:
        d = ev.data
        if ev.type == "StockPositionChanged":
            positions[(d.warehouse_id, d.sku)] = {
                "available": d.available, "reserved": d.reserved, "incoming": d.incoming,
                "next_eta": d.next_eta, "shortfall": d.shortfall, "position_at": ev.occurred_at,
                "promise_eta": d.promise_eta,
            }  # fmt: skip
            continue
        row = order_row(d.order_id, d.warehouse_id)
        for ln in d.lines:
            key = (d.warehouse_id, d.order_id, ln.line_no)
            prev = lines.get(key)
            since = None
            eta_reason = backorder_reason = None
            still_open = bool(prev and prev["backordered"])
            if ln.backordered:
                ever.add((d.warehouse_id, d.order_id))
                since = prev["backordered_since"] if still_open else ev.occurred_at
                # why it waits: the last Backordered reason (PartiallyShipped: short of stock)
                if ev.type == "Backordered":
                    backorder_reason = d.reason
                elif ev.type == "PartiallyShipped":
                    backorder_reason = "insufficient_stock"
                elif still_open:
                    backorder_reason = prev["backorder_reason"]
                # why it has no date
                if ln.eta is None:
                    cause = d.cause if ev.type == "BackorderEtaChanged" else None
                    if cause is not None and cause.reason == "inbound_overdue":
                        eta_reason = "inbound_overdue"
                    elif cause is not None and cause.event_type == "InboundCancelled":
                        eta_reason = "inbound_cancelled"
                    elif still_open and prev["eta"] is None and prev["eta_reason"]:
                        eta_reason = prev["eta_reason"]
                    else:
                        eta_reason = "not_scheduled"
            lines[key] = {
                "order_id": d.order_id, "line_no": ln.line_no, "warehouse_id": d.warehouse_id,
                "sku": ln.sku, "quantity": ln.quantity, "allocated": ln.allocated,
                "backordered": ln.backordered, "reserved": ln.reserved, "rejected": ln.rejected,
                "cancelled": ln.cancelled, "eta": ln.eta,
                "unit_price": Decimal(ln.unit_price) if ln.unit_price else None,
                "currency": ln.currency, "reason": ln.reason if ln.rejected else None,
                "backordered_since": since, "updated_at": ev.occurred_at,
                "eta_reason": eta_reason, "backorder_reason": backorder_reason,
            }  # fmt: skip
            touched_skus.add((d.warehouse_id, ln.sku))
        c = d.customer
        row.update(
            warehouse_id=d.warehouse_id, customer_id=c.customer_id, customer_email=c.email,
            customer_name=c.name, customer_locale=c.locale,
            updated_at=later(row["updated_at"], ev.occurred_at),
            last_event_type=ev.type, last_event_id=ev.id,
        )  # fmt: skip

    demand_seen: set[tuple[str, str]] = set()
    demand: dict[tuple[str, str, Any], int] = defaultdict(int)
    inbounds: dict[tuple[str, str], dict[str, Any]] = {}
    inbound_lines: dict[tuple[str, str, str], dict[str, Any]] = {}
    seen_ids: set[str] = set()
    receipts: set[tuple[str, str]] = set()

    def inbound_line(wh: str, inbound_id: str, sku: str) -> dict[str, Any]:
        return inbound_lines.setdefault((wh, inbound_id, sku), {
            "warehouse_id": wh, "inbound_id": inbound_id, "sku": sku, "quantity_expected": 0,
            "quantity_received": 0, "first_received_at": None, "quantity_cancelled": 0,
        })  # fmt: skip

    for ev in inputs:
        d = ev.data
        if ev.type == "OrderPlaced":
            row = order_row(d.order_id, d.warehouse_id)
            if row["placed_at"] is None or d.placed_at < row["placed_at"]:
                row["placed_at"] = d.placed_at
            row["updated_at"] = later(row["updated_at"], ev.occurred_at)
            if row["customer_id"] is None:
                c = d.customer
                row.update(
                    customer_id=c.customer_id,
                    customer_email=c.email,
                    customer_name=c.name,
                    customer_locale=c.locale,
                )
            if (d.warehouse_id, d.order_id) not in demand_seen:
                demand_seen.add((d.warehouse_id, d.order_id))
                day = d.placed_at.astimezone(UTC).date()
                for ln in d.lines:
                    demand[(d.warehouse_id, ln.sku, day)] += ln.quantity
        elif ev.type == "InboundScheduled":
            if ev.id in seen_ids:
                continue
            seen_ids.add(ev.id)
            key = (d.warehouse_id, d.inbound_id)
            ib = inbounds.setdefault(key, {
                "warehouse_id": d.warehouse_id, "inbound_id": d.inbound_id, "supplier": None,
                "original_eta": None, "current_eta": None, "scheduled_at": None, "updated_at": None,
                "cancelled_at": None, "cancel_reason": None,
            })  # fmt: skip
            ib["cancelled_at"] = ib["cancel_reason"] = None  # a new plan
            for (wh, iid, _), line in inbound_lines.items():
                if (wh, iid) == key:
                    line["quantity_cancelled"] = 0
            if ib["original_eta"] is None:
                ib["original_eta"] = d.eta
            ib["current_eta"] = d.eta
            if ib["scheduled_at"] is None or ev.occurred_at < ib["scheduled_at"]:
                ib["scheduled_at"] = ev.occurred_at
            ib["supplier"] = d.supplier or ib["supplier"]
            ib["updated_at"] = later(ib["updated_at"], ev.occurred_at)
            listed = {ln.sku: ln.quantity for ln in d.lines}
            for (wh, iid, sku), line in inbound_lines.items():
                if (wh, iid) == key and sku not in listed:
                    line["quantity_expected"] = min(
                        line["quantity_expected"], line["quantity_received"]
                    )
            for sku, quantity in listed.items():
                inbound_line(d.warehouse_id, d.inbound_id, sku)["quantity_expected"] = quantity
        elif ev.type == "ShipmentDelayed":
            if ev.id in seen_ids:
                continue
            seen_ids.add(ev.id)
            ib = inbounds.get((d.warehouse_id, d.inbound_id))
            if ib is None or ib["original_eta"] is None:
                continue
            ib["current_eta"] = d.new_eta
            ib["updated_at"] = later(ib["updated_at"], ev.occurred_at)
        elif ev.type == "InboundCancelled":
            if ev.id in seen_ids:
                continue
            seen_ids.add(ev.id)
            ib = inbounds.get((d.warehouse_id, d.inbound_id))
            if ib is None or ib["original_eta"] is None:
                continue
            ib.update(cancelled_at=d.cancelled_at, cancel_reason=d.reason)
            ib["updated_at"] = later(ib["updated_at"], ev.occurred_at)
            for (wh, iid, _), line in inbound_lines.items():
                if (wh, iid) == (d.warehouse_id, d.inbound_id):
                    line["quantity_cancelled"] = max(
                        0, line["quantity_expected"] - line["quantity_received"]
                    )
        elif ev.type == "StockReceived" and d.inbound_id is not None:
            if (d.warehouse_id, d.receipt_id) in receipts:
                continue
            receipts.add((d.warehouse_id, d.receipt_id))
            ib = inbounds.setdefault((d.warehouse_id, d.inbound_id), {
                "warehouse_id": d.warehouse_id, "inbound_id": d.inbound_id, "supplier": None,
                "original_eta": None, "current_eta": None, "scheduled_at": None, "updated_at": None,
                "cancelled_at": None, "cancel_reason": None,
            })  # fmt: skip
            ib["updated_at"] = later(ib["updated_at"], ev.occurred_at)
            line = inbound_line(d.warehouse_id, d.inbound_id, d.sku)
            line["quantity_received"] += d.quantity
            if line["first_received_at"] is None or d.received_at < line["first_received_at"]:
                line["first_received_at"] = d.received_at

    for ib in inbounds.values():
        ib["delay_days"] = (
            (ib["current_eta"] - ib["original_eta"]).days
            if ib["original_eta"] is not None
            else None
        )

    for order_key, row in orders.items():
        own = [ln for (wh, oid, _), ln in lines.items() if (wh, oid) == order_key]
        row["backordered_ever"] = order_key in ever
        row["status"] = _status(own, order_key in ever)
        open_since = [ln["backordered_since"] for ln in own if ln["backordered"]]
        row["backordered_since"] = min(open_since) if open_since else None

    backlog: dict[tuple[str, str], dict[str, Any]] = {}
    for key in touched_skus | set(positions):
        position = positions.get(key, {
            "available": 0, "reserved": 0, "incoming": 0, "next_eta": None, "shortfall": 0,
            "position_at": None, "promise_eta": None,
        })  # fmt: skip
        open_lines = [
            ln
            for ln in lines.values()
            if (ln["warehouse_id"], ln["sku"]) == key and ln["backordered"]
        ]
        backlog[key] = {
            "warehouse_id": key[0], "sku": key[1],
            "backordered_units": sum(ln["backordered"] for ln in open_lines),
            "open_orders": len({ln["order_id"] for ln in open_lines}),
            "oldest_backorder_at": min((ln["backordered_since"] for ln in open_lines), default=None),
            **position,
        }  # fmt: skip

    return {
        "orders": orders,
        "order_lines": lines,
        "sku_backlog": backlog,
        "inbounds": inbounds,
        "inbound_lines": inbound_lines,
        "daily_demand": {
            k: {"warehouse_id": k[0], "sku": k[1], "day": k[2], "units": v}
            for k, v in demand.items()
        },
    }


# ---------------------------------------------------------------- queries


def backlog_query(tables: dict[str, Any]) -> list[dict[str, Any]]:
    fields = (
        "warehouse_id",
        "sku",
        "backordered_units",
        "open_orders",
        "oldest_backorder_at",
        "next_eta",
        "promise_eta",
        "available",
        "reserved",
        "incoming",
    )
    rows = [
        {f: r[f] for f in fields} for r in tables["sku_backlog"].values() if r["backordered_units"]
    ]
    return sorted(
        rows,
        key=lambda r: (
            -r["backordered_units"],
            r["oldest_backorder_at"],
            r["warehouse_id"],
            r["sku"],
        ),
    )


def aging_query(tables: dict[str, Any], as_of: datetime) -> dict[str, Any]:
    names = ("days_0_7", "days_8_14", "days_15_30", "days_over_30")
    per: dict[tuple[str, str], dict[str, int]] = {}
    for ln in tables["order_lines"].values():
        if not ln["backordered"]:
            continue
        age = max(0, math.floor((as_of - ln["backordered_since"]) / DAY))
        name = (
            names[0] if age <= 7 else names[1] if age <= 14 else names[2] if age <= 30 else names[3]
        )
        counts = per.setdefault((ln["warehouse_id"], ln["sku"]), dict.fromkeys(names, 0))
        counts[name] += ln["backordered"]
    overall = dict.fromkeys(names, 0)
    for counts in per.values():
        for name in names:
            overall[name] += counts[name]
    return {
        "as_of": as_of,
        "overall": {**overall, "backordered_units": sum(overall.values())},
        "skus": [
            {"warehouse_id": k[0], "sku": k[1], **c, "backordered_units": sum(c.values())}
            for k, c in sorted(per.items())
        ],
    }


def deposits_query(tables: dict[str, Any]) -> dict[str, Any]:
    totals: dict[str, dict[str, Any]] = {}
    per_order: dict[tuple[str, str], dict[str, Any]] = {}
    for ln in tables["order_lines"].values():
        if not ln["backordered"] or ln["unit_price"] is None:
            continue
        t = totals.setdefault(
            ln["currency"],
            {
                "currency": ln["currency"],
                "amount": Decimal(0),
                "backordered_units": 0,
                "orders": set(),
            },
        )
        t["amount"] += ln["backordered"] * ln["unit_price"]
        t["backordered_units"] += ln["backordered"]
        t["orders"].add((ln["warehouse_id"], ln["order_id"]))
        o = per_order.setdefault((ln["warehouse_id"], ln["order_id"], ln["currency"]), {
            "warehouse_id": ln["warehouse_id"], "order_id": ln["order_id"],
            "currency": ln["currency"], "amount": Decimal(0),
            "backordered_units": 0})  # fmt: skip
        o["amount"] += ln["backordered"] * ln["unit_price"]
        o["backordered_units"] += ln["backordered"]
    return {
        "totals": [{**t, "orders": len(t["orders"])} for _, t in sorted(totals.items())],
        "orders": sorted(
            per_order.values(),
            key=lambda o: (-o["amount"], o["order_id"], o["warehouse_id"], o["currency"]),
        ),
    }


def reorder_query(tables: dict[str, Any]) -> list[dict[str, Any]]:
    by_sku: dict[tuple[str, str], dict[Any, int]] = defaultdict(dict)
    last_day: dict[str, Any] = {}
    for (wh, sku, day), row in tables["daily_demand"].items():
        by_sku[(wh, sku)][day] = row["units"]
        last_day[wh] = max(last_day.get(wh, day), day)
    leads: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (wh, iid, sku), line in tables["inbound_lines"].items():
        scheduled = tables["inbounds"][(wh, iid)]["scheduled_at"]
        received = line["first_received_at"]
        if scheduled is not None and received is not None and received >= scheduled:
            leads[(wh, sku)].append((received - scheduled).total_seconds() / 86400)
    out = []
    for (wh, sku), days in sorted(by_sku.items()):
        first = min(days)
        observed = (last_day[wh] - first).days + 1
        avg_daily = sum(days.values()) / observed
        max_daily = max(days.values())
        observations = leads.get((wh, sku)) or [
            x for (w, _), xs in leads.items() if w == wh for x in xs
        ]
        backlog = tables["sku_backlog"].get((wh, sku), {})
        available = backlog.get("available", 0)
        incoming = backlog.get("incoming", 0)
        backordered = backlog.get("backordered_units", 0)
        row: dict[str, Any] = {
            "warehouse_id": wh, "sku": sku, "units_ordered": sum(days.values()),
            "days_observed": observed, "avg_daily_demand": avg_daily, "max_daily_demand": max_daily,
            "lead_time_observations": len(observations),
            "position": available + incoming - backordered,
            "safety_stock": None, "reorder_point": None,
        }  # fmt: skip
        if observations:
            avg_lead = sum(observations) / len(observations)
            max_lead = max(observations)
            safety = max_daily * max_lead - avg_daily * avg_lead
            row["safety_stock"] = safety
            row["reorder_point"] = avg_daily * avg_lead + safety
        out.append(row)
    return out
