"""Every read model equals the reference fold over random valid streams (real broker + PostgreSQL)."""

from __future__ import annotations

import uuid

import asyncpg
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from fulfil_platform import kafka
from schemas.registry import ALLOCATIONS, INVENTORY, ORDERS
from services.projector.adapters import queries
from services.projector.adapters import store as pg
from services.projector.service_layer.projector import LIVE_SCHEMA
from tests.kafka_helpers import publish
from tests.services.projector import reference
from tests.services.projector.helpers import (
    as_of_after,
    assert_tables_equal,
    drop_database,
    dump,
    failed,
    new_database,
    normalise_reference,
    publish_scenario,
    running,
    scenario,
    supply_scenario,
    wait_caught_up,
)


async def _check_queries(database_url: str, tables: dict, outputs: list) -> None:
    conn = await pg.connect(database_url, LIVE_SCHEMA)
    try:
        assert await queries.backlog(conn) == reference.backlog_query(tables)
        for days in (0, 10, 20, 40):
            as_of = as_of_after(outputs, days)
            assert await queries.aging(conn, as_of=as_of) == reference.aging_query(tables, as_of)
        assert await queries.deposits(conn) == reference.deposits_query(tables)
        actual = await queries.reorder(conn)
        expected = reference.reorder_query(tables)
        assert [(r["warehouse_id"], r["sku"]) for r in actual] == [
            (r["warehouse_id"], r["sku"]) for r in expected
        ]
        for a, e in zip(actual, expected, strict=True):
            for key, value in e.items():
                if isinstance(value, float):
                    assert abs(a[key] - value) < 1e-6, (key, a, e)
                else:
                    assert a[key] == value, (key, a, e)
        for (wh, order_id), row in list(tables["orders"].items())[:25]:
            (found,) = await queries.order(conn, order_id, warehouse_id=wh)
            assert found["status"] == row["status"]
            lines = sorted(
                (k[2], v) for k, v in tables["order_lines"].items() if k[:2] == (wh, order_id)
            )
            assert [(ln["line_no"], ln["backordered"], ln["eta"]) for ln in found["lines"]] == [
                (no, v["backordered"], v["eta"]) for no, v in lines
            ]
    finally:
        await conn.close()


@hyp_settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(150, 700),
    max_records=st.sampled_from([3, 40, 5_000]),
)
async def test_read_models_equal_the_reference_fold(
    settings, database_url, seed, n, max_records
) -> None:
    inputs, outputs = scenario(n, seed)
    example = settings.model_copy(
        update={
            "fulfil_topic_prefix": f"t{uuid.uuid4().hex[:8]}.",
            "database_url": await new_database(database_url),
        }
    )
    try:
        await publish_scenario(example, inputs, outputs)
        async with running(example, max_records=max_records) as projector:
            await wait_caught_up(example, check=lambda: failed(projector))
            assert projector.skipped == 0
        tables = reference.fold(inputs, outputs)
        assert_tables_equal(await dump(example.database_url), normalise_reference(tables))
        await _check_queries(example.database_url, tables, outputs)
    finally:
        await drop_database(database_url, example.database_url)


async def test_orders_place_before_or_after_their_allocations(pg_settings) -> None:
    """orders.v1 and allocations.v1 have no order between them: either way round, same rows."""
    inputs, outputs = scenario(200, seed=3)
    await kafka.create_topics(
        pg_settings, [pg_settings.topic(t) for t in (ORDERS, INVENTORY, ALLOCATIONS)]
    )
    await publish(pg_settings, outputs)
    async with running(pg_settings) as projector:
        await wait_caught_up(pg_settings, check=lambda: failed(projector))
        pending_before = await _count_status(pg_settings.database_url, "pending")
        await publish(pg_settings, inputs)
        await wait_caught_up(pg_settings, check=lambda: failed(projector))
    assert pending_before == 0
    tables = reference.fold(inputs, outputs)
    assert_tables_equal(await dump(pg_settings.database_url), normalise_reference(tables))


async def _count_status(database_url: str, status: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(
            f"SELECT count(*) FROM {LIVE_SCHEMA}.orders WHERE status = $1",  # noqa: S608 - constant
            status,
        )
    finally:
        await conn.close()


async def test_supply_side_events_equal_the_reference_fold(pg_settings) -> None:
    """Cancelled and overdue inbounds, shrinkage of reservations, capped SKUs and pre-orders
    (issue 15) land in the read models exactly as the reference fold says."""
    inputs, outputs = supply_scenario(900, seed=11)
    kinds = {o.data.reason for o in outputs if o.type == "Backordered"}
    causes = {
        (o.data.cause.event_type, o.data.cause.reason)
        for o in outputs
        if o.type == "BackorderEtaChanged"
    }
    rejects = {ln.reason for o in outputs if o.type == "OrderRejected" for ln in o.data.lines}
    assert {"pre_order"} <= kinds, kinds
    assert ("ClockTicked", "inbound_overdue") in causes and any(
        c[0] == "InboundCancelled" for c in causes
    ), causes
    assert {"backorder_limit", "not_covered"} & rejects, rejects
    assert any(o.type == "StockPositionChanged" and o.data.promise_eta for o in outputs)
    await publish_scenario(pg_settings, inputs, outputs)
    async with running(pg_settings, max_records=50) as projector:
        await wait_caught_up(pg_settings, check=lambda: failed(projector))
        assert projector.skipped == 0
    tables = reference.fold(inputs, outputs)
    actual = await dump(pg_settings.database_url)
    assert_tables_equal(actual, normalise_reference(tables))
    await _check_queries(pg_settings.database_url, tables, outputs)
    reasons = {row["eta_reason"] for row in actual["order_lines"].values()}
    assert {"inbound_overdue", "not_scheduled"} <= reasons, reasons
    assert any(row["cancelled_at"] for row in actual["inbounds"].values())
