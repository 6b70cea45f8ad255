"""The batch handler without a broker or database: offsets, dead letters, unrenderable events."""

from __future__ import annotations

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


class FakeStore:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    async def record(self, **kw):
        plan = kw["planner"](set(), {})
        self.calls.append({**kw, "plan": plan})
        return plan


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
    def render(notice, channel):
        if notice.order_id == "poison":
            raise KeyError("a template bug")
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
    assert {(r.notice.order_id, r.channel) for r in call["plan"].inserts} == {
        ("ord-1", "email"),
        ("ord-1", "webhook"),
        ("ord-2", "email"),
        ("ord-2", "webhook"),
    }


async def test_an_outage_is_handed_back_as_it_is_never_retried_here_never_quarantined() -> None:
    class DownStore(FakeStore):
        probes = 0

        async def record(self, **kw):
            self.calls.append(kw)
            raise asyncpg.ConnectionDoesNotExistError(
                "connection was closed in the middle of operation"
            )

        async def probe(self, **kw):
            self.probes += 1
            return None

    store = DownStore()
    handler = BatchHandler(store, POLICY, renderer(), FakeClock())  # type: ignore[arg-type]
    with pytest.raises(asyncpg.ConnectionDoesNotExistError) as raised:
        await handler.handle([_record(1, encode(b.backordered("ord-1", b.customer())))])
    # The consumer runtime backs off and reads the batch again (one retry policy, not two).
    assert is_transient(raised.value)
    assert len(store.calls) == 1, "not retried in place"
    assert store.probes == 0 and handler.quarantined == 0, "an outage is not poison"


async def test_a_bug_is_a_batch_failure_without_message_content() -> None:
    class BrokenStore(FakeStore):
        async def record(self, **kw):
            raise asyncpg.UniqueViolationError(
                "duplicate key value violates unique constraint, Key (x)=(Eve)"
            )

    handler = BatchHandler(BrokenStore(), POLICY, renderer(), FakeClock())  # type: ignore[arg-type]
    with pytest.raises(BatchFailed) as raised:
        await handler.handle([_record(1, encode(b.backordered("ord-1", b.customer())))])
    assert not is_transient(raised.value), (
        "counted as unexpected by the runtime (exit after repeated failures)"
    )
    assert "Eve" not in str(raised.value) and "UniqueViolationError" in str(raised.value)
