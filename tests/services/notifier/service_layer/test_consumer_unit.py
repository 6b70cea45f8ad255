"""The batch handler without a broker or database: offsets, dead letters, unrenderable events."""

from __future__ import annotations

from collections import Counter
from contextlib import asynccontextmanager
from types import SimpleNamespace

import asyncpg
import pytest

from fulfil_platform.consumer import is_transient
from schemas.registry import encode
from services.notifier.domain.decide import Policy
from services.notifier.service_layer.consumer import BatchFailed, BatchHandler
from services.notifier.service_layer.messages import renderer
from tests.builders import allocations as b
from tests.services.notifier.conftest import FakeClock

POLICY = Policy(
    channels=("email", "webhook"), cancel_url_template="https://shop.example/o/{order_id}/cancel"
)


class FakeTransaction:
    """The outbox adapter's transaction without a database: nothing held, nothing there yet."""

    def __init__(self, call: dict) -> None:
        self.call = call

    async def load(self, event_ids, orders):
        self.call.update(event_ids=list(event_ids), orders=set(orders))
        return set(), {}

    async def write(self, inserts, updates, now):
        self.call.update(inserts=list(inserts), updates=list(updates))

    async def write_dead_letters(self, dead_letters, now):
        self.call["dead_letters"] = list(dead_letters)

    async def save_offsets(self, offsets, now):
        self.call["offsets"] = dict(offsets)


class FakeStore:
    def __init__(self) -> None:
        self.calls: list[dict] = []  # committed transactions
        self.probes = 0  # trial transactions (rolled back)

    @asynccontextmanager
    async def transaction(self, *, keep: bool = True):
        call: dict = {}
        self.probes += not keep
        yield self.transaction_for(call)
        if keep:
            self.calls.append(call)

    def transaction_for(self, call: dict) -> FakeTransaction:
        return FakeTransaction(call)


def _record(offset: int, value: bytes, partition: int = 0):
    return SimpleNamespace(
        topic="allocations.v1",
        partition=partition,
        offset=offset,
        value=value,
        key=b"wh-1",
        headers=[],
    )


async def test_offsets_cover_every_record_and_bad_ones_are_dead_lettered() -> None:
    rendered: Counter = Counter()

    def render(notice, channel):
        if notice.order_id == "poison":
            raise KeyError("a template bug")
        rendered[notice.source_id, channel] += 1
        return renderer()(notice, channel)

    store = FakeStore()
    handler = BatchHandler(store, POLICY, render, FakeClock())  # type: ignore[arg-type]
    good = b.backordered("ord-1", b.customer())
    rejected = b.order_rejected("ord-2", b.customer())
    records = [
        _record(10, encode(good)),
        _record(11, b"not json"),
        _record(12, encode(b.backordered("poison", b.customer()))),
        _record(13, encode(b.stock_position())),
        _record(4, encode(rejected), partition=1),
    ]
    await handler.handle(records)
    (call,) = store.calls
    assert call["offsets"] == {("allocations.v1", 0): 14, ("allocations.v1", 1): 5}
    # Quarantined in the batch's own transaction, with the offsets.
    assert [(d.offset, d.kind) for d in call["dead_letters"]] == [
        (11, "bad_json"),
        (12, "render_error"),
    ]
    assert sorted(call["event_ids"]) == sorted(
        [good.id, rejected.id]
    )  # no StockPositionChanged, no poison
    assert call["orders"] == {("wh-1", "ord-1"), ("wh-1", "ord-2")}
    # The adapter is handed each row with its message, rendered once by the service layer.
    assert {(r.notice.order_id, r.channel) for r, _ in call["inserts"]} == {
        ("ord-1", "email"),
        ("ord-1", "webhook"),
        ("ord-2", "email"),
        ("ord-2", "webhook"),
    }
    assert all(out == renderer()(r.notice, r.channel) for r, out in call["inserts"])
    assert set(rendered.values()) == {1} and len(rendered) == 4
    assert handler.records == 3 and handler.rows == 4 and handler.quarantined == 2


async def test_an_invalid_rejection_is_skipped_and_an_alert_is_stored_without_an_order() -> None:
    """An order refused as invalid has no customer: no message, no failure, no dead letter.
    A back-in-stock alert has no order: its rows are planned without an order to fold into."""
    store = FakeStore()
    handler = BatchHandler(store, POLICY, renderer(), FakeClock())  # type: ignore[arg-type]
    invalid = b.invalid_order_rejected("ord-bad")
    alert = b.stock_alert_triggered("alert-1", b.customer(3))
    await handler.handle([_record(20, encode(invalid)), _record(21, encode(alert))])
    (call,) = store.calls
    assert call["offsets"] == {("allocations.v1", 0): 22}
    assert call.get("dead_letters") == [] and handler.quarantined == 0
    assert call["event_ids"] == [alert.id] and call["orders"] == set()
    assert [(r.notice.alert.alert_id, r.channel) for r, _ in call["inserts"]] == [
        ("alert-1", "email"),
        ("alert-1", "webhook"),
    ]
    email = next(out for r, out in call["inserts"] if r.channel == "email")
    assert email.recipient == "customer3@shop-customers.example"
    assert handler.records == 2 and handler.rows == 2


async def test_a_batch_bisected_for_a_refused_record_renders_each_notice_once() -> None:
    rendered: Counter = Counter()

    def render(notice, channel):
        rendered[notice.source_id, channel] += 1
        return renderer()(notice, channel)

    class Refusing(FakeTransaction):
        async def write(self, inserts, updates, now):
            if any(r.notice.order_id == "ord-bad" for r, _ in inserts):
                raise asyncpg.DataError("value out of range")
            await super().write(inserts, updates, now)

    store = FakeStore()
    store.transaction_for = Refusing  # type: ignore[method-assign]
    handler = BatchHandler(store, POLICY, render, FakeClock())  # type: ignore[arg-type]
    events = [b.backordered(f"ord-{n}", b.customer()) for n in ("1", "bad", "2", "3")]
    await handler.handle([_record(i, encode(e)) for i, e in enumerate(events)])
    (call,) = store.calls
    assert [(d.offset, d.kind) for d in call["dead_letters"]] == [(1, "unstorable")]
    assert {r.notice.order_id for r, _ in call["inserts"]} == {"ord-1", "ord-2", "ord-3"}
    assert store.probes > 1, "bisected in trial transactions"
    assert set(rendered.values()) == {1} and len(rendered) == 8
    assert handler.records == 3 and handler.quarantined == 1


async def test_an_outage_is_handed_back_as_it_is_never_retried_here_never_quarantined() -> None:
    class Down(FakeTransaction):
        async def load(self, event_ids, orders):
            raise asyncpg.ConnectionDoesNotExistError(
                "connection was closed in the middle of operation"
            )

    store = FakeStore()
    store.transaction_for = Down  # type: ignore[method-assign]
    handler = BatchHandler(store, POLICY, renderer(), FakeClock())  # type: ignore[arg-type]
    with pytest.raises(asyncpg.ConnectionDoesNotExistError) as raised:
        await handler.handle([_record(1, encode(b.backordered("ord-1", b.customer())))])
    # The consumer runtime backs off and reads the batch again (one retry policy, not two).
    assert is_transient(raised.value)
    assert store.calls == [], "nothing committed, not retried in place"
    assert store.probes == 0 and handler.quarantined == 0, "an outage is not poison"


async def test_a_bug_is_a_batch_failure_without_message_content() -> None:
    class Broken(FakeTransaction):
        async def write(self, inserts, updates, now):
            raise asyncpg.UniqueViolationError(
                "duplicate key value violates unique constraint, Key (x)=(Eve)"
            )

    store = FakeStore()
    store.transaction_for = Broken  # type: ignore[method-assign]
    handler = BatchHandler(store, POLICY, renderer(), FakeClock())  # type: ignore[arg-type]
    with pytest.raises(BatchFailed) as raised:
        await handler.handle([_record(1, encode(b.backordered("ord-1", b.customer())))])
    assert not is_transient(raised.value), (
        "counted as unexpected by the runtime (exit after repeated failures)"
    )
    assert "Eve" not in str(raised.value) and "UniqueViolationError" in str(raised.value)
