"""Rules for honest dates from the supply side (issue 15): the log's clock, cancelled and
overdue inbounds, shrinkage of reserved stock, the promise date, backorder limits and
modes, pre-orders. The harness checks the invariants (no ETA before today included)
and the contract after every command."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from services.allocator.domain import new_state

from .harness import Allocator, line, of_type, one, order_ids, types

D1, D2, D3 = date(2026, 11, 16), date(2026, 11, 23), date(2026, 11, 30)


@pytest.fixture
def alloc() -> Allocator:
    return Allocator()


def day(d: date, n: int) -> date:
    return d + timedelta(days=n)


# ---------------------------------------------------------------- the clock


def test_today_comes_only_from_ticks_and_never_moves_back(alloc: Allocator) -> None:
    assert alloc.state.today is None
    alloc.place("o1", "WH1", [("A", 1)])  # envelope occurred_at says 2026-11-02: ignored
    assert alloc.state.today is None
    alloc.tick(datetime(2026, 11, 10, 23, 30, tzinfo=UTC))
    assert alloc.state.today == date(2026, 11, 10)
    assert alloc.tick(date(2026, 11, 5)) == []  # backwards: nothing
    assert alloc.state.today == date(2026, 11, 10)
    # An offset counts: 2026-11-11T01:00+02:00 is still the 10th in UTC.
    alloc.tick("2026-11-11T01:00:00+02:00")
    assert alloc.state.today == date(2026, 11, 10)


def test_a_late_inbound_within_the_grace_is_expected_today(alloc: Allocator) -> None:
    alloc.schedule("IN1", "WH1", [("A", 5)], D1)
    alloc.place("o1", "WH1", [("A", 2)])
    out = alloc.tick(day(D1, 1))  # one day late, grace 2: the date moves to today
    moved = one(out, "BackorderEtaChanged", "o1")
    assert (line(moved).previous_eta, line(moved).eta) == (D1, day(D1, 1))
    assert moved.data.cause.event_type == "ClockTicked"
    assert moved.data.cause.reason is None
    position = one(out, "StockPositionChanged").data
    assert (position.next_eta, position.promise_eta) == (D1, day(D1, 1))


def test_an_overdue_inbound_leaves_its_lines_undated_once(alloc: Allocator) -> None:
    alloc.schedule("IN1", "WH1", [("A", 5)], D1)
    alloc.schedule("IN2", "WH1", [("A", 5)], D3)
    alloc.place("o1", "WH1", [("A", 3)])  # covered by IN1
    alloc.place("o2", "WH1", [("A", 4)])  # last unit from IN2
    alloc.tick(day(D1, 2))  # the last day of the grace
    out = alloc.tick(day(D1, 3))
    gone = one(out, "BackorderEtaChanged", "o1")
    assert line(gone).eta is None
    assert (gone.data.cause.reason, gone.data.cause.inbound_id) == ("inbound_overdue", "IN1")
    assert "o2" not in order_ids(out)  # covered by IN2: keeps D3
    assert alloc.state.orders[("WH1", "o2")].lines[0].eta == D3
    assert alloc.position("WH1", "A")["promise_eta"] == D3  # the 8th unit: IN2
    assert not of_type(alloc.tick(day(D1, 4)), "BackorderEtaChanged")  # once
    # A new order covered by the overdue inbound gets no date either.
    alloc.cancel("o2")
    out = alloc.place("o3", "WH1", [("A", 1)])
    assert line(one(out, "Backordered", "o3")).eta is None


def test_a_delay_notice_restores_the_date_of_an_overdue_inbound(alloc: Allocator) -> None:
    alloc.schedule("IN1", "WH1", [("A", 5)], D1)
    alloc.place("o1", "WH1", [("A", 3)])
    alloc.tick(day(D1, 5))
    out = alloc.delay("IN1", "WH1", D3, reason="port congestion")
    back = one(out, "BackorderEtaChanged", "o1")
    assert (line(back).previous_eta, line(back).eta) == (None, D3)
    assert back.data.cause.reason == "port congestion"


def test_a_receipt_against_an_overdue_inbound_dates_the_rest_today(alloc: Allocator) -> None:
    alloc.schedule("IN1", "WH1", [("A", 10)], D1)
    alloc.place("o1", "WH1", [("A", 2)])
    alloc.place("o2", "WH1", [("A", 6)])
    alloc.tick(day(D1, 5))
    out = alloc.receive("WH1", "A", 2, inbound_id="IN1")  # the truck is here after all
    assert line(one(out, "BackorderAllocated", "o1")).shipped == 2
    assert line(one(out, "BackorderEtaChanged", "o2")).eta == day(D1, 5)
    assert alloc.state.inbounds[("WH1", "IN1")].eta == day(D1, 5)


def test_grace_is_a_parameter_of_the_state(alloc: Allocator) -> None:
    alloc.state = new_state(grace_days=0)
    alloc.schedule("IN1", "WH1", [("A", 5)], D1)
    alloc.place("o1", "WH1", [("A", 1)])
    out = alloc.tick(day(D1, 1))
    assert line(one(out, "BackorderEtaChanged", "o1")).eta is None


# ---------------------------------------------------------------- cancelled inbounds


def test_a_cancelled_inbound_leaves_its_customers_without_a_date(alloc: Allocator) -> None:
    alloc.schedule("IN1", "WH1", [("A", 5), ("B", 2)], D1)
    alloc.schedule("IN2", "WH1", [("A", 5)], D2)
    alloc.place("o1", "WH1", [("A", 4)])  # IN1
    alloc.place("o2", "WH1", [("A", 4)])  # units 5..8: IN2
    alloc.place("o3", "WH1", [("B", 1)])
    cancel = alloc.ev.inbound_cancelled("IN1", "WH1")
    out = alloc(cancel)
    moved = {o.data.order_id: line(o) for o in of_type(out, "BackorderEtaChanged")}
    assert (moved["o1"].previous_eta, moved["o1"].eta) == (D1, D2)  # IN2 covers 1..5
    assert moved["o2"].eta is None  # nothing covers units 5..8 any more
    assert moved["o3"].eta is None
    assert all(
        o.data.cause.event_type == "InboundCancelled" for o in of_type(out, "BackorderEtaChanged")
    )
    assert all(o.data.cause.inbound_id == "IN1" for o in of_type(out, "BackorderEtaChanged"))
    assert alloc.position("WH1", "A")["incoming"] == 5
    assert alloc.position("WH1", "B")["incoming"] == 0
    assert ("WH1", "IN1") not in alloc.state.inbounds
    assert alloc(cancel) == []  # the same event again
    assert alloc(cancel.model_copy(update={"id": "again"})) == []  # a retry under a new id


def test_cancelling_a_partly_received_inbound_closes_it_short(alloc: Allocator) -> None:
    alloc.schedule("IN1", "WH1", [("A", 10)], D1)
    alloc.place("o1", "WH1", [("A", 6)])
    alloc.receive("WH1", "A", 4, inbound_id="IN1")
    out = alloc.cancel_inbound("IN1", "WH1")
    assert line(one(out, "BackorderEtaChanged", "o1")).eta is None
    assert alloc.position("WH1", "A") | {"next_eta": None} == {
        "available": 0,
        "backordered": 2,
        "reserved": 0,
        "incoming": 0,
        "next_eta": None,
        "shortfall": 0,
        "promise_eta": None,
    }


# ---------------------------------------------------------------- shrinkage


def test_shrinkage_takes_reservations_from_the_back_of_the_queue(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 6)
    alloc.place("vip", "WH1", [("A", 3), ("B", 1)], policy="ship_complete", priority=5)
    alloc.place("early", "WH1", [("A", 2), ("B", 1)], policy="ship_complete")
    alloc.place("late", "WH1", [("A", 1), ("B", 1)], policy="ship_complete")
    alloc.schedule("IN1", "WH1", [("A", 10), ("B", 10)], D2)
    out = alloc.adjust("WH1", "A", -2)  # nothing available: two reserved units are gone
    lost = of_type(out, "Backordered")
    assert [o.data.order_id for o in lost] == ["late", "early"]  # latest placed first
    assert all(o.data.reason == "reservation_lost" for o in lost)
    late, early = (line(o) for o in lost)
    assert (late.reserved, late.backordered, late.eta) == (0, 1, D2)
    assert (early.reserved, early.backordered, early.eta) == (1, 2, D2)
    assert alloc.state.orders[("WH1", "vip")].lines[0].reserved == 3
    assert alloc.position("WH1", "A")["shortfall"] == 0
    # The replacements go to the queue in order: early gets its unit back first.
    out = alloc.receive("WH1", "A", 1)
    assert not of_type(out, "Backordered")
    assert alloc.state.orders[("WH1", "early")].lines[0].reserved == 2


def test_shrinkage_beyond_every_reservation_is_a_shortfall(alloc: Allocator) -> None:
    alloc.receive("WH1", "A", 3)
    alloc.place("o1", "WH1", [("A", 2), ("B", 1)], policy="ship_complete")
    out = alloc.adjust("WH1", "A", -5)  # 1 available + 2 reserved + 2 missing
    assert line(one(out, "Backordered", "o1")).reserved == 0
    assert alloc.position("WH1", "A")["shortfall"] == 2
    out = alloc.receive("WH1", "A", 4)  # pays the shortfall, then serves o1
    assert alloc.state.orders[("WH1", "o1")].lines[0].reserved == 2
    sku = alloc.state.skus[("WH1", "A")]
    taken = sku.negative_adjusted_total - sku.shortfall
    assert sku.released_total <= sku.received_total + sku.positive_adjusted_total - taken


def test_a_damaged_reservation_never_ships(alloc: Allocator) -> None:
    """The bug of the issue: a ship_complete order kept 3 units counted as damaged and
    later shipped units the warehouse did not have."""
    alloc.receive("WH1", "A", 3)
    alloc.place("o1", "WH1", [("A", 3), ("B", 1)], policy="ship_complete")
    alloc.adjust("WH1", "A", -3)
    out = alloc.receive("WH1", "B", 1)
    assert not of_type(out, "BackorderAllocated")
    assert alloc.state.skus[("WH1", "A")].released_total == 0


# ---------------------------------------------------------------- promise date


def test_promise_eta_is_after_everything_already_queued(alloc: Allocator) -> None:
    alloc.schedule("IN1", "WH1", [("A", 5)], D1)
    alloc.schedule("IN2", "WH1", [("A", 5)], D2)
    alloc.place("o1", "WH1", [("A", 5)])  # takes all of IN1
    position = alloc.position("WH1", "A")
    assert (position["next_eta"], position["promise_eta"]) == (D1, D2)  # the case
    alloc.place("o2", "WH1", [("A", 5)])
    assert alloc.position("WH1", "A")["promise_eta"] is None
    alloc.receive("WH1", "A", 20)
    position = alloc.position("WH1", "A")
    assert position["available"] == 10 and position["promise_eta"] == D1


# ---------------------------------------------------------------- limits and modes


def test_backorder_limit_rejects_units_beyond_it(alloc: Allocator) -> None:
    alloc.policy("WH1", "A", backorder_limit=5)
    alloc.receive("WH1", "A", 2)
    out = alloc.place("o1", "WH1", [("A", 6)])  # 2 ship, 4 wait
    assert line(one(out, "PartiallyShipped", "o1")).backordered == 4
    out = alloc.place("o2", "WH1", [("A", 3)])  # 1 may wait, 2 rejected
    rejected = line(one(out, "OrderRejected", "o2"))
    assert (rejected.rejected, rejected.reason) == (2, "backorder_limit")
    assert line(one(out, "Backordered", "o2")).backordered == 1
    out = alloc.place("o3", "WH1", [("A", 1)])
    assert types(out)[0] == "OrderRejected" and line(out[0]).reason == "backorder_limit"


def test_covered_only_accepts_only_what_an_inbound_covers(alloc: Allocator) -> None:
    alloc.policy("WH1", "A", backorder_mode="covered_only")
    out = alloc.place("o0", "WH1", [("A", 1)])
    assert types(out) == ["OrderRejected"] and line(out[0]).reason == "not_covered"
    alloc.schedule("IN1", "WH1", [("A", 4)], D1)
    alloc.place("o1", "WH1", [("A", 3)])
    out = alloc.place("o2", "WH1", [("A", 3)])  # 1 covered, 2 not
    assert (
        line(one(out, "OrderRejected", "o2")).rejected,
        line(one(out, "Backordered", "o2")).eta,
    ) == (2, D1)
    alloc.tick(day(D1, 3))  # IN1 overdue: nothing is covered
    out = alloc.place("o3", "WH1", [("A", 1)])
    assert line(one(out, "OrderRejected", "o3")).reason == "not_covered"


# ---------------------------------------------------------------- pre-orders


def test_pre_orders_hold_early_stock_until_the_release_date(alloc: Allocator) -> None:
    release = D2
    alloc.tick(D1)
    alloc.policy("WH1", "P", backorderable=False, release_date=release)
    out = alloc.place("o1", "WH1", [("P", 2)])  # not backorderable, but a pre-order
    pre = one(out, "Backordered", "o1")
    assert pre.data.reason == "pre_order" and line(pre).eta is None
    out = alloc.receive("WH1", "P", 5)  # early stock: held, dated the release date
    assert not of_type(out, "BackorderAllocated")
    assert line(one(out, "BackorderEtaChanged", "o1")).eta == release
    position = one(out, "StockPositionChanged").data
    assert (position.available, position.backordered, position.promise_eta) == (5, 2, release)
    alloc.schedule("IN1", "WH1", [("P", 10)], day(D1, 1))  # before the release: dated the release
    out = alloc.place("o2", "WH1", [("P", 6)])
    assert line(one(out, "Backordered", "o2")).eta == release
    assert not of_type(alloc.tick(day(release, -1)), "BackorderAllocated")
    out = alloc.tick(release)
    assert [o.data.order_id for o in of_type(out, "BackorderAllocated")] == ["o1", "o2"]
    assert line(one(out, "BackorderAllocated", "o2")).shipped == 3
    assert alloc.state.release_pending == {}
    out = alloc.place("o3", "WH1", [("P", 1)])  # released, not backorderable: rejected
    assert line(one(out, "OrderRejected", "o3")).reason == "not_backorderable"


def test_without_a_tick_a_release_date_is_never_reached(alloc: Allocator) -> None:
    alloc.policy("WH1", "P", release_date=D1)
    alloc.receive("WH1", "P", 3)
    out = alloc.place("o1", "WH1", [("P", 1)])
    assert one(out, "Backordered", "o1").data.reason == "pre_order"
    out = alloc.policy("WH1", "P")  # the release date withdrawn: released now
    assert line(one(out, "BackorderAllocated", "o1")).shipped == 1


def test_ship_complete_pre_order_with_an_in_stock_line(alloc: Allocator) -> None:
    alloc.tick(D1)
    alloc.policy("WH1", "P", release_date=D2)
    alloc.receive("WH1", "A", 1)
    alloc.receive("WH1", "P", 1)
    out = alloc.place("o1", "WH1", [("A", 1), ("P", 1)], policy="ship_complete")
    held = one(out, "Backordered", "o1")
    assert held.data.reason == "pre_order"
    assert [ln.eta for ln in held.data.lines] == [D2, D2]
    out = alloc.tick(D2)
    assert [ln.shipped for ln in one(out, "BackorderAllocated", "o1").data.lines] == [1, 1]


def test_a_date_between_undated_lines_is_walked_again_when_the_overdue_inbound_goes(
    alloc: Allocator,
) -> None:
    """An overdue inbound ahead of a dated one leaves dates that do not grow along the
    queue (None, a date, None); once it is cancelled, the line between must lose its
    date too, though the block's first and last line keep theirs (found by the state
    machine in test_properties)."""
    alloc.tick(date(2026, 11, 6))
    alloc.schedule("in1", "W2", [("C", 1)], date(2026, 11, 3))
    alloc.place("o1", "W2", [("A", 1), ("C", 2), ("C", 1)])
    alloc.delay("in1", "W2", date(2026, 11, 4))  # within the grace: expected today
    alloc.schedule("in0", "W2", [("C", 2)], date(2026, 11, 3))  # overdue at once
    alloc.place("o2", "W2", [("C", 1)])
    assert alloc.state.orders[("W2", "o1")].lines[2].raw_eta == date(2026, 11, 6)
    out = alloc.cancel_inbound("in0", "W2")  # the harness checks every raw ETA
    assert alloc.state.orders[("W2", "o1")].lines[2].raw_eta is None
    assert line(one(out, "BackorderEtaChanged", "o1"), 3).eta is None
