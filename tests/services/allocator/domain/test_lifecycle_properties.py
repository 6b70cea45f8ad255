"""Properties of the order's whole life on random streams: part cancels, policy switches,
consents, alerts and ticks mixed into the supply-side traffic.

- every invariant holds after every command (the checker of `test_properties`);
- a cancelled unit is never released, and what a line released or cancelled never
  shrinks;
- with the delay-consent rule on, an oracle written from the rule's text (not from
  `consent.py`) follows each line's reported ETAs and checks the promised date and
  consent state every output reports, and that a `no_consent` cancellation happens on
  exactly the tick the rule says: after the promised date, never earlier, never later;
- every alert is told at most once, never after its cancellation;
- the same log gives byte-identical outputs through snapshots, and a re-delivered
  envelope (same id) changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.registry import encode
from services.allocator.domain import decide, new_state
from tests.builders.inputs import START

from .test_properties import (
    Checker,
    adjust_op,
    build,
    cancel_op,
    delay_op,
    icancel_op,
    inbound_op,
    order_op,
    policy_op,
    receive_op,
    through_plain,
    tick_op,
    whs,
)

orders_n = st.integers(0, 9)
part_cancel_op = st.tuples(
    st.just("part"),
    whs,
    orders_n,
    st.lists(
        st.tuples(st.integers(1, 4), st.integers(1, 6)),
        min_size=1,
        max_size=3,
        unique_by=lambda t: t[0],
    ),
)
switch_op = st.tuples(
    st.just("switch"), whs, orders_n, st.sampled_from(["ship_partial", "ship_complete"])
)
consent_op = st.tuples(
    st.just("consent"),
    whs,
    orders_n,
    st.none() | st.lists(st.integers(1, 3), min_size=1, max_size=2, unique=True),
)
alert_op = st.tuples(st.just("alert"), whs, st.integers(0, 5), st.sampled_from(("A", "B", "C")))
unalert_op = st.tuples(st.just("unalert"), whs, st.integers(0, 5))
resend_op = st.tuples(st.just("redeliver"), st.integers(0, 1_000))

life_ops = st.lists(
    st.one_of(
        order_op,
        order_op,
        order_op,
        cancel_op,
        receive_op,
        receive_op,
        adjust_op,
        inbound_op,
        inbound_op,
        delay_op,
        delay_op,
        policy_op,
        tick_op,
        tick_op,
        icancel_op,
        part_cancel_op,
        part_cancel_op,
        switch_op,
        consent_op,
        consent_op,
        alert_op,
        unalert_op,
        resend_op,
    ),
    min_size=8,
    max_size=60,
)


# Streams where the consent rule has work: few orders waiting on few inbounds, many
# delays (some past 30 days), inbound cancels, consents and a calendar that moves.
W1 = st.just("W1")
few_orders = st.integers(0, 3)
consent_story = st.lists(
    st.one_of(
        st.tuples(
            st.just("order"),
            W1,
            few_orders,
            st.lists(
                st.tuples(st.sampled_from(("A", "B")), st.integers(1, 4)), min_size=1, max_size=2
            ),
            st.sampled_from(["ship_partial", "ship_complete"]),
            st.just(0),
            st.just(0),
        ),
        st.tuples(
            st.just("inbound"),
            W1,
            st.integers(0, 1),
            st.just([("A", 6), ("B", 6)]),
            st.integers(1, 20),
        ),
        st.tuples(st.just("delay"), W1, st.integers(0, 1), st.integers(1, 70)),
        st.tuples(st.just("delay"), W1, st.integers(0, 1), st.integers(1, 70)),
        st.tuples(st.just("icancel"), W1, st.integers(0, 1)),
        st.tuples(st.just("advance"), st.integers(1, 3)),
        st.tuples(st.just("advance"), st.integers(1, 3)),
        st.tuples(st.just("advance"), st.integers(1, 3)),
        st.tuples(
            st.just("receive"),
            W1,
            st.sampled_from(("A", "B")),
            st.integers(1, 3),
            st.integers(0, 30),
            st.none(),
        ),
        st.tuples(
            st.just("consent"),
            W1,
            few_orders,
            st.none() | st.lists(st.integers(1, 2), min_size=1, max_size=2, unique=True),
        ),
        st.tuples(
            st.just("part"),
            W1,
            few_orders,
            st.lists(
                st.tuples(st.integers(1, 2), st.integers(1, 2)),
                min_size=1,
                max_size=2,
                unique_by=lambda t: t[0],
            ),
        ),
        st.tuples(
            st.just("switch"), W1, few_orders, st.sampled_from(["ship_partial", "ship_complete"])
        ),
    ),
    min_size=10,
    max_size=50,
)

_BASE = frozenset(
    {"order", "cancel", "receive", "adjust", "inbound", "delay", "policy", "tick", "icancel"}
)


def build_life(plan: list[tuple]) -> list[Any]:
    """The base plan's events with the lifecycle ones woven in, in plan order."""
    events: list[Any] = []
    calendar = START
    for op in plan:
        kind = op[0]
        if kind == "advance":  # the calendar moves a few days, one tick a day
            for _ in range(op[1]):
                calendar += timedelta(days=1)
                events.append(_builder(len(events)).clock_ticked(calendar))
            continue
        if kind in _BASE:
            # Each one-op plan restarts its ids: keep them unique in the log.
            events.extend(e.model_copy(update={"id": f"{len(events)}-{e.id}"}) for e in build([op]))
            continue
        ev = _builder(len(events))
        if kind == "part":
            _, wh, n, lines = op
            events.append(ev.order_lines_cancelled(f"o{n}", wh, lines))
        elif kind == "switch":
            _, wh, n, policy = op
            events.append(ev.order_policy_changed(f"o{n}", wh, policy))
        elif kind == "consent":
            _, wh, n, lines = op
            events.append(ev.backorder_consent_given(f"o{n}", wh, lines))
        elif kind == "alert":
            _, wh, n, sku = op
            events.append(ev.stock_alert_requested(f"al{n}", wh, sku))
        elif kind == "unalert":
            _, wh, n = op
            events.append(ev.stock_alert_cancelled(f"al{n}", wh))
        elif kind == "redeliver" and events:
            events.append(events[op[1] % len(events)])
    return events


def _builder(n: int) -> Any:
    from tests.builders.inputs import Events

    return Events(prefix=f"l{n}", start=START + timedelta(seconds=n))


class ConsentOracle:
    """The delay-consent rule as DESIGN / the issue words it, from the outputs alone."""

    def __init__(self) -> None:
        self.lines: dict[tuple, dict[str, Any]] = {}
        self.placed: dict[tuple, date] = {}
        self.today: date | None = None
        self.alerts_told: set[tuple] = set()
        self.alerts_cancelled: set[tuple] = set()

    def before(self, event: Any) -> None:
        if event.type == "OrderPlaced":
            key = (event.data.warehouse_id, event.data.order_id)
            self.placed.setdefault(key, event.data.placed_at.astimezone().date())
        elif event.type == "StockAlertCancelled":
            self.alerts_cancelled.add((event.data.warehouse_id, event.data.alert_id))

    def due(self) -> set[tuple]:
        """Lines the rule says must be cancelled at a tick to `self.today`."""
        return {
            key
            for key, line in self.lines.items()
            if line["consent"] == "required"
            and line["open"]
            and line["promised"] is not None
            and self.today is not None
            and line["promised"] < self.today
        }

    def after(self, event: Any, outputs: list[Any], tick_today: date | None) -> None:
        if (
            event.type == "ClockTicked"
            and tick_today is not None
            and (self.today is None or tick_today > self.today)
        ):
            self.today = tick_today
            expected = self.due()
        else:
            expected = set()
        cancelled = set()
        for output in outputs:
            if output.type == "StockAlertTriggered":
                alert = (output.data.warehouse_id, output.data.alert_id)
                assert alert not in self.alerts_told, "an alert told twice"
                assert alert not in self.alerts_cancelled, "a cancelled alert told"
                self.alerts_told.add(alert)
                continue
            if output.type in ("StockPositionChanged",) or not output.data.lines:
                continue
            wh, order_id = output.data.warehouse_id, output.data.order_id
            for ln in output.data.lines:
                key = (wh, order_id, ln.line_no)
                if (
                    output.type == "OrderCancellationProcessed"
                    and output.data.reason == "no_consent"
                ):
                    cancelled.add(key)
                self._follow(key, ln, output.type)
        assert cancelled == expected, f"no_consent cancels {cancelled}, the rule says {expected}"

    def _follow(self, key: tuple, ln: Any, kind: str) -> None:
        line = self.lines.get(key)
        if not ln.backordered:
            if line is not None:
                line["open"] = False
            assert (ln.promised_eta, ln.consent) == (None, None)
            return
        if line is None:
            placed = self.placed[key[:2]]
            line = self.lines[key] = {
                "promised": ln.eta if ln.eta is not None else placed + timedelta(days=30),
                "consent": None,
                "eta": ln.eta,
                "open": True,
            }
        elif kind == "BackorderConsentRecorded":
            if line["consent"] == "required":
                line["promised"] = line["eta"]
            line["consent"] = "given"
        elif ln.eta != line["eta"] and line["promised"] is not None:
            self._moved(line, ln.eta)
        line["eta"] = ln.eta
        line["open"] = True
        assert (ln.promised_eta, ln.consent) == (line["promised"], line["consent"]), key

    def _moved(self, line: dict[str, Any], eta: date | None) -> None:
        promised = line["promised"]
        if eta is not None and eta <= promised:
            if line["consent"] == "required":
                line["consent"] = "offered"
        elif line["consent"] is None and eta is not None and eta <= promised + timedelta(days=30):
            line["consent"], line["promised"] = "offered", eta
        elif line["consent"] != "required":
            line["consent"] = "required"
            if self.today is not None and promised < self.today:
                line["promised"] = self.today


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=life_ops, consent_rule=st.booleans())
def test_lifecycle_streams_keep_every_rule(plan: list[tuple], consent_rule: bool) -> None:
    check_stream(build_life(plan), consent_rule)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=consent_story)
def test_consent_cancels_exactly_when_the_rule_says(plan: list[tuple]) -> None:
    check_stream(build_life(plan), consent_rule=True)


def check_stream(events: list[Any], consent_rule: bool) -> None:
    checker = Checker()
    checker.state = new_state(50, consent_rule=consent_rule)
    oracle = ConsentOracle()
    released: dict[tuple, tuple[int, int]] = defaultdict(lambda: (0, 0))
    for event in events:
        oracle.before(event)
        outputs = checker.apply(event)
        for output in outputs:
            for ln in getattr(output.data, "lines", ()):
                key = (output.data.warehouse_id, output.data.order_id, ln.line_no)
                allocated, cancelled = released[key]
                assert ln.allocated >= allocated and ln.cancelled >= cancelled
                assert ln.allocated + ln.cancelled <= ln.quantity - ln.rejected
                released[key] = (ln.allocated, ln.cancelled)
        if consent_rule:
            tick = event.data.now.date() if event.type == "ClockTicked" else None
            oracle.after(event, outputs, tick and checker.state.today)
        else:
            assert not any(o.type == "BackorderConsentRecorded" for o in outputs)
    checker.check_reported()

    # The same log through snapshots: byte-identical.
    state = new_state(50, consent_rule=consent_rule)
    again = []
    for n, event in enumerate(events):
        if n % 5 == 2:
            state = through_plain(state)
        state, outputs = decide(state, event)
        again.extend(encode(o) for o in outputs)
    assert again == checker.encoded


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=life_ops)
def test_the_core_folds_its_log_as_it_reads_it_to_the_same_bytes(plan: list[tuple]) -> None:
    """The core folds the structs `read_command` gives (customers kept as models): the
    same outputs as the models, a state that survives a snapshot."""
    from schemas.decode import read_command

    models, structs = new_state(50, consent_rule=True), new_state(50, consent_rule=True)
    for event in build_life(plan):
        models, expected = decide(models, event)
        structs, got = decide(structs, read_command(encode(event)))
        assert [encode(o) for o in got] == [encode(o) for o in expected]
    through_plain(structs)
