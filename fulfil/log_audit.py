"""The guarantees of DESIGN.md §5, recomputed from the topics alone: an audit of the logs.

A tool, not the allocator's own checks on its state
(services/allocator/domain/invariants.py): this one trusts nothing but what
is on the topics.

Pure: given the parsed inputs and the outputs on allocations.v1, report every
line whose quantities do not add up, every SKU that released more than it
received (plus positive adjustments, minus the negative adjustments taken from
stock: all of them but the shortfall the last stock position still reports),
and any output id written twice. The demo runs it after every run;
tests feed it corrupted outputs to prove it can fail.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from schemas.contract import (
    Envelope,
    OrderPlaced,
    OutputEvent,
    StockAdjusted,
    StockAlertTriggered,
    StockPositionChanged,
    StockReceived,
)


@dataclass
class InvariantReport:
    lines_checked: int = 0
    skus_checked: int = 0
    outputs: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


Pool = tuple[str, str]  # (warehouse_id, sku)
LineKey = tuple[str, int]  # (order_id, line_no)


def check(inputs: Iterable[Envelope], outputs: Iterable[OutputEvent]) -> InvariantReport:
    report = InvariantReport()
    inputs = list(inputs)
    ordered = _ordered(inputs)
    supply, shrunk = _supply(inputs)
    shortfall: dict[Pool, int] = {}
    latest: dict[LineKey, int] = {}
    released: Counter[Pool] = Counter()
    ids: Counter[str] = Counter()
    alerts: Counter[Pool] = Counter()  # (warehouse_id, alert_id): told once at most
    for out in outputs:
        report.outputs += 1
        ids[out.id] += 1
        if isinstance(out, StockPositionChanged):
            shortfall[(out.data.warehouse_id, out.data.sku)] = out.data.shortfall
            continue
        if isinstance(out, StockAlertTriggered):
            alerts[(out.data.warehouse_id, out.data.alert_id)] += 1
            continue
        _check_decision(report, out, latest, released)
    _check_lines(report, ordered, latest)
    _check_released(report, released, supply, shrunk, shortfall)
    for event_id, count in ids.items():
        if count > 1:
            report.problems.append(f"output {event_id} written {count} times")
    for (_, alert_id), count in alerts.items():
        if count > 1:
            report.problems.append(f"stock alert {alert_id} told {count} times")
    return report


def _ordered(inputs: list[Envelope]) -> dict[LineKey, int]:
    """The quantity of every order line, as first placed."""
    ordered: dict[LineKey, int] = {}
    for event in inputs:
        if isinstance(event, OrderPlaced):
            for line in event.data.lines:
                ordered.setdefault((event.data.order_id, line.line_no), line.quantity)
    return ordered


def _supply(inputs: list[Envelope]) -> tuple[Counter[Pool], Counter[Pool]]:
    """Units received or added per pool, and units adjusted away."""
    supply: Counter[Pool] = Counter()
    shrunk: Counter[Pool] = Counter()
    receipts: set[tuple[str, str]] = set()
    adjustments: set[tuple[str, str]] = set()
    for event in inputs:
        # Business keys, as the allocator dedups them: a re-sent receipt adds nothing.
        if isinstance(event, StockReceived):
            if (event.data.warehouse_id, event.data.receipt_id) in receipts:
                continue
            receipts.add((event.data.warehouse_id, event.data.receipt_id))
            supply[(event.data.warehouse_id, event.data.sku)] += event.data.quantity
        elif isinstance(event, StockAdjusted):
            if (event.data.warehouse_id, event.data.adjustment_id) in adjustments:
                continue
            adjustments.add((event.data.warehouse_id, event.data.adjustment_id))
            if event.data.delta > 0:
                supply[(event.data.warehouse_id, event.data.sku)] += event.data.delta
            else:
                shrunk[(event.data.warehouse_id, event.data.sku)] -= event.data.delta
    return supply, shrunk


def _check_decision(
    report: InvariantReport, out: Any, latest: dict[LineKey, int], released: Counter[Pool]
) -> None:
    """Record an allocation decision's lines; each must add up to its quantity."""
    for decided in out.data.lines:
        line_key = (out.data.order_id, decided.line_no)
        latest[line_key] = decided.quantity
        released[(out.data.warehouse_id, decided.sku)] += decided.shipped
        # Every output states the line's totals after it, so every one must add up.
        if (
            decided.allocated + decided.backordered + decided.rejected + decided.cancelled
            != decided.quantity
        ):
            report.problems.append(
                f"order {line_key[0]} line {line_key[1]} in {out.type} {out.id}: allocated {decided.allocated} + "
                f"backordered {decided.backordered} + rejected {decided.rejected} + cancelled {decided.cancelled} "
                f"!= ordered {decided.quantity}"
            )


def _check_lines(
    report: InvariantReport, ordered: dict[LineKey, int], latest: dict[LineKey, int]
) -> None:
    """Every ordered line has a decision, and the decisions agree on its quantity."""
    for (order_id, line_no), quantity in sorted(latest.items()):
        report.lines_checked += 1
        if (order_id, line_no) in ordered and ordered[(order_id, line_no)] != quantity:
            report.problems.append(
                f"order {order_id} line {line_no}: outputs say {quantity} ordered, the order says {ordered[(order_id, line_no)]}"
            )
    for order_id, line_no in sorted(set(ordered) - set(latest)):
        report.problems.append(
            f"order {order_id} line {line_no}: no allocation decision was published"
        )


def _check_released(
    report: InvariantReport,
    released: Counter[Pool],
    supply: Counter[Pool],
    shrunk: Counter[Pool],
    shortfall: dict[Pool, int],
) -> None:
    """No pool ships more than was received or added, less what was adjusted away."""
    for pool, units in sorted(released.items()):
        report.skus_checked += 1
        taken = shrunk[pool] - shortfall.get(pool, 0)  # negative adjustments taken from stock
        if units > supply[pool] - taken:
            report.problems.append(
                f"sku {pool[1]} in {pool[0]}: released {units} units, more than the {supply[pool]} received "
                f"or added less the {taken} adjusted away"
            )
