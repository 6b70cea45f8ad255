"""One test per allocation rule of the pure core (DESIGN.md §4)."""

from __future__ import annotations

import pickle
import uuid
from datetime import date

import orjson
import pytest

from services.allocator.domain import NAMESPACE, SOURCE, UnknownCommand, decide, new_state
from services.allocator.domain.plain import state_from_plain, state_to_plain
from tests.builders.inputs import Events, resend

from .harness import Allocator, line, of_type, one, order_ids, types

D1, D2, D3, D4 = date(2026, 11, 16), date(2026, 11, 23), date(2026, 11, 30), date(2026, 12, 7)


@pytest.fixture
def alloc() -> Allocator:
    return Allocator()


# ---------------------------------------------------------------- an order for 10 with 4 in stock


def test_ship_partial_ships_4_now_and_backorders_6(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 4)
    alloc.schedule("IN1", "WH1", [("A", 20)], D1)
    out = alloc.place("o1", "WH1", [("A", 10, "19.90", "EUR")])
    assert types(out) == ["PartiallyShipped", "StockPositionChanged"]
    shipped = line(out[0])
    assert (shipped.shipped, shipped.allocated, shipped.backordered, shipped.reserved) == (
        4,
        4,
        6,
        0,
    )
    assert shipped.eta == D1 and (shipped.unit_price, shipped.currency) == ("19.90", "EUR")
    assert out[0].data.shipment_id
    assert alloc.position("WH1", "A") == {
        "available": 0,
        "backordered": 6,
        "reserved": 0,
        "incoming": 20,
        "next_eta": D1,
        "shortfall": 0,
        "promise_eta": D1,  # unit 7 of IN1's 20
    }
    out = alloc.receive("WH1", "A", 6, inbound_id="IN1")
    assert types(out) == ["BackorderAllocated", "StockPositionChanged"]
    done = line(out[0])
    assert (done.shipped, done.allocated, done.backordered, done.eta) == (6, 10, 0, None)
    assert not alloc.state.orders  # closed orders leave the state
    assert alloc.position("WH1", "A")["incoming"] == 14


def test_ship_complete_reserves_4_and_holds_until_covered(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 4)
    out = alloc.place("o1", "WH1", [("A", 10)], policy="ship_complete")
    held = one(out, "Backordered")
    assert held.data.reason == "ship_complete_hold"
    assert (line(held).shipped, line(held).reserved, line(held).backordered) == (0, 4, 10)
    assert alloc.position("WH1", "A")["reserved"] == 4
    assert alloc.position("WH1", "A")["available"] == 0
    assert types(alloc.receive("WH1", "A", 5)) == ["StockPositionChanged"]  # 9 of 10 held
    out = alloc.receive("WH1", "A", 3)
    done = one(out, "BackorderAllocated")
    assert (line(done).shipped, line(done).allocated, line(done).backordered) == (10, 10, 0)
    assert alloc.position("WH1", "A")["available"] == 2


def test_ship_complete_all_in_stock_is_allocated_at_once(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 4)
    alloc.receive("WH1", "B", 1)
    out = alloc.place("o1", "WH1", [("A", 4), ("B", 1)], policy="ship_complete")
    allocated = one(out, "OrderAllocated")
    assert [(ln.shipped, ln.allocated, ln.reserved) for ln in allocated.data.lines] == [
        (4, 4, 0),
        (1, 1, 0),
    ]
    assert types(out)[1:] == ["StockPositionChanged", "StockPositionChanged"]


def test_not_backorderable_rejects_the_unavailable_part_ship_partial(alloc: Allocator) -> None:
    alloc.policy("WH1", "A", backorderable=False)
    alloc.receive("WH1", "A", 4)
    out = alloc.place("o1", "WH1", [("A", 10)])
    assert types(out) == ["OrderRejected", "OrderAllocated", "StockPositionChanged"]
    rejected = line(out[0])
    assert (rejected.rejected, rejected.reason, rejected.allocated) == (6, "not_backorderable", 4)
    assert (line(out[1]).shipped, line(out[1]).rejected) == (4, 6)
    assert alloc.position("WH1", "A")["backordered"] == 0


def test_not_backorderable_ship_complete_drops_the_rejected_part(alloc: Allocator) -> None:
    alloc.policy("WH1", "A", backorderable=False)
    alloc.receive("WH1", "A", 4)
    alloc.receive("WH1", "B", 1)
    out = alloc.place("o1", "WH1", [("A", 10), ("B", 3)], policy="ship_complete")
    assert types(out)[:2] == ["OrderRejected", "Backordered"]
    assert [ln.line_no for ln in out[0].data.lines] == [1]
    held = out[1]
    assert [(ln.reserved, ln.backordered, ln.rejected) for ln in held.data.lines] == [
        (4, 4, 6),
        (1, 3, 0),
    ]
    out = alloc.receive("WH1", "B", 2)
    done = one(out, "BackorderAllocated")
    assert [(ln.shipped, ln.allocated, ln.rejected) for ln in done.data.lines] == [
        (4, 4, 6),
        (3, 3, 0),
    ]


def test_not_backorderable_with_nothing_in_stock_only_rejects(alloc: Allocator) -> None:
    alloc.policy("WH1", "A", backorderable=False)
    out = alloc.place("o1", "WH1", [("A", 10)])
    assert types(out) == ["OrderRejected"]
    assert line(out[0]).rejected == 10
    assert not alloc.state.orders


def test_discontinued_sku_sells_through_and_rejects_the_rest(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 4)
    alloc.policy("WH1", "A", discontinued=True)
    out = alloc.place("o1", "WH1", [("A", 10), ("B", 1)])
    assert types(out)[:2] == ["OrderRejected", "PartiallyShipped"]
    assert line(out[0]).reason == "discontinued"
    assert [(ln.shipped, ln.rejected, ln.backordered) for ln in out[1].data.lines] == [
        (4, 6, 0),
        (0, 0, 1),
    ]


def test_setting_not_backorderable_keeps_accepted_backorders(alloc: Allocator) -> None:
    alloc.place("o1", "WH1", [("A", 5)])
    assert alloc.policy("WH1", "A", backorderable=False) == []
    out = alloc.receive("WH1", "A", 5)
    assert line(one(out, "BackorderAllocated", "o1")).shipped == 5


def test_discontinuing_rejects_waiting_backorders(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 4)
    alloc.receive("WH1", "B", 2)
    alloc.place("o1", "WH1", [("A", 10)])  # 4 ship, 6 wait
    alloc.place("o2", "WH1", [("A", 3), ("B", 2)], policy="ship_complete")  # B reserved, A waits
    alloc.place("o3", "WH1", [("B", 1)])  # waits for B
    out = alloc.policy("WH1", "A", discontinued=True)
    assert types(out) == [
        "OrderRejected",
        "OrderRejected",
        "BackorderAllocated",
        "StockPositionChanged",
        "StockPositionChanged",
    ]
    first = line(one(out, "OrderRejected", "o1"))
    assert (first.rejected, first.reason, first.allocated, first.backordered) == (
        6,
        "discontinued",
        4,
        0,
    )
    # o2 only waited for A: what it holds on the shelf ships now.
    shipped = one(out, "BackorderAllocated", "o2")
    assert [(ln.line_no, ln.shipped) for ln in shipped.data.lines] == [(2, 2)]  # line 1 rejected
    assert list(alloc.state.orders) == [("WH1", "o3")]
    assert alloc.position("WH1", "A")["backordered"] == 0


def test_discontinuing_keeps_reservations_of_orders_still_waiting_elsewhere(
    alloc: Allocator,
) -> None:
    alloc.receive("WH1", "A", 2)
    alloc.place("o1", "WH1", [("A", 2), ("B", 1)], policy="ship_complete")
    assert alloc.policy("WH1", "A", discontinued=True) == []
    assert alloc.position("WH1", "A")["reserved"] == 2
    out = alloc.receive("WH1", "B", 1)
    assert [ln.shipped for ln in one(out, "BackorderAllocated").data.lines] == [2, 1]


# ---------------------------------------------------------------- queue order


def test_queue_fills_strictly_in_order_head_first(alloc: Allocator) -> None:
    alloc.place("o1", "WH1", [("A", 3)])
    alloc.place("o2", "WH1", [("A", 3)])
    out = alloc.receive("WH1", "A", 4)
    assert order_ids(out) == ["o1", "o2"]
    assert line(out[0]).shipped == 3 and line(out[1]).shipped == 1
    assert line(out[1]).backordered == 2


def test_high_priority_late_order_overtakes(alloc: Allocator) -> None:
    alloc.schedule("IN1", "WH1", [("A", 5)], D1)
    alloc.schedule("IN2", "WH1", [("A", 5)], D2)
    alloc.place("o1", "WH1", [("A", 5)])
    alloc.place("o2", "WH1", [("A", 5)])
    assert [lnx.eta for lnx in alloc.state.orders["WH1", "o2"].lines] == [D2]
    out = alloc.place("o3", "WH1", [("A", 5)], priority=10)
    assert line(one(out, "Backordered", "o3")).eta == D1
    moved = of_type(out, "BackorderEtaChanged")
    assert [(m.data.order_id, line(m).previous_eta, line(m).eta) for m in moved] == [
        ("o1", D1, D2),
        ("o2", D2, None),
    ]
    assert moved[0].data.cause.event_type == "OrderPlaced"
    out = alloc.receive("WH1", "A", 5)
    assert order_ids(out, "BackorderAllocated") == ["o3"]


def test_same_priority_orders_by_placed_at_not_arrival(alloc: Allocator) -> None:
    ev = alloc.ev
    late = ev.clock
    alloc.place("o1", "WH1", [("A", 1)])
    alloc.place("o0", "WH1", [("A", 1)], placed_at=late)  # arrived later, placed earlier
    out = alloc.receive("WH1", "A", 1)
    assert order_ids(out, "BackorderAllocated") == ["o0"]


def test_ship_complete_is_not_starved_by_small_ship_partial_orders(alloc: Allocator) -> None:
    alloc.place("big", "WH1", [("A", 10)], policy="ship_complete")
    for n in range(20):
        alloc.place(f"small{n}", "WH1", [("A", 1)])
    for _ in range(3):
        out = alloc.receive("WH1", "A", 3)
        assert types(out) == ["StockPositionChanged"]  # held for the big order
    out = alloc.receive("WH1", "A", 3)
    assert order_ids(out, "BackorderAllocated") == ["big", "small0", "small1"]
    assert line(one(out, "BackorderAllocated", "big")).shipped == 10


def test_two_lines_of_one_sku_queue_by_line_no(alloc: Allocator) -> None:
    alloc.place("o1", "WH1", [("A", 2), ("A", 2)], line_numbers=[7, 3])
    out = alloc.receive("WH1", "A", 2)
    shipped = one(out, "BackorderAllocated")
    assert [(ln.line_no, ln.shipped) for ln in shipped.data.lines] == [(3, 2), (7, 0)]


def test_warehouses_are_separate_stock_pools(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 5)
    out = alloc.place("o1", "WH2", [("A", 1)])
    assert types(out) == ["Backordered", "StockPositionChanged"]
    assert alloc.position("WH1", "A")["available"] == 5


# ---------------------------------------------------------------- cancellation


def test_cancel_partly_released_order_cancels_only_the_rest(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 4)
    alloc.place("o1", "WH1", [("A", 10)])
    out = alloc.cancel("o1", "WH1", reason="too slow")
    assert types(out) == ["OrderCancellationProcessed", "StockPositionChanged"]
    processed = out[0]
    assert processed.data.reason == "too slow"
    assert (line(processed).cancelled, line(processed).allocated) == (6, 4)
    assert line(processed).backordered == 0
    assert alloc.cancel("o1", "WH1") == []  # already closed
    assert types(alloc.receive("WH1", "A", 3)) == ["StockPositionChanged"]
    assert alloc.position("WH1", "A")["available"] == 3


def test_cancel_returns_reserved_units_to_the_queue(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 4)
    alloc.place("o1", "WH1", [("A", 10)], policy="ship_complete")
    alloc.place("o2", "WH1", [("A", 3)])
    out = alloc.cancel("o1", "WH1")
    assert types(out) == [
        "OrderCancellationProcessed",
        "BackorderAllocated",
        "StockPositionChanged",
    ]
    assert line(out[0]).cancelled == 10
    assert line(out[1]).shipped == 3
    assert alloc.position("WH1", "A")["available"] == 1


def test_cancel_before_place_leaves_a_tombstone(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 10)
    assert alloc.cancel("o9", "WH1") == []
    out = alloc.place("o9", "WH1", [("A", 2), ("B", 1)])
    assert types(out) == ["OrderRejected"]
    assert [(ln.rejected, ln.reason) for ln in out[0].data.lines] == [
        (2, "cancelled_before_placement"),
        (1, "cancelled_before_placement"),
    ]
    assert alloc.position("WH1", "A")["available"] == 10
    assert alloc.place("o9", "WH1", [("A", 2)]) == []  # and it stays closed


# ---------------------------------------------------------------- stock adjustments


def test_negative_adjustment_beyond_available_is_a_shortfall(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 2)
    out = alloc.adjust("WH1", "A", -5, reason="damaged")
    assert one(out, "StockPositionChanged").data.available == 0
    assert one(out, "StockPositionChanged").data.shortfall == 3
    alloc.place("o1", "WH1", [("A", 2)])
    out = alloc.receive("WH1", "A", 4)  # pays the 3 short first, 1 left for o1
    assert line(one(out, "BackorderAllocated")).shipped == 1
    assert alloc.position("WH1", "A")["shortfall"] == 0
    out = alloc.adjust("WH1", "A", 2)  # positive adjustment acts like a receipt
    assert line(one(out, "BackorderAllocated")).shipped == 1
    assert alloc.position("WH1", "A")["available"] == 1
    sku = alloc.state.skus["WH1", "A"]
    assert sku.released_total <= sku.received_total + sku.positive_adjusted_total


def test_negative_adjustment_beyond_available_takes_reserved_units(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 3)
    alloc.place("o1", "WH1", [("A", 5)], policy="ship_complete")
    out = alloc.adjust("WH1", "A", -2)  # two of the three held units are damaged
    lost = one(out, "Backordered", "o1")
    assert lost.data.reason == "reservation_lost"
    assert (line(lost).reserved, line(lost).backordered, line(lost).eta) == (1, 5, None)
    assert alloc.position("WH1", "A") == {
        "available": 0,
        "backordered": 5,
        "reserved": 1,
        "incoming": 0,
        "next_eta": None,
        "shortfall": 0,
        "promise_eta": None,
    }


# ---------------------------------------------------------------- ETAs


def test_eta_is_null_when_no_inbound_covers_the_last_unit(alloc: Allocator) -> None:
    out = alloc.place("o0", "WH1", [("A", 1)])
    assert line(out[0]).eta is None
    out = alloc.schedule("IN1", "WH1", [("A", 5)], D1)
    assert line(one(out, "BackorderEtaChanged", "o0")).eta == D1
    out = alloc.place("o1", "WH1", [("A", 3)])
    assert line(out[0]).eta == D1
    out = alloc.place("o2", "WH1", [("A", 3)])  # units 5..7: only 5 are scheduled
    assert line(out[0]).eta is None
    assert not of_type(out, "BackorderEtaChanged")


def test_supplier_delay_moves_only_the_affected_customers(alloc: Allocator) -> None:
    alloc.schedule("IN1", "WH1", [("A", 5)], D1)
    alloc.schedule("IN2", "WH1", [("A", 5), ("B", 5)], D3)
    alloc.schedule("IN3", "WH1", [("B", 5)], D1)
    alloc.place("o1", "WH1", [("A", 3)])
    alloc.place("o2", "WH1", [("A", 2)])
    alloc.place("o3", "WH1", [("A", 4)])
    alloc.place("o4", "WH1", [("B", 4)])
    out = alloc.delay("IN1", "WH1", D2, reason="port congestion")
    moved = of_type(out, "BackorderEtaChanged")
    assert [(m.data.order_id, line(m).previous_eta, line(m).eta) for m in moved] == [
        ("o1", D1, D2),
        ("o2", D1, D2),
    ]
    cause = moved[0].data.cause
    assert (cause.event_type, cause.inbound_id, cause.reason) == (
        "ShipmentDelayed",
        "IN1",
        "port congestion",
    )
    assert one(out, "StockPositionChanged").data.next_eta == D2
    assert alloc.delay("IN1", "WH1", D2) == []  # no change, nothing to say
    assert alloc.delay("IN-unknown", "WH1", D4) == []


def test_delay_past_a_later_inbound_reorders_supply(alloc: Allocator) -> None:
    alloc.schedule("IN1", "WH1", [("A", 5)], D1)
    alloc.schedule("IN2", "WH1", [("A", 5)], D2)
    alloc.place("o1", "WH1", [("A", 5)])
    alloc.place("o2", "WH1", [("A", 5)])
    out = alloc.delay("IN1", "WH1", D3)  # IN2 now comes first, and covers o1
    assert [(m.data.order_id, line(m).eta) for m in of_type(out, "BackorderEtaChanged")] == [
        ("o1", D2),
        ("o2", D3),
    ]


def test_receipt_against_an_inbound_consumes_its_remaining(alloc: Allocator) -> None:
    alloc.schedule("IN1", "WH1", [("A", 6)], D1)
    alloc.schedule("IN2", "WH1", [("A", 6)], D2)
    alloc.place("o1", "WH1", [("A", 4)])
    alloc.place("o2", "WH1", [("A", 4)])  # units 5..8: last one from IN2
    out = alloc.receive("WH1", "A", 4, inbound_id="IN1")  # IN1 has 2 left
    assert order_ids(out) == ["o1"]  # o2's date does not move: nobody else is told
    assert alloc.position("WH1", "A")["incoming"] == 8
    out = alloc.receive("WH1", "A", 9, inbound_id="IN1")  # over-delivery closes IN1
    assert line(one(out, "BackorderAllocated", "o2")).shipped == 4
    assert alloc.position("WH1", "A") == {
        "available": 5,
        "backordered": 0,
        "reserved": 0,
        "incoming": 6,
        "next_eta": D2,
        "shortfall": 0,
        "promise_eta": D2,  # a unit beyond the 5 available waits for IN2
    }
    assert ("WH1", "IN1") not in alloc.state.inbounds


def test_rescheduled_inbound_updates_quantities_and_dates(alloc: Allocator) -> None:
    alloc.schedule("IN1", "WH1", [("A", 2)], D1)
    alloc.place("o1", "WH1", [("A", 2)])
    alloc.place("o2", "WH1", [("A", 2)])
    out = alloc.schedule("IN1", "WH1", [("A", 4)], D2)  # more units, later
    moved = of_type(out, "BackorderEtaChanged")
    assert [(m.data.order_id, line(m).previous_eta, line(m).eta) for m in moved] == [
        ("o1", D1, D2),
        ("o2", None, D2),
    ]
    assert moved[0].data.cause.event_type == "InboundScheduled"
    alloc.receive("WH1", "A", 1, inbound_id="IN1")
    # Re-sent unchanged after a partial receipt: the received unit is not expected again.
    assert alloc.schedule("IN1", "WH1", [("A", 4)], D2) == []
    assert alloc.position("WH1", "A")["incoming"] == 3


def test_ship_complete_lines_share_the_order_eta(alloc: Allocator) -> None:
    alloc.receive("WH1", "C", 1)
    alloc.schedule("IN1", "WH1", [("A", 5)], D1)
    alloc.schedule("IN2", "WH1", [("B", 5)], D3)
    out = alloc.place("o1", "WH1", [("A", 1), ("B", 1), ("C", 1)], policy="ship_complete")
    held = one(out, "Backordered")
    assert [ln.eta for ln in held.data.lines] == [D3, D3, D3]
    out = alloc.delay("IN2", "WH1", D4)
    assert [ln.eta for ln in one(out, "BackorderEtaChanged").data.lines] == [D4, D4, D4]
    out = alloc.receive("WH1", "B", 1)  # now only A is missing: everything ships with A
    assert [(ln.previous_eta, ln.eta) for ln in one(out, "BackorderEtaChanged").data.lines] == [
        (D4, D1),
        (D4, D1),
        (D4, D1),
    ]
    alloc.delay("IN1", "WH1", D2)
    alloc.schedule("IN3", "WH1", [("D", 1)], D1)
    out = alloc.receive("WH1", "A", 1)
    assert [ln.shipped for ln in one(out, "BackorderAllocated").data.lines] == [1, 1, 1]


def test_ship_complete_eta_is_null_if_any_line_is_uncovered(alloc: Allocator) -> None:
    alloc.schedule("IN1", "WH1", [("A", 5)], D1)
    out = alloc.place("o1", "WH1", [("A", 1), ("B", 1)], policy="ship_complete")
    assert [ln.eta for ln in out[0].data.lines] == [None, None]
    out = alloc.schedule("IN2", "WH1", [("B", 1)], D2)
    assert [ln.eta for ln in one(out, "BackorderEtaChanged").data.lines] == [D2, D2]


def test_placement_output_carries_the_new_eta_without_a_separate_change(alloc: Allocator) -> None:
    alloc.schedule("IN1", "WH1", [("A", 3)], D1)
    alloc.place("o1", "WH1", [("A", 3)])
    alloc.place("o2", "WH1", [("A", 1)])  # no date yet
    out = alloc.schedule("IN2", "WH1", [("A", 1)], D2)
    assert order_ids(out, "BackorderEtaChanged") == ["o2"]
    out = alloc.receive("WH1", "A", 2)  # o1 gets 2 of 3; o2's last unit now from IN1
    assert types(out) == ["BackorderAllocated", "BackorderEtaChanged", "StockPositionChanged"]
    assert line(out[0]).eta == D1  # o1's rest still from IN1
    assert (line(out[1]).previous_eta, line(out[1]).eta) == (D2, D1)


# ---------------------------------------------------------------- duplicates


def _fingerprint(alloc: Allocator) -> bytes:
    return pickle.dumps(alloc.state)


def test_same_event_id_changes_nothing(alloc: Allocator) -> None:
    event = alloc.ev.stock_received("WH1", "A", 5)
    alloc(event)
    order = alloc.ev.order_placed("o1", "WH1", [("A", 7)])
    alloc(order)
    before = _fingerprint(alloc)
    assert alloc(event) == [] and alloc(order) == []
    assert _fingerprint(alloc) == before


def test_same_order_id_with_a_new_event_id_changes_nothing(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 5)
    first = alloc.ev.order_placed("o1", "WH1", [("A", 7)])
    alloc(first)
    assert alloc(resend(first, "retry-1")) == []  # open order
    alloc.receive("WH1", "A", 2)
    assert not alloc.state.orders
    assert alloc(resend(first, "retry-2")) == []  # recently closed order
    assert alloc.position("WH1", "A")["available"] == 0


def test_same_receipt_and_adjustment_ids_change_nothing(alloc: Allocator) -> None:
    receipt = alloc.ev.stock_received("WH1", "A", 5, receipt_id="R1")
    adjustment = alloc.ev.stock_adjusted("WH1", "A", -2, adjustment_id="ADJ1")
    alloc(receipt)
    alloc(adjustment)
    assert alloc(resend(receipt, "again-1")) == []
    assert alloc(resend(adjustment, "again-2")) == []
    assert alloc.position("WH1", "A")["available"] == 3


def test_only_the_envelope_id_window_is_bounded_business_keys_are_kept() -> None:
    alloc = Allocator(dedup_window=3)
    for n in range(10):
        alloc.receive("WH1", "A", 1)
        alloc.place(f"o{n}", "WH1", [("A", 1)])
        alloc.cancel(f"gone{n}", "WH1")
    state = alloc.state
    assert len(state.seen_events) == 3
    assert state.seen_events.keys() == [e.id for e in alloc.log[-3:]]
    assert sorted(state.closed_orders) == sorted(("WH1", f"o{n}") for n in range(10))
    assert sorted(state.tombstones) == sorted(("WH1", f"gone{n}") for n in range(10))
    assert len(state.seen_receipts) == 10


# ---------------------------------------------------------------- envelopes and determinism


def test_output_envelopes_derive_from_the_input(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 4)
    event = alloc.ev.order_placed("o1", "WH1", [("A", 10)], id="in-42")
    event = event.model_copy(update={"correlation_id": "checkout-7"})
    out = alloc(event)
    for index, output in enumerate(out):
        assert output.id == str(uuid.uuid5(NAMESPACE, f"in-42/{index}"))
        assert (output.version, output.source) == (1, SOURCE)
        assert output.occurred_at == event.occurred_at
        assert (output.causation_id, output.correlation_id) == ("in-42", "checkout-7")
    assert out[0].data.shipment_id == str(uuid.uuid5(NAMESPACE, "in-42/shipment/o1"))
    assert out[0].data.customer == event.data.customer
    out = alloc.receive("WH1", "A", 1)
    assert out[0].correlation_id == alloc.log[-1].id  # no correlation id: the input's own id


def test_stock_positions_are_reported_only_when_changed_and_sorted(alloc: Allocator) -> None:
    alloc.receive("WH2", "B", 1)
    alloc.receive("WH1", "Z", 1)
    out = alloc.place("o1", "WH1", [("Z", 1), ("A", 1)])
    positions = of_type(out, "StockPositionChanged")
    assert [(p.data.warehouse_id, p.data.sku) for p in positions] == [("WH1", "A"), ("WH1", "Z")]
    assert alloc.policy("WH1", "A", backorderable=True) == []


def test_unknown_command_is_refused() -> None:
    with pytest.raises(UnknownCommand):
        decide(new_state(), object())


def test_snapshot_round_trip_continues_identically() -> None:
    ev = Events(prefix="snap")
    log = [
        ev.stock_received("WH1", "A", 3),
        ev.inbound_scheduled("IN1", "WH1", [("A", 4), ("B", 2)], D1),
        ev.order_placed("o1", "WH1", [("A", 5), ("B", 1)], policy="ship_complete"),
        ev.order_placed("o2", "WH1", [("A", 2)]),
        ev.shipment_delayed("IN1", "WH1", D2),
        ev.stock_received("WH1", "A", 4, inbound_id="IN1"),
        ev.stock_received("WH1", "B", 2, inbound_id="IN1"),
        ev.order_cancelled("o2", "WH1"),
    ]
    straight = new_state()
    expected = []
    for event in log:
        straight, out = decide(straight, event)
        expected.extend(out)
    resumed = new_state()
    actual = []
    for n, event in enumerate(log):
        if n % 2:  # what a snapshot does: to plain data, JSON and back
            resumed = state_from_plain(orjson.loads(orjson.dumps(state_to_plain(resumed))))
        resumed, out = decide(resumed, event)
        actual.extend(out)
    assert [o.model_dump_json() for o in actual] == [o.model_dump_json() for o in expected]


# ---------------------------------------------------------------- inbound bookkeeping


def test_inbound_resent_without_a_sku_no_longer_expects_it(alloc: Allocator) -> None:
    alloc.schedule("IN1", "WH1", [("A", 3), ("B", 3)], D1)
    alloc.place("o1", "WH1", [("B", 2)])
    out = alloc.schedule("IN1", "WH1", [("A", 3)], D1)
    assert (line(one(out, "BackorderEtaChanged")).previous_eta, line(out[0]).eta) == (D1, None)
    assert alloc.position("WH1", "B")["incoming"] == 0
    assert alloc.position("WH1", "B")["next_eta"] is None


def test_fully_received_inbound_is_closed_and_can_be_reopened(alloc: Allocator) -> None:
    alloc.schedule("IN1", "WH1", [("A", 3)], D1)
    alloc.receive("WH1", "A", 3, inbound_id="IN1")
    assert ("WH1", "IN1") not in alloc.state.inbounds
    assert alloc.delay("IN1", "WH1", D2) == []  # nothing left to wait for
    assert alloc.schedule("IN1", "WH1", [("A", 3)], D2) == []  # re-sent: all received already
    alloc.place("o1", "WH1", [("A", 4)])  # the 3 received ship, 1 waits
    out = alloc.schedule("IN1", "WH1", [("A", 5)], D3)  # the supplier adds 2 more
    assert line(one(out, "BackorderEtaChanged")).eta == D3
    assert alloc.position("WH1", "A")["incoming"] == 2
    assert ("WH1", "IN1") in alloc.state.inbounds


def test_receipt_for_an_unknown_inbound_is_still_stock(alloc: Allocator) -> None:
    alloc.schedule("IN1", "WH1", [("A", 3)], D1)
    alloc.receive("WH1", "A", 2, inbound_id="IN-other")
    alloc.receive("WH1", "A", 2, inbound_id="IN1", id=None)
    assert alloc.position("WH1", "A")["available"] == 4
    assert alloc.position("WH1", "A")["incoming"] == 1


def test_ship_complete_reservations_from_receipts_are_silent_until_covered(
    alloc: Allocator,
) -> None:
    alloc.place("o1", "WH1", [("A", 2), ("B", 1)], policy="ship_complete")
    out = alloc.receive("WH1", "A", 2)
    assert types(out) == ["StockPositionChanged"]
    assert one(out, "StockPositionChanged").data.reserved == 2
    order = alloc.state.orders["WH1", "o1"]
    assert [(ln.reserved, ln.waiting) for ln in order.lines] == [(2, 0), (0, 1)]


def test_bounded_window_evicts_oldest_first_and_pickles() -> None:
    from services.allocator.domain import BoundedWindow

    window = BoundedWindow(2)
    window.add("a")
    window.add("b", 5)
    window.add("a", 7)  # update keeps the place
    window.add("c")
    assert "a" not in window and window.get("b") == 5 and "c" in window
    clone = pickle.loads(pickle.dumps(window))
    clone.add("d")
    assert clone.keys() == ["c", "d"] and window.keys() == ["b", "c"]
    with pytest.raises(ValueError):
        BoundedWindow(0)


def test_long_queue_in_small_blocks_keeps_order_and_dates(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.allocator.domain import queue as queue_module

    monkeypatch.setattr(queue_module, "QUEUE_BLOCK", 3)
    alloc = Allocator()  # checks every invariant (ETAs from scratch too) after each command
    alloc.schedule("IN1", "WH1", [("A", 40)], D1)
    alloc.schedule("IN2", "WH1", [("A", 40)], D2)
    for n in range(60):
        alloc.place(f"o{n}", "WH1", [("A", 1 + n % 3)], priority=5 if n % 7 == 0 else 0)
    for n in range(0, 60, 4):
        alloc.cancel(f"o{n}", "WH1")
    alloc.delay("IN1", "WH1", D3)
    out = alloc.receive("WH1", "A", 30, inbound_id="IN2")
    filled = order_ids(out, "BackorderAllocated")
    assert filled[:3] == ["o7", "o14", "o21"]  # the priority orders first
    queue = alloc.state.skus["WH1", "A"].queue
    assert len(queue.blocks) > 5
    assert [e[:4] for e in queue] == sorted(e[:4] for e in queue)


def test_cancelled_reservation_pays_a_shortfall_first(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 3)
    alloc.place("o1", "WH1", [("A", 5)], policy="ship_complete")  # holds 3
    alloc.adjust("WH1", "A", -2)  # nothing free to take: short 2
    out = alloc.cancel("o1", "WH1")
    position = one(out, "StockPositionChanged").data
    assert (position.available, position.shortfall, position.reserved) == (1, 0, 0)


def test_cancel_naming_another_warehouse_is_a_cancel_of_an_unknown_order(alloc: Allocator) -> None:
    alloc.place("o1", "WH1", [("A", 2)])
    assert alloc.cancel("o1", "WH2") == []  # o1 is not an order of WH2
    assert ("WH1", "o1") in alloc.state.orders
    assert types(alloc.place("o1", "WH2", [("A", 1)])) == ["OrderRejected"]
