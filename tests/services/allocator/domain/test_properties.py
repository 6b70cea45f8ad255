"""Property tests: random valid event streams over a few SKUs and warehouses.

After every command: the state's invariants hold, every output is valid, and
what the outputs last said about each line and SKU equals the state. Over a
whole stream: units are conserved per SKU, the queue is filled in order, and
the same log always gives byte-identical outputs (snapshots included), and
re-sent events (old or recent, same or new envelope id) change nothing.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from schemas.registry import encode, parse_output
from services.allocator.domain import check_invariants, decide, new_state
from services.allocator.domain import queue as queue_module
from services.allocator.domain.eta import position as sku_position
from services.allocator.domain.plain import state_from_plain, state_to_plain
from tests.builders.inputs import START, Events
from tests.builders.streams import mixed_stream

WAREHOUSES = ("W1", "W2")
SKUS = ("A", "B", "C")

whs = st.sampled_from(WAREHOUSES)
skus = st.sampled_from(SKUS)

order_op = st.tuples(
    st.just("order"),
    whs,
    st.integers(0, 9),
    st.lists(st.tuples(skus, st.integers(1, 6)), min_size=1, max_size=3),
    st.sampled_from(["ship_partial", "ship_partial", "ship_complete"]),
    st.sampled_from([0, 0, 0, 5, -1]),
    st.integers(-300, 300),
)
cancel_op = st.tuples(st.just("cancel"), whs, st.integers(0, 11))
receive_op = st.tuples(
    st.just("receive"),
    whs,
    skus,
    st.integers(1, 12),
    st.integers(0, 30),
    st.none() | st.integers(0, 3),
)
adjust_op = st.tuples(
    st.just("adjust"), whs, skus, st.integers(-6, 6).filter(bool), st.integers(0, 30)
)
inbound_op = st.tuples(
    st.just("inbound"),
    whs,
    st.integers(0, 3),
    st.lists(st.tuples(skus, st.integers(1, 10)), min_size=1, max_size=3, unique_by=lambda t: t[0]),
    st.integers(1, 40),
)
delay_op = st.tuples(st.just("delay"), whs, st.integers(0, 4), st.integers(1, 40))
policy_op = st.tuples(
    st.just("policy"),
    whs,
    skus,
    st.booleans(),
    st.booleans(),
    st.none() | st.integers(0, 12),  # backorder_limit
    st.sampled_from([None, "any", "covered_only"]),
    st.none() | st.integers(0, 30),  # release date, days after START
)
# Ticks may go back (ignored), repeat, or jump past inbound ETAs plus the grace.
tick_op = st.tuples(st.just("tick"), st.integers(0, 45))
icancel_op = st.tuples(st.just("icancel"), whs, st.integers(0, 4))
redeliver_op = st.tuples(st.just("redeliver"), st.integers(0, 1_000))

ops = st.lists(
    st.one_of(
        order_op,
        order_op,
        order_op,
        cancel_op,
        cancel_op,
        receive_op,
        receive_op,
        adjust_op,
        inbound_op,
        delay_op,
        policy_op,
        redeliver_op,
        tick_op,
        tick_op,
        icancel_op,
    ),
    min_size=8,
    max_size=60,
)


def build(plan: list[tuple]) -> list[Any]:
    """Turn a generated plan into valid input envelopes (deterministically)."""
    ev = Events(prefix="p")
    events: list[Any] = []
    for op in plan:
        kind = op[0]
        if kind == "order":
            _, wh, n, lines, policy, priority, offset = op
            placed_at = ev.clock + timedelta(seconds=offset)
            events.append(
                ev.order_placed(
                    f"o{n}", wh, lines, policy=policy, priority=priority, placed_at=placed_at
                )
            )
        elif kind == "cancel":
            _, wh, n = op
            events.append(ev.order_cancelled(f"o{n}", wh))
        elif kind == "receive":
            _, wh, sku, qty, receipt, inbound = op
            inbound_id = None if inbound is None else f"in{inbound}"
            events.append(
                ev.stock_received(wh, sku, qty, receipt_id=f"r{receipt}", inbound_id=inbound_id)
            )
        elif kind == "adjust":
            _, wh, sku, delta, adjustment = op
            events.append(ev.stock_adjusted(wh, sku, delta, adjustment_id=f"a{adjustment}"))
        elif kind == "inbound":
            _, wh, n, lines, days = op
            events.append(
                ev.inbound_scheduled(f"in{n}", wh, lines, (START + timedelta(days=days)).date())
            )
        elif kind == "delay":
            _, wh, n, days = op
            events.append(ev.shipment_delayed(f"in{n}", wh, (START + timedelta(days=days)).date()))
        elif kind == "policy":
            _, wh, sku, backorderable, discontinued, limit, mode, release = op
            release_date = None if release is None else (START + timedelta(days=release)).date()
            events.append(
                ev.sku_policy_set(
                    wh,
                    sku,
                    backorderable,
                    discontinued,
                    backorder_limit=limit,
                    backorder_mode=mode,
                    release_date=release_date,
                )
            )
        elif kind == "tick":
            events.append(ev.clock_ticked(START + timedelta(days=op[1], hours=op[1] % 24)))
        elif kind == "icancel":
            _, wh, n = op
            events.append(ev.inbound_cancelled(f"in{n}", wh))
        elif kind == "redeliver" and events:
            events.append(events[op[1] % len(events)])  # same envelope id
    return events


def _queue_snapshot(state) -> dict:
    return {
        key: [(entry[:4], entry[4], entry[4].allocated + entry[4].reserved) for entry in sku.queue]
        for key, sku in state.skus.items()
        if sku.queue is not None
    }


class Checker:
    """Folds events one by one and checks the state and the outputs after each."""

    def __init__(self, dedup_window: int = 50) -> None:
        self.state = new_state(dedup_window)
        self.encoded: list[bytes] = []
        self.reported: dict[tuple, Any] = {}  # (wh, order_id, line_no) -> last AllocationLine
        self.positions: dict[tuple, Any] = {}  # (wh, sku) -> last StockPositionChanged data
        self.shipped: dict[tuple, int] = defaultdict(int)  # (wh, sku) -> units shipped

    def apply(self, event: Any) -> list[Any]:
        before = _queue_snapshot(self.state)
        self.state, outputs = decide(self.state, event)
        check_invariants(self.state)
        for output in outputs:
            raw = encode(output)
            assert parse_output(raw) == output
            self.encoded.append(raw)
            data = output.data
            if output.type == "StockPositionChanged":
                self.positions[data.warehouse_id, data.sku] = data
                continue
            if output.type == "StockAlertTriggered":
                continue
            today = self.state.today
            for ln in data.lines:
                # No line ever shows an ETA in the past relative to the log's today.
                assert today is None or ln.eta is None or ln.eta >= today
                assert ln.allocated + ln.backordered + ln.rejected + ln.cancelled == ln.quantity
                assert ln.reserved <= ln.backordered
                assert ln.shipped <= ln.allocated
                self.reported[data.warehouse_id, data.order_id, ln.line_no] = ln
                self.shipped[data.warehouse_id, ln.sku] += ln.shipped
        # Queue order: nobody ahead of a line that got units is left waiting.
        for key, entries in before.items():
            filled = [qkey for qkey, line, had in entries if line.allocated + line.reserved > had]
            if filled:
                last = max(filled)
                skipped = [k for k, line, _ in entries if k < last and line.qkey is not None]
                assert not skipped, f"{key}: {skipped} still wait ahead of filled {last}"
        return outputs

    def check_reported(self) -> None:
        """What the outputs last said about each line and SKU equals the state."""
        state = self.state
        for (wh, order_id), order in state.orders.items():
            for line in order.lines:
                last = self.reported[wh, order_id, line.line_no]
                assert (last.allocated, last.backordered, last.rejected, last.cancelled) == (
                    line.allocated,
                    line.waiting + line.reserved,
                    line.rejected,
                    line.cancelled,
                )
                assert last.eta == line.eta
        for (wh, order_id, _line_no), last in self.reported.items():
            if (wh, order_id) not in state.orders:
                assert last.backordered == 0 and last.eta is None  # closed lines say so
        for (wh, sku_name), sku in state.skus.items():
            assert self.shipped[wh, sku_name] == sku.released_total
            # Negative adjustments taken from stock: all but the shortfall still unpaid.
            taken = sku.negative_adjusted_total - sku.shortfall
            assert sku.released_total <= sku.received_total + sku.positive_adjusted_total - taken
            assert sku.available >= 0
            last = self.positions.get((wh, sku_name))
            position = sku_position(sku, state.today, state.grace_days)
            if last is None:
                assert position == (0, 0, 0, 0, None, 0, None)
            else:
                assert (last.available, last.backordered, last.reserved, last.incoming) == (
                    sku.available,
                    sku.waiting + sku.reserved,
                    sku.reserved,
                    sku.incoming,
                )
                assert (last.next_eta, last.shortfall) == (sku.next_eta(), sku.shortfall)
                assert last.promise_eta == position[6]


def run_checked(events: list[Any]) -> list[bytes]:
    """Fold `events`, checking everything after each command; the encoded outputs."""
    checker = Checker()
    for event in events:
        checker.apply(event)
    checker.check_reported()
    return checker.encoded


def through_plain(state):
    """What a snapshot does to the state: to plain data, JSON and back."""
    return state_from_plain(orjson.loads(orjson.dumps(state_to_plain(state))))


def run_plain(events: list[Any], snapshot_every: int = 0, dedup_window: int = 50) -> list[bytes]:
    state = new_state(dedup_window)
    encoded = []
    for n, event in enumerate(events):
        if snapshot_every and n % snapshot_every == 0:
            state = through_plain(state)
        state, outputs = decide(state, event)
        encoded.extend(encode(o) for o in outputs)
    return encoded


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=ops, snapshot_every=st.integers(1, 7), block=st.sampled_from([2, 3, 64]))
def test_random_streams_keep_every_invariant_and_replay_identically(
    plan: list[tuple], snapshot_every: int, block: int
) -> None:
    events = build(plan)
    default = queue_module.QUEUE_BLOCK
    queue_module.QUEUE_BLOCK = block  # tiny blocks: splits and merges all the time
    try:
        first = run_checked(events)
    finally:
        queue_module.QUEUE_BLOCK = default
    assert run_plain(events, snapshot_every) == first  # and block size changes nothing


def _business_state(state) -> dict:
    """The state as plain data, without the envelope-id window (re-sends do move it)."""
    plain = state_to_plain(state)
    del plain["seen_events"]
    for key in ("closed_orders", "tombstones", "seen_receipts", "seen_adjustments"):
        plain[key] = {scope: sorted(ids) for scope, ids in plain[key].items() if ids}
    return plain


# (position in the stream, which earlier event, with a new envelope id?)
resends = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 10_000), st.booleans()), max_size=25
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=ops, extra=resends, window=st.sampled_from([1, 3, 50]))
def test_resent_events_change_nothing_however_old(
    plan: list[tuple], extra: list[tuple[int, int, bool]], window: int
) -> None:
    """DESIGN §4: the same stream with re-sent copies of earlier events (same or
    new envelope id, old enough to have left the envelope-id window or not)
    gives the same outputs and the same state; the copies give no output."""
    events = build(plan)
    inserts: dict[int, list[tuple[int, bool]]] = defaultdict(list)
    for at, which, new_id in extra:
        inserts[at % (len(events) + 1)].append((which, new_id))
    stream: list[tuple[Any, bool]] = []  # (event, is a re-send)
    for n in range(len(events) + 1):
        for k, (which, new_id) in enumerate(inserts.get(n, ())):
            if n:
                original = events[which % n]
                copy = original.model_copy(update={"id": f"again-{n}-{k}"}) if new_id else original
                stream.append((copy, True))
        if n < len(events):
            stream.append((events[n], False))

    plain_state = new_state(window)
    expected: list[bytes] = []
    for event in events:
        plain_state, outputs = decide(plain_state, event)
        expected.extend(encode(o) for o in outputs)

    state = new_state(window)
    got: list[bytes] = []
    for n, (event, resent) in enumerate(stream):
        if n % 7 == 3:
            state = through_plain(state)
        state, outputs = decide(state, event)
        if resent:
            assert outputs == [], f"a re-sent {event.type} ({event.id}) changed something"
        got.extend(encode(o) for o in outputs)
    check_invariants(state)
    assert got == expected
    assert _business_state(state) == _business_state(plain_state)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_mixed_streams_are_consistent(seed: int) -> None:
    events = mixed_stream(400, seed=seed, warehouses=2, skus_per_warehouse=12)
    first = run_checked(events)
    assert run_plain(events, snapshot_every=37) == first


def test_a_long_mixed_stream_is_deterministic() -> None:
    events = mixed_stream(5_000, seed=11, skus_per_warehouse=30)
    assert run_checked(events) == run_plain(events, snapshot_every=997)


class AllocatorMachine(RuleBasedStateMachine):
    """Random event streams where cancels and receipts refer to real orders and inbounds."""

    orders = Bundle("orders")
    ghosts = Bundle("ghosts")
    inbounds = Bundle("inbounds")

    def __init__(self) -> None:
        super().__init__()
        self.ev = Events(prefix="m")
        self.dedup_window = 40  # small, so that eviction happens too
        self.default_block = queue_module.QUEUE_BLOCK
        queue_module.QUEUE_BLOCK = 2  # tiny queue blocks: splits and merges all the time
        self.checker = Checker(self.dedup_window)
        self.log: list[Any] = []
        self.count = 0

    def _apply(self, event: Any) -> list[Any]:
        self.log.append(event)
        return self.checker.apply(event)

    def _order(
        self, wh: str, order_id: str, lines, policy: str, priority: int, offset: int
    ) -> None:
        placed_at = self.ev.clock + timedelta(seconds=offset)
        self._apply(
            self.ev.order_placed(
                order_id, wh, lines, policy=policy, priority=priority, placed_at=placed_at
            )
        )

    @rule(
        target=orders,
        wh=whs,
        lines=st.lists(st.tuples(skus, st.integers(1, 6)), min_size=1, max_size=3),
        policy=st.sampled_from(["ship_partial", "ship_complete"]),
        priority=st.sampled_from([0, 0, 0, 5, -1]),
        offset=st.integers(-300, 300),
    )
    def place(self, wh, lines, policy, priority, offset):
        self.count += 1
        order_id = f"o{self.count}"
        self._order(wh, order_id, lines, policy, priority, offset)
        return (wh, order_id)

    @rule(key=orders, lines=st.lists(st.tuples(skus, st.integers(1, 6)), min_size=1, max_size=2))
    def place_same_order_again(self, key, lines):
        self._order(key[0], key[1], lines, "ship_partial", 0, 0)

    @rule(key=orders)
    def cancel(self, key):
        self._apply(self.ev.order_cancelled(key[1], key[0]))

    @rule(target=ghosts, wh=whs)
    def cancel_unknown(self, wh):
        self.count += 1
        order_id = f"g{self.count}"
        self._apply(self.ev.order_cancelled(order_id, wh))
        return (wh, order_id)

    @rule(key=ghosts, lines=st.lists(st.tuples(skus, st.integers(1, 6)), min_size=1, max_size=2))
    def place_cancelled_ghost(self, key, lines):
        self._order(key[0], key[1], lines, "ship_partial", 0, 0)

    @rule(wh=whs, sku=skus, qty=st.integers(1, 12), receipt=st.integers(0, 40))
    def receive(self, wh, sku, qty, receipt):
        self._apply(self.ev.stock_received(wh, sku, qty, receipt_id=f"r{receipt}"))

    @rule(key=inbounds, sku=skus, qty=st.integers(1, 12), receipt=st.integers(0, 40))
    def receive_inbound(self, key, sku, qty, receipt):
        self._apply(
            self.ev.stock_received(key[0], sku, qty, receipt_id=f"r{receipt}", inbound_id=key[1])
        )

    @rule(wh=whs, sku=skus, delta=st.integers(-6, 6).filter(bool), adjustment=st.integers(0, 40))
    def adjust(self, wh, sku, delta, adjustment):
        self._apply(self.ev.stock_adjusted(wh, sku, delta, adjustment_id=f"a{adjustment}"))

    @rule(
        target=inbounds,
        wh=whs,
        n=st.integers(0, 4),
        lines=st.lists(
            st.tuples(skus, st.integers(1, 10)), min_size=1, max_size=3, unique_by=lambda t: t[0]
        ),
        days=st.integers(1, 40),
    )
    def schedule(self, wh, n, lines, days):
        eta = (START + timedelta(days=days)).date()
        self._apply(self.ev.inbound_scheduled(f"in{n}", wh, lines, eta))
        return (wh, f"in{n}")

    @rule(key=inbounds, days=st.integers(1, 40))
    def delay(self, key, days):
        self._apply(self.ev.shipment_delayed(key[1], key[0], (START + timedelta(days=days)).date()))

    @rule(
        wh=whs,
        sku=skus,
        backorderable=st.booleans(),
        discontinued=st.sampled_from([False, False, True]),
    )
    def set_policy(self, wh, sku, backorderable, discontinued):
        self._apply(self.ev.sku_policy_set(wh, sku, backorderable, discontinued))

    @rule(
        wh=whs,
        sku=skus,
        limit=st.none() | st.integers(0, 12),
        mode=st.sampled_from(["any", "covered_only"]),
        release=st.none() | st.integers(0, 30),
    )
    def set_supply_policy(self, wh, sku, limit, mode, release):
        release_date = None if release is None else (START + timedelta(days=release)).date()
        self._apply(
            self.ev.sku_policy_set(
                wh, sku, backorder_limit=limit, backorder_mode=mode, release_date=release_date
            )
        )

    @rule(days=st.integers(0, 45), minutes=st.integers(0, 1439))
    def tick(self, days, minutes):
        before = self.checker.state.today
        self._apply(self.ev.clock_ticked(START + timedelta(days=days, minutes=minutes)))
        after = self.checker.state.today
        assert after is not None and (before is None or after >= before)  # never backwards

    @rule(key=inbounds)
    def cancel_inbound(self, key):
        self._apply(self.ev.inbound_cancelled(key[1], key[0]))

    @precondition(lambda self: self.log)
    @rule(k=st.integers(0, 1_000))
    def redeliver(self, k):
        # The same envelope id, maybe long out of the envelope-id window: nothing happens.
        assert self._apply(self.log[-1 - k % len(self.log)]) == []

    @precondition(lambda self: self.log)
    @rule(k=st.integers(0, 1_000))
    def resend_with_a_new_id(self, k):
        # An upstream retry: the same event under a new envelope id changes nothing.
        self.count += 1
        original = self.log[-1 - k % len(self.log)]
        assert self._apply(original.model_copy(update={"id": f"retry-{self.count}"})) == []

    @invariant()
    def outputs_match_state(self):
        self.checker.check_reported()

    def teardown(self):
        queue_module.QUEUE_BLOCK = self.default_block
        if self.log:
            replayed = run_plain(self.log, snapshot_every=5, dedup_window=self.dedup_window)
            assert replayed == self.checker.encoded


AllocatorMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None
)
test_allocator_state_machine = AllocatorMachine.TestCase
