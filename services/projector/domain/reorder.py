"""Reorder suggestions from observed demand and lead times (the seeds' formula).

    safety stock  = max daily demand × max lead time − avg daily demand × avg lead time
    reorder point = avg daily demand × avg lead time + safety stock
    position      = available + incoming − backordered
    gap           = reorder point − position        (> 0: order now)
    suggested     = ceil(gap) when gap > 0, else 0

Daily demand: units ordered per UTC calendar day of `placed_at`. The days
observed for a SKU run from the day it was first ordered to the last day on
which anything was ordered in its warehouse, inclusive, so quiet days count
as zero demand (an average over order days only would overstate slow movers).

Lead time: days (fractional) from an inbound's first InboundScheduled
`occurred_at` to the first receipt of that SKU against it. A SKU never
received yet borrows its warehouse's lead times; without any, no suggestion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True, slots=True)
class DemandStats:
    units_ordered: int
    days_observed: int
    avg_daily: float
    max_daily: int


@dataclass(frozen=True, slots=True)
class LeadTimeStats:
    observations: int
    avg_days: float
    max_days: float
    source: str  # "sku" or "warehouse"


@dataclass(frozen=True, slots=True)
class Suggestion:
    safety_stock: float
    reorder_point: float
    position: int
    gap: float
    suggested_order_quantity: int


def demand_stats(
    units_ordered: int, max_daily: int, first_day: date, last_day: date
) -> DemandStats:
    days = (last_day - first_day).days + 1
    return DemandStats(units_ordered, days, units_ordered / days, max_daily)


def daily_demand_stats(units_by_day: dict[date, int], last_day: date | None = None) -> DemandStats:
    """The same statistics from a day → units map (tests and the reference fold)."""
    first = min(units_by_day)
    last = max(last_day or first, max(units_by_day))
    return demand_stats(sum(units_by_day.values()), max(units_by_day.values()), first, last)


def safety_stock(max_daily: float, max_lead: float, avg_daily: float, avg_lead: float) -> float:
    return max_daily * max_lead - avg_daily * avg_lead


def reorder_point(avg_daily: float, avg_lead: float, safety: float) -> float:
    return avg_daily * avg_lead + safety


def suggest(
    demand: DemandStats, lead: LeadTimeStats, available: int, incoming: int, backordered: int
) -> Suggestion:
    safety = safety_stock(demand.max_daily, lead.max_days, demand.avg_daily, lead.avg_days)
    point = reorder_point(demand.avg_daily, lead.avg_days, safety)
    position = available + incoming - backordered
    gap = point - position
    # Float noise (1e-13) must not turn an exact gap of 380 into 381 units.
    quantity = math.ceil(round(gap, 6)) if gap > 0 else 0
    return Suggestion(safety, point, position, gap, quantity)
