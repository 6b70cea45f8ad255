"""The projector's pure core: status rule, backorder timestamps, inbounds, aging, reorder."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from schemas.decode import to_wire
from schemas.registry import encode
from services.projector.adapters.decode import Skip, decode_allocation, decode_input
from services.projector.domain.aging import age_days, bucket
from services.projector.domain.batch import Loaded, fold_batch
from services.projector.domain.events import (
    AllocationLine,
    Customer,
    InboundScheduled,
    OrderEvent,
    OrderPlaced,
    ShipmentDelayed,
    StockReceived,
)
from services.projector.domain.inbounds import (
    apply_delayed,
    apply_received,
    apply_scheduled,
    is_late,
)
from services.projector.domain.orders import LineState, apply_order_event, order_status
from services.projector.domain.reorder import (
    LeadTimeStats,
    daily_demand_stats,
    reorder_point,
    safety_stock,
    suggest,
)
from tests.services.projector.helpers import scenario

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
CUSTOMER = Customer(customer_id="c1", email="c1@shop.example", name="Ada", locale="en")


def _line(no=1, qty=10, allocated=0, backordered=0, reserved=0, rejected=0, cancelled=0, eta=None):
    return AllocationLine(
        line_no=no,
        sku="SKU-A",
        quantity=qty,
        allocated=allocated,
        backordered=backordered,
        reserved=reserved,
        rejected=rejected,
        cancelled=cancelled,
        eta=eta,
        unit_price="12.50",
        currency="EUR",
        reason="discontinued" if rejected else None,
    )


def _event(kind, *lines, at=T0, order_id="o1"):
    return OrderEvent(f"{kind}-{at.isoformat()}", kind, at, order_id, "WH1", CUSTOMER, tuple(lines))


# ---------------------------------------------------------------- status rule


@pytest.mark.parametrize(
    ("lines", "ever", "status"),
    [
        ([], False, "pending"),
        ([LineState(1, "A", 5, allocated=5)], False, "allocated"),
        ([LineState(1, "A", 5, allocated=5)], True, "shipped"),
        ([LineState(1, "A", 5, backordered=5)], True, "backordered"),
        ([LineState(1, "A", 5, backordered=5, reserved=2)], True, "backordered"),
        ([LineState(1, "A", 5, allocated=2, backordered=3)], True, "partially_shipped"),
        ([LineState(1, "A", 5, rejected=5), LineState(2, "B", 1, rejected=1)], False, "rejected"),
        ([LineState(1, "A", 5, rejected=2, cancelled=3)], True, "cancelled"),
        ([LineState(1, "A", 5, allocated=2, cancelled=3)], True, "shipped"),
        ([LineState(1, "A", 5, allocated=5), LineState(2, "B", 2, rejected=2)], False, "allocated"),
    ],
)
def test_status_rule(lines, ever, status) -> None:
    assert order_status(lines, ever) == status


def test_a_backorder_keeps_its_start_until_the_line_closes() -> None:
    state = apply_order_event(
        None, _event("PartiallyShipped", _line(allocated=4, backordered=6, eta=date(2026, 11, 16)))
    )
    assert (state.status, state.backordered_since) == ("partially_shipped", T0)
    later = T0 + timedelta(days=3)
    state = apply_order_event(
        state,
        _event(
            "BackorderEtaChanged",
            _line(allocated=4, backordered=6, eta=date(2026, 11, 23)),
            at=later,
        ),
    )
    state = apply_order_event(
        state, _event("BackorderAllocated", _line(allocated=8, backordered=2), at=later)
    )
    assert state.backordered_since == T0  # still waiting since the first day
    assert state.lines[1].eta is None and state.lines[1].unit_price == Decimal("12.50")
    state = apply_order_event(
        state, _event("BackorderAllocated", _line(allocated=10), at=later + timedelta(days=1))
    )
    assert (state.status, state.backordered_since, state.updated_at) == (
        "shipped",
        None,
        later + timedelta(days=1),
    )


def test_released_in_full_at_placement_is_allocated() -> None:
    state = apply_order_event(None, _event("OrderRejected", _line(2, qty=1, rejected=1)))
    state = apply_order_event(state, _event("OrderAllocated", _line(1, allocated=10)))
    assert state.status == "allocated" and not state.backordered_ever


# ---------------------------------------------------------------- inbounds


def test_inbound_original_and_current_eta_delay_and_receipts() -> None:
    sched = InboundScheduled(
        "e1", T0, "WH1", "in-1", (("SKU-A", 10), ("SKU-B", 5)), date(2026, 11, 16), "Acme"
    )
    state = apply_scheduled(None, sched)
    state = apply_delayed(
        state, ShipmentDelayed("e2", T0 + timedelta(days=1), "WH1", "in-1", date(2026, 11, 23))
    )
    received = T0 + timedelta(days=8)
    state = apply_received(
        state, StockReceived(received, "WH1", "r1", "in-1", "SKU-A", 4, received)
    )
    resent = InboundScheduled(
        "e3", T0 + timedelta(days=9), "WH1", "in-1", (("SKU-A", 12),), date(2026, 11, 25), None
    )
    state = apply_scheduled(state, resent)
    assert (state.original_eta, state.current_eta, state.delay_days) == (
        date(2026, 11, 16),
        date(2026, 11, 25),
        9,
    )
    assert (state.scheduled_at, state.supplier) == (T0, "Acme")
    assert {s: (ln.quantity_expected, ln.quantity_received) for s, ln in state.lines.items()} == {
        "SKU-A": (12, 4),
        "SKU-B": (0, 0),  # dropped from the re-sent schedule: no longer coming
    }
    assert state.lines["SKU-A"].first_received_at == received
    assert apply_delayed(None, ShipmentDelayed("e4", T0, "WH1", "ghost", date(2026, 12, 1))) is None


def test_late_means_delayed_or_overdue() -> None:
    today = date(2026, 11, 20)
    assert is_late(date(2026, 11, 25), 2, 10, 0, today)  # delayed
    assert is_late(date(2026, 11, 18), 0, 10, 4, today)  # overdue and still open
    assert not is_late(date(2026, 11, 18), 0, 10, 10, today)  # arrived
    assert not is_late(date(2026, 11, 25), 0, 10, 0, today)


def test_batch_counts_a_receipt_and_an_order_once() -> None:
    received = StockReceived(T0, "WH1", "r1", "in-1", "SKU-A", 4, T0)
    placed = OrderPlaced("p1", T0, "o1", "WH1", CUSTOMER, T0, ((1, "SKU-A", 3),))
    changes = fold_batch(
        Loaded(counted_receipts={("WH1", "r0")}), [received, received, placed, placed]
    )
    assert len(changes.receipts) == 1 and changes.inbounds[0].lines["SKU-A"].quantity_received == 4
    assert [(d.sku, d.quantity, d.day) for d in changes.demand] == [("SKU-A", 3, date(2026, 11, 2))]


# ---------------------------------------------------------------- aging


@pytest.mark.parametrize(
    ("waited", "name"),
    [
        (timedelta(hours=-3), "days_0_7"),
        (timedelta(0), "days_0_7"),
        (timedelta(days=7, hours=23), "days_0_7"),
        (timedelta(days=8), "days_8_14"),
        (timedelta(days=14, hours=23), "days_8_14"),
        (timedelta(days=15), "days_15_30"),
        (timedelta(days=30, hours=23), "days_15_30"),
        (timedelta(days=31), "days_over_30"),
    ],
)
def test_aging_buckets(waited, name) -> None:
    assert bucket(age_days(T0, T0 + waited)) == name


# ---------------------------------------------------------------- the seeds' formula


def test_safety_stock_and_reorder_point_worked_example() -> None:
    """The coffee-bean example of the backorder guide, by hand:

    max daily 50 bags, max lead 10 days, avg daily 20, avg lead 6:
    safety stock = 50×10 − 20×6 = 500 − 120 = 380 bags,
    reorder point = 20×6 + 380 = 500 bags.
    """
    assert safety_stock(50, 10, 20, 6) == 380
    assert reorder_point(20, 6, 380) == 500
    days = {
        date(2026, 11, 2): 50,
        date(2026, 11, 3): 10,
        date(2026, 11, 5): 20,
        date(2026, 11, 6): 20,
    }
    demand = daily_demand_stats(days)  # 100 units over 5 observed days (the 4th had none)
    assert (demand.days_observed, demand.avg_daily, demand.max_daily) == (5, 20.0, 50)
    lead = LeadTimeStats(
        observations=2, avg_days=6.0, max_days=10.0, source="sku"
    )  # leads 2 and 10 days
    suggestion = suggest(demand, lead, available=30, incoming=40, backordered=10)
    assert (suggestion.safety_stock, suggestion.reorder_point) == (380, 500)
    assert (suggestion.position, suggestion.gap, suggestion.suggested_order_quantity) == (
        60,
        440,
        440,
    )
    assert (
        suggest(demand, lead, available=600, incoming=0, backordered=0).suggested_order_quantity
        == 0
    )


# ---------------------------------------------------------------- decoding


def test_fast_allocation_decoder_agrees_with_the_contract() -> None:
    _, outputs = scenario(300, seed=5)
    for event in outputs:
        decoded = decode_allocation(encode(event))
        if event.type == "StockPositionChanged":
            assert (decoded.sku, decoded.available, decoded.next_eta) == (
                event.data.sku,
                event.data.available,
                event.data.next_eta,
            )
            continue
        assert (decoded.order_id, decoded.type, decoded.occurred_at) == (
            event.data.order_id,
            event.type,
            event.occurred_at,
        )
        # The contract's own line, as decoded: nothing mapped by hand.
        assert list(decoded.lines) == [to_wire(line) for line in event.data.lines]


def _valid_allocation() -> dict:
    _, outputs = scenario(100, seed=1)
    return orjson.loads(encode(next(o for o in outputs if o.type == "OrderAllocated")))


@pytest.mark.parametrize(
    ("mutate", "kind"),
    [
        (lambda d: b"{not json", "bad_json"),
        (lambda d: {**d, "type": "OrderTeleported"}, "unknown_type"),
        (lambda d: {**d, "version": 2}, "schema_violation"),
        (lambda d: {**d, "occurred_at": "yesterday"}, "schema_violation"),
        (
            lambda d: {
                **d,
                "data": {**d["data"], "lines": [{**d["data"]["lines"][0], "allocated": -1}]},
            },
            "schema_violation",
        ),
        (
            lambda d: {
                **d,
                "data": {**d["data"], "lines": [{**d["data"]["lines"][0], "allocated": 0}]},
            },
            "schema_violation",
        ),
        (lambda d: {**d, "data": {**d["data"], "customer": None}}, "schema_violation"),
    ],
)
def test_invalid_allocation_events_are_skipped(mutate, kind) -> None:
    raw = mutate(_valid_allocation())
    with pytest.raises(Skip) as info:
        decode_allocation(raw if isinstance(raw, bytes) else orjson.dumps(raw))
    assert info.value.kind == kind
    assert "@" not in info.value.reason  # reasons never carry payload data


def test_inputs_are_validated_like_the_router_does() -> None:
    inputs, _ = scenario(100, seed=1)
    placed = orjson.loads(encode(next(e for e in inputs if e.type == "OrderPlaced")))
    assert isinstance(decode_input(orjson.dumps(placed), 1_000_000), OrderPlaced)
    bad = {
        **placed,
        "data": {**placed["data"], "lines": [{"line_no": 1, "sku": "A", "quantity": -4}]},
    }
    with pytest.raises(Skip):
        decode_input(orjson.dumps(bad), 1_000_000)
    with pytest.raises(Skip) as info:
        decode_input(orjson.dumps(placed), 100)
    assert info.value.kind == "oversize"
    adjusted = orjson.loads(encode(next(e for e in inputs if e.type == "StockAdjusted")))
    assert decode_input(orjson.dumps(adjusted), 1_000_000) is None  # not used: not validated either
