"""Rules for the order's whole life (after placement): part cancels, policy switches, the
delay-consent rule, back-in-stock alerts and refused orders. The harness checks the
invariants and the contract after every command."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from .harness import Allocator, line, of_type, one, types

D1 = date(2026, 11, 16)


def day(n: int) -> date:
    return D1 + timedelta(days=n)


@pytest.fixture
def alloc() -> Allocator:
    return Allocator()


@pytest.fixture
def ftc() -> Allocator:
    return Allocator(consent_rule=True)


# ---------------------------------------------------------------- part cancels


def test_a_part_cancel_takes_backordered_units_and_the_rest_keeps_its_place(
    alloc: Allocator,
) -> None:
    alloc.place("o1", "WH1", [("A", 5)])
    alloc.place("o2", "WH1", [("A", 2)])
    out = alloc.cancel_lines("o1", "WH1", [(1, 2)], reason="changed my mind")
    done = one(out, "OrderCancellationProcessed", "o1")
    assert done.data.reason == "changed my mind"
    assert (line(done).cancelled, line(done).backordered) == (2, 3)
    assert done.data.not_cancelled is None
    out = alloc.receive("WH1", "A", 3)  # o1 is still at the head of the queue
    assert line(one(out, "BackorderAllocated", "o1")).shipped == 3
    assert "o1" not in {k[1] for k in alloc.state.orders}
    assert line(one(alloc.receive("WH1", "A", 2), "BackorderAllocated", "o2")).shipped == 2


def test_a_part_cancel_frees_reserved_units_for_the_queue(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 2)
    alloc.place("o1", "WH1", [("A", 2), ("B", 1)], policy="ship_complete")  # A reserved
    alloc.place("o2", "WH1", [("A", 1)])  # waits behind the shelf
    out = alloc.cancel_lines("o1", "WH1", [(1, 2)])
    done = one(out, "OrderCancellationProcessed", "o1")
    assert (line(done).cancelled, line(done).reserved) == (2, 0)
    assert line(one(out, "BackorderAllocated", "o2")).shipped == 1
    assert alloc.position("WH1", "A")["available"] == 1


def test_a_cancel_for_more_than_is_open_cancels_what_is_and_says_so(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 1)
    alloc.place("o1", "WH1", [("A", 3), ("B", 1)])  # 1 shipped, 2 backordered; B waits
    out = alloc.cancel_lines("o1", "WH1", [(1, 3), (9, 1)])
    done = one(out, "OrderCancellationProcessed", "o1")
    assert [ln.line_no for ln in done.data.lines] == [1]
    assert (line(done).allocated, line(done).cancelled) == (1, 2)
    assert [(n.line_no, n.quantity, n.reason) for n in done.data.not_cancelled] == [
        (1, 1, "not_open"),
        (9, 1, "unknown_line"),
    ]


def test_cancelling_what_a_ship_complete_order_waits_for_ships_the_rest(
    alloc: Allocator,
) -> None:
    alloc.receive("WH1", "A", 1)
    alloc.place("o1", "WH1", [("A", 1), ("B", 2)], policy="ship_complete")
    out = alloc.cancel_lines("o1", "WH1", [(2, 2)])
    assert types(out)[:2] == ["OrderCancellationProcessed", "BackorderAllocated"]
    assert line(one(out, "OrderCancellationProcessed", "o1"), 2).cancelled == 2
    assert line(one(out, "BackorderAllocated", "o1"), 1).shipped == 1


def test_a_part_cancel_is_applied_once_however_often_it_comes(alloc: Allocator) -> None:
    alloc.place("o1", "WH1", [("A", 5)])
    first = alloc.ev.order_lines_cancelled("o1", "WH1", [(1, 1)])
    alloc(first)
    alloc.receive("WH1", "B", 1)
    assert alloc(first) == []
    assert alloc.state.orders[("WH1", "o1")].lines[0].cancelled == 1
    # The same request under a new id is a new request.
    alloc.cancel_lines("o1", "WH1", [(1, 1)])
    assert alloc.state.orders[("WH1", "o1")].lines[0].cancelled == 2


def test_a_part_cancel_of_an_unknown_or_closed_order_changes_nothing(alloc: Allocator) -> None:
    assert alloc.cancel_lines("nobody", "WH1", [(1, 1)]) == []
    alloc.receive("WH1", "A", 1)
    alloc.place("o1", "WH1", [("A", 1)])  # shipped at once: closed
    assert alloc.cancel_lines("o1", "WH1", [(1, 1)]) == []


# ---------------------------------------------------------------- policy switches


def test_switching_to_ship_partial_releases_what_is_held(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 1)
    alloc.place("o1", "WH1", [("A", 2)], policy="ship_complete")  # 1 reserved, 1 waits
    out = alloc.switch("o1", "WH1", "ship_partial")
    shipped = one(out, "PartiallyShipped", "o1")
    assert (line(shipped).shipped, line(shipped).backordered) == (1, 1)
    assert shipped.data.shipment_id
    assert line(one(alloc.receive("WH1", "A", 1), "BackorderAllocated", "o1")).shipped == 1


def test_switching_to_ship_complete_holds_what_is_not_released(alloc: Allocator) -> None:
    alloc.place("o1", "WH1", [("A", 2), ("B", 2)])
    held = one(alloc.switch("o1", "WH1", "ship_complete"), "Backordered", "o1")
    assert held.data.reason == "ship_complete_hold"
    out = alloc.receive("WH1", "A", 2)
    assert of_type(out, "BackorderAllocated") == []  # reserved, not shipped
    out = alloc.receive("WH1", "B", 2)
    shipped = one(out, "BackorderAllocated", "o1")
    assert [ln.shipped for ln in shipped.data.lines] == [2, 2]


def test_a_switch_to_the_same_policy_or_a_repeat_changes_nothing(alloc: Allocator) -> None:
    alloc.place("o1", "WH1", [("A", 2)])
    assert alloc.switch("o1", "WH1", "ship_partial") == []
    change = alloc.ev.order_policy_changed("o1", "WH1", "ship_complete")
    assert types(alloc(change)) == ["Backordered"]
    alloc.switch("o1", "WH1", "ship_partial")
    assert alloc(change) == []  # an old switch re-delivered does not undo the newer one
    assert not alloc.state.orders[("WH1", "o1")].complete


# ---------------------------------------------------------------- the delay-consent rule


def test_without_the_rule_no_line_carries_a_promise(alloc: Allocator) -> None:
    alloc.schedule("IN1", "WH1", [("A", 5)], D1)
    out = alloc.place("o1", "WH1", [("A", 2)])
    assert (line(out[0]).promised_eta, line(out[0]).consent) == (None, None)
    assert alloc.consent("o1", "WH1") == []


def test_the_promise_is_the_first_date_told_or_thirty_days(ftc: Allocator) -> None:
    ftc.schedule("IN1", "WH1", [("A", 5)], D1)
    told = one(ftc.place("o1", "WH1", [("A", 2)]), "Backordered", "o1")
    assert (line(told).eta, line(told).promised_eta, line(told).consent) == (D1, D1, None)
    undated = one(ftc.place("o2", "WH1", [("B", 1)]), "Backordered", "o2")
    placed = ftc.log[-1].data.placed_at.date()
    assert line(undated).promised_eta == placed + timedelta(days=30)


def test_a_first_delay_within_thirty_days_is_consented_by_silence(ftc: Allocator) -> None:
    ftc.schedule("IN1", "WH1", [("A", 5)], D1)
    ftc.place("o1", "WH1", [("A", 2)])
    moved = one(ftc.delay("IN1", "WH1", day(10)), "BackorderEtaChanged", "o1")
    assert (line(moved).consent, line(moved).promised_eta) == ("offered", day(10))
    for n in range(0, 12):
        assert of_type(ftc.tick(day(n)), "OrderCancellationProcessed") == []


def test_a_second_delay_without_consent_cancels_after_the_promised_date_never_before(
    ftc: Allocator,
) -> None:
    ftc.schedule("IN1", "WH1", [("A", 5)], D1)
    ftc.receive("WH1", "B", 1)
    ftc.place("o1", "WH1", [("A", 2), ("B", 1)])  # B ships, A waits for IN1
    ftc.delay("IN1", "WH1", day(10))  # first: offered, promised day 10
    moved = one(ftc.delay("IN1", "WH1", day(20)), "BackorderEtaChanged", "o1")
    assert (line(moved).consent, line(moved).promised_eta) == ("required", day(10))
    for n in range(0, 11):  # up to and including the promised day: nothing
        assert of_type(ftc.tick(day(n)), "OrderCancellationProcessed") == []
    done = one(ftc.tick(day(11)), "OrderCancellationProcessed", "o1")
    assert done.data.reason == "no_consent"
    assert [(ln.line_no, ln.cancelled) for ln in done.data.lines] == [(1, 2)]
    assert ("WH1", "o1") not in ftc.state.orders
    assert ftc.tick(day(12)) == []


def test_consent_given_keeps_the_line(ftc: Allocator) -> None:
    ftc.schedule("IN1", "WH1", [("A", 5)], D1)
    ftc.place("o1", "WH1", [("A", 2)])
    ftc.delay("IN1", "WH1", day(10))
    ftc.delay("IN1", "WH1", day(20))
    recorded = one(ftc.consent("o1", "WH1"), "BackorderConsentRecorded", "o1")
    assert (line(recorded).consent, line(recorded).promised_eta) == ("given", day(20))
    for n in range(0, 20):
        assert of_type(ftc.tick(day(n)), "OrderCancellationProcessed") == []
    # A delay past the date agreed to needs consent again.
    again = one(ftc.delay("IN1", "WH1", day(25)), "BackorderEtaChanged", "o1")
    assert (line(again).consent, line(again).promised_eta) == ("required", day(20))


def test_a_first_delay_to_no_date_needs_consent(ftc: Allocator) -> None:
    ftc.schedule("IN1", "WH1", [("A", 5)], D1)
    ftc.place("o1", "WH1", [("A", 2)])
    moved = one(ftc.cancel_inbound("IN1", "WH1"), "BackorderEtaChanged", "o1")
    assert (line(moved).eta, line(moved).consent, line(moved).promised_eta) == (
        None,
        "required",
        D1,
    )
    assert of_type(ftc.tick(D1), "OrderCancellationProcessed") == []
    assert types(ftc.tick(day(1))).count("OrderCancellationProcessed") == 1


def test_a_delay_beyond_thirty_days_needs_consent_at_once(ftc: Allocator) -> None:
    ftc.schedule("IN1", "WH1", [("A", 5)], D1)
    ftc.place("o1", "WH1", [("A", 2)])
    moved = one(ftc.delay("IN1", "WH1", day(31)), "BackorderEtaChanged", "o1")
    assert line(moved).consent == "required"


def test_the_date_coming_back_lifts_the_requirement(ftc: Allocator) -> None:
    ftc.schedule("IN1", "WH1", [("A", 5)], D1)
    ftc.place("o1", "WH1", [("A", 2)])
    ftc.delay("IN1", "WH1", day(40))
    back = one(ftc.delay("IN1", "WH1", D1), "BackorderEtaChanged", "o1")
    assert line(back).consent == "offered"
    assert of_type(ftc.tick(day(5)), "OrderCancellationProcessed") == []


def test_a_delay_known_after_the_promised_date_leaves_the_customer_today(
    ftc: Allocator,
) -> None:
    ftc.schedule("IN1", "WH1", [("A", 5)], D1)
    ftc.place("o1", "WH1", [("A", 2)])
    ftc.tick(day(-1))
    moved = one(ftc.tick(day(5)), "BackorderEtaChanged", "o1")  # overdue: no date now
    assert (line(moved).consent, line(moved).promised_eta) == ("required", day(5))
    assert of_type(ftc.tick(day(5) + timedelta(hours=12)), "OrderCancellationProcessed") == []
    assert types(ftc.tick(day(6))).count("OrderCancellationProcessed") == 1


# ---------------------------------------------------------------- back-in-stock alerts


def test_an_alert_fires_once_when_the_sku_can_be_ordered(alloc: Allocator) -> None:
    alloc.policy("WH1", "A", backorderable=False)
    assert alloc.alert("al1", "WH1", "A") == []
    fired = one(alloc.receive("WH1", "A", 3), "StockAlertTriggered")
    assert (fired.data.alert_id, fired.data.sku, fired.data.available) == ("al1", "A", 3)
    assert fired.data.customer.customer_id == "c-al1"
    assert of_type(alloc.receive("WH1", "A", 3), "StockAlertTriggered") == []
    assert alloc.alert("al1", "WH1", "A") == []  # done: a repeat is nothing


def test_an_alert_for_an_orderable_sku_fires_at_once(alloc: Allocator) -> None:
    out = alloc.alert("al1", "WH1", "A")  # backorderable by default
    assert types(out) == ["StockAlertTriggered"]


def test_an_alert_fires_when_the_sku_is_backorderable_again(alloc: Allocator) -> None:
    alloc.policy("WH1", "A", discontinued=True)
    alloc.alert("al1", "WH1", "A")
    assert of_type(alloc.policy("WH1", "A"), "StockAlertTriggered") != []


def test_a_cancelled_alert_never_fires(alloc: Allocator) -> None:
    alloc.policy("WH1", "A", backorderable=False)
    alloc.alert("al1", "WH1", "A")
    alloc.unalert("al1", "WH1")
    assert of_type(alloc.receive("WH1", "A", 3), "StockAlertTriggered") == []
    # A cancel that overtook its request keeps the request from ever firing.
    alloc.unalert("al2", "WH1")
    assert alloc.alert("al2", "WH1", "A") == []


# ---------------------------------------------------------------- refused orders


def test_a_refused_order_is_told_upstream_when_its_id_is_new(alloc: Allocator) -> None:
    out = alloc(alloc.ev.invalid_order_received("o9", "WH1"))
    refused = one(out, "OrderRejected", "o9")
    assert (refused.data.reason, refused.data.customer, refused.data.lines) == ("invalid", None, [])
    assert [(e.path, e.message) for e in refused.data.errors] == [
        ("data.lines.0.quantity", "must be positive")
    ]
    alloc.place("o1", "WH1", [("A", 1)])
    assert alloc(alloc.ev.invalid_order_received("o1", "WH1")) == []
    assert ("WH1", "o9") not in alloc.state.orders  # a valid re-send is placed as usual
    assert types(alloc.place("o9", "WH1", [("A", 1)])) == ["Backordered", "StockPositionChanged"]
