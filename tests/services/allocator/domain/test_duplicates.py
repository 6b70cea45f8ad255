"""Duplicates change nothing, however old they are (DESIGN §4, issue 12 defect 7).

The envelope-id window is only a cheap first filter: these tests use a tiny
window (5 ids) and re-send each event after more than the window of other
events, with the same and with a new envelope id, so only the business keys
(`order_id` per warehouse, `receipt_id`, `adjustment_id`, the inbound event)
can recognise the duplicate.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from tests.builders.inputs import resend

from .harness import Allocator, line, one, types

D1, D2, D3 = date(2026, 11, 16), date(2026, 11, 23), date(2026, 11, 30)
WINDOW = 5


@pytest.fixture
def alloc() -> Allocator:
    return Allocator(dedup_window=WINDOW)


def churn(alloc: Allocator, rounds: int = 3 * WINDOW) -> None:
    """More than the window of other events of every kind, on other SKUs and ids."""
    for n in range(rounds):
        alloc.receive("WH1", "Z", 2, receipt_id=f"churn-r{n}")
        alloc.place(f"churn-o{n}", "WH1", [("Z", 1)])
        alloc.cancel(f"churn-gone{n}", "WH1")
        alloc.adjust("WH1", "Z", -1, adjustment_id=f"churn-a{n}")
        alloc.schedule(f"churn-in{n}", "WH1", [("Y", 1)], D1)
        alloc.receive("WH1", "Y", 1, receipt_id=f"churn-ry{n}", inbound_id=f"churn-in{n}")


def both_ways(event):
    """The same envelope again, and the same payload under a new envelope id."""
    return [event, resend(event, f"{event.id}-retry")]


def test_an_old_order_placed_again_is_not_allocated_twice(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 10)
    placed = alloc.ev.order_placed("o1", "WH1", [("A", 3)])
    assert types(alloc(placed)) == ["OrderAllocated", "StockPositionChanged"]
    churn(alloc)
    for again in both_ways(placed):
        assert alloc(again) == []
    assert alloc.position("WH1", "A")["available"] == 7


def test_a_second_order_placed_with_the_same_id_and_other_lines_changes_nothing(
    alloc: Allocator,
) -> None:
    alloc.receive("WH1", "A", 10)
    alloc.place("o1", "WH1", [("A", 3)])  # ships at once: the order is closed
    churn(alloc)
    assert alloc.place("o1", "WH1", [("A", 5), ("B", 1)]) == []
    assert alloc.position("WH1", "A")["available"] == 7
    # The same order id in another warehouse is another order.
    alloc.receive("WH2", "A", 10)
    assert types(alloc.place("o1", "WH2", [("A", 3)]))[0] == "OrderAllocated"


def test_an_old_cancelled_order_placed_again_stays_cancelled(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 1)
    placed = alloc.ev.order_placed("o1", "WH1", [("A", 3)])
    alloc(placed)
    cancelled = alloc.ev.order_cancelled("o1", "WH1")
    alloc(cancelled)
    churn(alloc)
    for again in [*both_ways(cancelled), *both_ways(placed)]:
        assert alloc(again) == []
    assert alloc.position("WH1", "A") == alloc.position("WH1", "never-touched") | {"available": 0}


def test_an_old_tombstone_still_rejects_the_late_placement(alloc: Allocator) -> None:
    alloc.cancel("early", "WH1")
    churn(alloc)
    alloc.receive("WH1", "A", 5)
    out = alloc.place("early", "WH1", [("A", 2)])
    assert line(one(out, "OrderRejected")).reason == "cancelled_before_placement"
    assert alloc.position("WH1", "A")["available"] == 5


def test_an_old_stock_received_again_adds_nothing(alloc: Allocator) -> None:
    received = alloc.ev.stock_received("WH1", "A", 5, receipt_id="R1")
    alloc(received)
    churn(alloc)
    for again in both_ways(received):
        assert alloc(again) == []
    alloc.place("o1", "WH1", [("A", 8)])
    assert alloc.position("WH1", "A") | {"next_eta": None} == {
        "available": 0,
        "backordered": 3,
        "reserved": 0,
        "incoming": 0,
        "next_eta": None,
        "shortfall": 0,
        "promise_eta": None,
    }


def test_an_old_stock_adjusted_again_changes_nothing(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 5)
    minus = alloc.ev.stock_adjusted("WH1", "A", -2, adjustment_id="ADJ-1")
    plus = alloc.ev.stock_adjusted("WH1", "A", 4, adjustment_id="ADJ-2")
    alloc(minus)
    alloc(plus)
    churn(alloc)
    for again in [*both_ways(minus), *both_ways(plus)]:
        assert alloc(again) == []
    assert alloc.position("WH1", "A")["available"] == 7


def test_an_old_inbound_scheduled_again_expects_nothing_more(alloc: Allocator) -> None:
    scheduled = alloc.ev.inbound_scheduled("IN1", "WH1", [("A", 4)], D1)
    alloc(scheduled)
    alloc.receive("WH1", "A", 4, inbound_id="IN1")  # fully received: the inbound is closed
    churn(alloc)
    alloc.place("o1", "WH1", [("A", 6)])  # 4 ship, 2 wait without a date
    for again in both_ways(scheduled):
        assert alloc(again) == []
    position = alloc.position("WH1", "A")
    assert (position["incoming"], position["next_eta"]) == (0, None)
    assert alloc.state.orders["WH1", "o1"].lines[0].eta is None


def test_an_old_inbound_scheduled_again_does_not_undo_a_later_delay(alloc: Allocator) -> None:
    scheduled = alloc.ev.inbound_scheduled("IN1", "WH1", [("A", 4)], D1)
    alloc(scheduled)
    alloc.place("o1", "WH1", [("A", 2)])
    alloc.delay("IN1", "WH1", D2)
    churn(alloc)
    for again in both_ways(scheduled):
        assert alloc(again) == []
    assert alloc.position("WH1", "A")["next_eta"] == D2
    assert alloc.state.orders["WH1", "o1"].lines[0].eta == D2


def test_an_old_shipment_delayed_again_does_not_undo_a_later_reschedule(alloc: Allocator) -> None:
    alloc.schedule("IN1", "WH1", [("A", 4)], D1)
    alloc.place("o1", "WH1", [("A", 2)])
    delayed = alloc.ev.shipment_delayed("IN1", "WH1", D3)
    alloc(delayed)
    alloc.schedule("IN1", "WH1", [("A", 4)], D2)  # the supplier found an earlier ship
    churn(alloc)
    for again in both_ways(delayed):
        assert alloc(again) == []
    assert alloc.state.orders["WH1", "o1"].lines[0].eta == D2


def test_the_same_inbound_statement_made_again_later_is_applied(alloc: Allocator) -> None:
    """Not a duplicate: the same payload stated anew (a later occurred_at), e.g. a delay retracted."""
    scheduled = alloc.ev.inbound_scheduled("IN1", "WH1", [("A", 4)], D1)
    alloc(scheduled)
    alloc.place("o1", "WH1", [("A", 2)])
    alloc.delay("IN1", "WH1", D2)
    restated = scheduled.model_copy(
        update={"id": "restated", "occurred_at": alloc.ev.clock + timedelta(hours=1)}
    )
    out = alloc(restated)
    assert line(one(out, "BackorderEtaChanged")).eta == D1
