"""The invariant checker finds what is broken: every other domain test trusts it to."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from datetime import timedelta

import pytest

from services.allocator.domain import (
    AllocatorState,
    InvariantViolation,
    check_invariants,
    decide,
    invariant_problems,
    new_state,
)
from services.allocator.domain.state import Line
from tests.builders.inputs import START, Events


def _backordered_state() -> AllocatorState:
    """Two SKUs with waiting lines (one dated by an inbound), a ship_complete reservation."""
    ev = Events(prefix="inv")
    day = START.date() + timedelta(days=5)
    state = new_state()
    for event in (
        ev.stock_received("WH1", "A", 3),
        ev.inbound_scheduled("IN1", "WH1", [("A", 4), ("B", 2)], day),
        ev.order_placed("o1", "WH1", [("A", 5)]),
        ev.order_placed("o2", "WH1", [("A", 2), ("B", 1)], policy="ship_complete"),
        ev.order_placed("o3", "WH1", [("B", 3)]),
        ev.stock_received("WH1", "B", 1),
    ):
        state, _ = decide(state, event)
    return state


def _waiting_line(state: AllocatorState, order_id: str = "o1") -> Line:
    return next(ln for ln in state.orders[("WH1", order_id)].lines if ln.waiting)


def _more_allocated(state: AllocatorState) -> None:
    _waiting_line(state).allocated += 1


def _order_total(state: AllocatorState) -> None:
    state.orders[("WH1", "o1")].waiting += 1


def _available_while_waiting(state: AllocatorState) -> None:
    state.skus[("WH1", "A")].available += 1


def _raw_eta(state: AllocatorState) -> None:
    line = _waiting_line(state)
    line.raw_eta = None if line.raw_eta is not None else START.date()


def _incoming(state: AllocatorState) -> None:
    state.skus[("WH1", "B")].incoming += 1


def _block_sum(state: AllocatorState) -> None:
    queue = state.skus[("WH1", "A")].queue
    assert queue is not None
    queue.blocks[0].waiting += 1


def _open_and_closed(state: AllocatorState) -> None:
    state.closed_orders.add("WH1", "o1")


def _inbound_listing(state: AllocatorState) -> None:
    state.skus[("WH1", "B")].inbounds.clear()


def _unreported_position(state: AllocatorState) -> None:
    state.skus[("WH1", "A")].last_position = (0, 0, 0, 0, None, 0)


CORRUPTIONS: dict[str, tuple[Callable[[AllocatorState], None], str]] = {
    "line quantities": (_more_allocated, "do not add up"),
    "order totals": (_order_total, "totals"),
    "stock waits on a full shelf": (_available_while_waiting, "available while"),
    "raw ETA": (_raw_eta, "raw ETA"),
    "incoming": (_incoming, "incoming"),
    "queue block sum": (_block_sum, "waiting sum is stale"),
    "open and closed": (_open_and_closed, "open but also closed"),
    "inbound listing": (_inbound_listing, "listing mismatch"),
    "unreported position": (_unreported_position, "not reported"),
}


def test_a_folded_state_is_consistent() -> None:
    state = _backordered_state()
    assert state.stats()["queued_lines"] >= 3
    assert invariant_problems(state) == []
    check_invariants(state)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_each_corruption_is_named(name: str) -> None:
    corrupt, expected = CORRUPTIONS[name]
    state = pickle.loads(pickle.dumps(_backordered_state()))
    corrupt(state)
    problems = invariant_problems(state)
    assert any(expected in problem for problem in problems), problems
    with pytest.raises(InvariantViolation) as raised:
        check_invariants(state)
    assert raised.value.problems == problems
