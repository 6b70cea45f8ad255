"""One line per event of a trace. Never quotes the customer block; free text
from upstream (reasons) is scrubbed of e-mail addresses unless asked."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fulfil_platform.logs import redact_pii

if TYPE_CHECKING:
    from fulfil.trace_model import Entry


def redact(value: dict[str, Any]) -> dict[str, Any]:
    return redact_pii(None, "", value)


class _Facts(dict[str, Any]):
    """An event's data for summaries: a missing required field reads "?" (dead letters)."""

    OPTIONAL = frozenset({"inbound_id", "supplier", "priority", "cause", "lines", "shipment_id"})

    def get(self, key: str, default: Any = None) -> Any:
        value = super().get(key)
        if value is None:
            return default if key in self.OPTIONAL else "?"
        return value


def _lines(lines: Any, limit: int = 4) -> str:
    if not isinstance(lines, list):
        return ""
    parts = []
    for line in lines[:limit]:
        if not isinstance(line, dict):
            continue
        text = f"{line.get('sku')}×{line.get('quantity')}"
        if line.get("unit_price") is not None:
            text += f" @ {line.get('unit_price')} {line.get('currency')}"
        parts.append(text)
    if len(lines) > limit:
        parts.append(f"+{len(lines) - limit} more")
    return ", ".join(parts)


_AMOUNTS = ("shipped", "allocated", "backordered", "reserved", "rejected", "cancelled")


def _eta_facts(line: dict[str, Any]) -> list[str]:
    if line.get("previous_eta") is not None:
        return [f"eta {line.get('previous_eta')} → {line.get('eta') or 'no date'}"]
    if not line.get("backordered"):
        return []
    return [f"eta {line.get('eta')}" if line.get("eta") is not None else "eta: no date yet"]


def _allocation_line(line: dict[str, Any]) -> str:
    facts = [f"{name} {line[name]}" for name in _AMOUNTS if line.get(name)]
    facts += _eta_facts(line)
    if line.get("reason"):
        facts.append(str(line["reason"]))
    if line.get("consent"):
        facts.append(f"consent {line['consent']} (promised {line.get('promised_eta')})")
    return f"L{line.get('line_no')} {line.get('sku')}×{line.get('quantity')}: {', '.join(facts) or 'no change'}"


def _allocation_lines(lines: Any) -> str:
    if not isinstance(lines, list):
        return ""
    return "; ".join(_allocation_line(line) for line in lines if isinstance(line, dict))


def summarize(entry: Entry, show_pii: bool = False) -> str:
    """One line about the event."""
    if entry.dead_letter is not None:
        dl = entry.dead_letter
        where = (
            f" from {dl['source_topic']}[{dl['source_partition']}]@{dl['source_offset']}"
            if dl.get("source_topic")
            else ""
        )
        text = f"dead letter{where}: {dl.get('kind') or '?'}: {dl.get('reason') or ''}".strip()
    else:
        text = _summary(entry.type, _Facts(entry.data))
    if entry.dead_lettered_as is not None:
        text += f" [dead-lettered: {entry.dead_lettered_as}]"
    return text if show_pii else redact({"summary": text})["summary"]


def _order_placed(d: _Facts) -> str:
    text = f"order {d.get('order_id')}: {_lines(d.get('lines'))}; {d.get('fulfilment_policy', 'ship_partial')}"
    return text + (f"; priority {d['priority']}" if d.get("priority") else "")


def _stock_received(d: _Facts) -> str:
    via = f" against inbound {d['inbound_id']}" if d.get("inbound_id") else " (no inbound)"
    return f"{d.get('sku')} +{d.get('quantity')} received{via} (receipt {d.get('receipt_id')})"


def _stock_adjusted(d: _Facts) -> str:
    delta = d.get("delta")
    sign = "+" if isinstance(delta, int) and delta > 0 else ""
    return f"{d.get('sku')} {sign}{delta} adjusted: {d.get('reason')}"


def _inbound_scheduled(d: _Facts) -> str:
    supplier = f" from {d['supplier']}" if d.get("supplier") else ""
    return (
        f"inbound {d.get('inbound_id')}{supplier} expected {d.get('eta')}: {_lines(d.get('lines'))}"
    )


def _sku_policy(d: _Facts) -> str:
    text = f"{d.get('sku')}: backorderable={d.get('backorderable')}, discontinued={d.get('discontinued')}"
    for name in ("backorder_limit", "backorder_mode", "release_date"):
        if dict.get(d, name) is not None:  # optional: shown only when set
            text += f", {name}={dict.get(d, name)}"
    return text


def _eta_changed(d: _Facts) -> str:
    cause = d.get("cause") if isinstance(d.get("cause"), dict) else {}
    why = cause.get("event_type") or "?"
    if cause.get("inbound_id"):
        why += f" of inbound {cause['inbound_id']}"
    if cause.get("reason"):
        why += f": {cause['reason']}"
    return f"{_allocation_lines(d.get('lines'))} (cause: {why})"


def _shipment(d: _Facts) -> str:
    return f"shipment {d.get('shipment_id')}: {_allocation_lines(d.get('lines'))}"


def _with_reason(d: _Facts) -> str:
    text = f"{d.get('reason')}: {_allocation_lines(d.get('lines'))}"
    left = d.get("not_cancelled")
    if isinstance(left, list) and left:
        text += "; not cancelled: " + ", ".join(
            f"L{n.get('line_no')}×{n.get('quantity')} {n.get('reason')}"
            for n in left
            if isinstance(n, dict)
        )
    return text


def _rejected(d: _Facts) -> str:
    if d.get("reason") == "invalid":
        errors = d.get("errors") if isinstance(d.get("errors"), list) else []
        paths = ", ".join(str(e.get("path")) for e in errors if isinstance(e, dict))
        return f"refused as invalid: {paths}"
    return _allocation_lines(d.get("lines"))


def _part_cancel(d: _Facts) -> str:
    lines = d.get("lines") if isinstance(d.get("lines"), list) else []
    asked = ", ".join(
        f"L{line.get('line_no')}×{line.get('quantity')}" for line in lines if isinstance(line, dict)
    )
    return f"order {d.get('order_id')}: cancel {asked}: {d.get('reason')}"


_SUMMARIES: dict[str, Callable[[_Facts], str]] = {
    "OrderPlaced": _order_placed,
    "OrderCancelled": lambda d: f"order {d.get('order_id')} cancelled: {d.get('reason')}",
    "StockReceived": _stock_received,
    "StockAdjusted": _stock_adjusted,
    "InboundScheduled": _inbound_scheduled,
    "ShipmentDelayed": lambda d: (
        f"inbound {d.get('inbound_id')} delayed to {d.get('new_eta')}: {d.get('reason')}"
    ),
    "SkuPolicySet": _sku_policy,
    "InboundCancelled": lambda d: (
        f"inbound {d.get('inbound_id')} cancelled: {d.get('reason')} (what is not received will not arrive)"
    ),
    "ClockTicked": lambda d: f"clock tick: now {d.get('now')}",
    "BackorderEtaChanged": _eta_changed,
    "OrderAllocated": _shipment,
    "PartiallyShipped": _shipment,
    "BackorderAllocated": _shipment,
    "Backordered": _with_reason,
    "OrderCancellationProcessed": _with_reason,
    "OrderRejected": _rejected,
    "OrderLinesCancelled": _part_cancel,
    "OrderPolicyChanged": lambda d: (
        f"order {d.get('order_id')} switched to {d.get('fulfilment_policy')}"
    ),
    "BackorderConsentGiven": lambda d: (
        f"order {d.get('order_id')}: the customer agrees to wait"
        + (f" (lines {d.get('lines')})" if dict.get(d, "lines") else "")
    ),
    "BackorderConsentRecorded": lambda d: f"consent recorded: {_allocation_lines(d.get('lines'))}",
    "InvalidOrderReceived": lambda d: f"order {d.get('order_id')} refused by the router",
}


def _summary(kind: str, facts: _Facts) -> str:
    render = _SUMMARIES.get(kind)
    return render(facts) if render else kind
