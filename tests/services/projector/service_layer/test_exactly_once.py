"""The transaction that applies a batch, without a broker: offsets check and
batch-boundary independence (PostgreSQL only, so many examples are cheap)."""

from __future__ import annotations

import asyncio
from collections import namedtuple

import asyncpg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from schemas.registry import ALLOCATIONS, INVENTORY, ORDERS, encode, spec_for
from services.projector.adapters import store as pg
from services.projector.adapters.migrate import migrate
from services.projector.adapters.store import StalePositions, Store
from services.projector.service_layer.apply import apply_batch, decode_batch
from services.projector.service_layer.projector import LIVE_SCHEMA
from tests.services.projector import reference
from tests.services.projector.helpers import (
    assert_tables_equal,
    dump,
    normalise_reference,
    scenario,
)

Record = namedtuple("Record", "topic partition offset value")


def as_records(inputs: list, outputs: list, partitions: int = 3) -> list[Record]:
    """The events as they would sit on the topics: per partition (by warehouse), in order."""
    offsets: dict[tuple[str, int], int] = {}
    records = []
    for event in [*inputs, *outputs]:
        topic = spec_for(event).topic
        partition = int(event.data.warehouse_id[2:]) % partitions
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        records.append(Record(topic, partition, offset, encode(event)))
    return records


async def _fresh_store(url: str) -> Store:
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f"DROP SCHEMA IF EXISTS {LIVE_SCHEMA} CASCADE")
    finally:
        await admin.close()
    await asyncio.to_thread(migrate, url, LIVE_SCHEMA)
    store = Store(await pg.connect(url, LIVE_SCHEMA))
    await store.prepare()
    return store


async def _apply_in(store: Store, batches: list[list[Record]]) -> dict:
    positions = await store.init_offsets(
        {(t, p) for t in (ALLOCATIONS, ORDERS, INVENTORY) for p in range(3)}
    )
    for batch in batches:
        applied = await apply_batch(store, decode_batch(batch, "", 1_000_000), positions)
        if applied is not None:
            positions.update(applied.offsets)
    return positions


@hyp_settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.floats(0, 1), max_size=12),
    interleave=st.randoms(use_true_random=False),
)
async def test_batch_boundaries_change_nothing(test_database, seed, cuts, interleave) -> None:
    inputs, outputs = scenario(250, seed)
    records = as_records(inputs, outputs)
    # Any interleaving of partitions that keeps each partition's order is a
    # delivery Kafka may produce; cut it into batches anywhere.
    queues = {}
    for record in records:
        queues.setdefault((record.topic, record.partition), []).append(record)
    delivered = []
    while queues:
        key = interleave.choice(sorted(queues))
        delivered.append(queues[key].pop(0))
        if not queues[key]:
            del queues[key]
    bounds = sorted({0, len(delivered), *(int(c * len(delivered)) for c in cuts)})
    batches = [delivered[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    store = await _fresh_store(test_database)
    try:
        await _apply_in(store, batches)
    finally:
        await store.conn.close()
    assert_tables_equal(
        await dump(test_database), normalise_reference(reference.fold(inputs, outputs))
    )


async def test_a_batch_whose_commit_was_not_acknowledged_is_not_applied_twice(
    test_database,
) -> None:
    inputs, outputs = scenario(200, seed=2)
    records = as_records(inputs, outputs)
    store = await _fresh_store(test_database)
    try:
        positions = await _apply_in(store, [records[:300]])
        before = await dump(test_database)
        # The process believed the commit failed (lost acknowledgement): it still holds
        # the old positions and retries the same records.
        stale = dict.fromkeys(positions, 0)
        with pytest.raises(StalePositions) as info:
            await apply_batch(store, decode_batch(records[:300], "", 1_000_000), stale)
        assert await dump(test_database) == before
        assert info.value.stored == {
            tp: o for tp, o in positions.items() if tp in info.value.stored
        }
        # Re-seeking to the stored offsets and going on yields the clean result.
        await _apply_continue(
            store, records, info.value.stored | {tp: positions[tp] for tp in positions}
        )
    finally:
        await store.conn.close()
    assert_tables_equal(
        await dump(test_database), normalise_reference(reference.fold(inputs, outputs))
    )


async def _apply_continue(store: Store, records: list[Record], positions: dict) -> None:
    applied = await apply_batch(store, decode_batch(records, "", 1_000_000), positions)
    assert applied is not None
