"""`fulfil rebuild` while a projector runs and queries keep coming: no query
fails or sees an empty model, the rebuilt tables equal the live ones, and the
running projector carries on from the rebuilt schema's offsets."""

from __future__ import annotations

import asyncio

from services.projector.adapters import queries
from services.projector.adapters import store as pg
from services.projector.service_layer.projector import LIVE_SCHEMA
from services.projector.service_layer.rebuild import RebuildBusy, rebuild
from tests.kafka_helpers import publish, wait_for
from tests.services.projector import reference
from tests.services.projector.helpers import (
    as_of_after,
    assert_tables_equal,
    dump,
    failed,
    normalise_reference,
    publish_scenario,
    running,
    scenario,
    wait_caught_up,
)


async def _query_forever(url: str, order_id: str, as_of, stop: asyncio.Event, log: dict) -> None:
    """A long-lived reader (one connection, cached statements) and fresh ones, in a loop."""
    steady = await pg.connect(url, LIVE_SCHEMA)
    try:
        while not stop.is_set():
            fresh = await pg.connect(url, LIVE_SCHEMA)
            try:
                for conn in (steady, fresh):
                    try:
                        backlog = await queries.backlog(conn, include_all=True)
                        (found, *_) = await queries.order(conn, order_id) or [None]
                        aging = await queries.aging(conn, as_of=as_of)
                        deposits = await queries.deposits(conn)
                        reorder = await queries.reorder(conn)
                        inbound = await queries.inbound(conn, as_of=as_of)
                    except Exception as exc:  # noqa: BLE001 - recorded and asserted on
                        log["errors"].append(repr(exc))
                        continue
                    if not (
                        backlog
                        and found
                        and found["lines"]
                        and aging["skus"]
                        and deposits["totals"]
                        and reorder
                        and inbound
                    ):
                        log["empty"] += 1
                    log["queries"] += 1
            finally:
                await fresh.close()
    finally:
        await steady.close()


async def test_rebuild_under_concurrent_queries_swaps_in_an_equal_model(pg_settings) -> None:
    inputs, outputs = scenario(2_000, seed=31)
    # Three chunks: before the rebuild, between its bulk phase and its swap, after it.
    cut_in = [len(inputs) * k // 6 for k in (4, 5)]
    cut_out = [len(outputs) * k // 6 for k in (4, 5)]
    await publish_scenario(pg_settings, inputs[: cut_in[0]], outputs[: cut_out[0]])
    url = pg_settings.database_url
    order_id = next(o.data.order_id for o in outputs[: cut_out[0]] if o.type == "Backordered")
    async with running(pg_settings) as projector:
        await wait_caught_up(pg_settings, check=lambda: failed(projector))
        live = await dump(url)
        log = {"errors": [], "empty": 0, "queries": 0}
        stop = asyncio.Event()
        reader = asyncio.create_task(
            _query_forever(url, order_id, as_of_after(outputs, 5), stop, log)
        )

        async def projector_runs_ahead() -> None:
            # Records the live projector applies but the swap (no drain) leaves out:
            # afterwards the live projector must notice and re-seek.
            nonlocal live
            await publish(pg_settings, inputs[cut_in[0] : cut_in[1]])
            await publish(pg_settings, outputs[cut_out[0] : cut_out[1]])
            await wait_caught_up(pg_settings, check=lambda: failed(projector))
            live = await dump(url)

        try:
            seen: list[tuple[int, int | None]] = []
            report = await rebuild(
                pg_settings,
                progress=lambda done, known: seen.append((done, known)),
                max_records=500,
                swap_drain_seconds=0,
                before_swap=projector_runs_ahead,
            )
            queries_at_swap = log["queries"]

            async def more_rounds() -> bool:  # a few more reads on the new schema
                return log["queries"] >= queries_at_swap + 4

            await wait_for(more_rounds, timeout=60, interval=0.05, what="reads after the swap")
        finally:
            stop.set()
            await reader
        assert not log["errors"], log["errors"][:3]
        assert log["empty"] == 0 and log["queries"] >= 4
        assert report.records == cut_in[0] + cut_out[0]
        assert seen and seen[-1][0] == report.records and seen[-1][1] >= report.records
        rebuilt = await dump(url)
        # What the rebuild saw equals the live model of the same records...
        assert_tables_equal(
            rebuilt, normalise_reference(reference.fold(inputs[: cut_in[0]], outputs[: cut_out[0]]))
        )
        assert live != rebuilt  # ...which was already ahead by the middle chunk

        # The running projector notices the swap and continues from the rebuilt offsets.
        await publish(pg_settings, inputs[cut_in[1] :])
        await publish(pg_settings, outputs[cut_out[1] :])
        await wait_caught_up(pg_settings, check=lambda: failed(projector))
        assert projector.repositions >= 1
    assert_tables_equal(await dump(url), normalise_reference(reference.fold(inputs, outputs)))


async def test_rebuilt_equals_live(pg_settings) -> None:
    inputs, outputs = scenario(600, seed=37)
    await publish_scenario(pg_settings, inputs, outputs)
    async with running(pg_settings) as projector:
        await wait_caught_up(pg_settings, check=lambda: failed(projector))
        live = await dump(pg_settings.database_url)
        await rebuild(pg_settings)
        assert await dump(pg_settings.database_url) == live
        assert projector.repositions == 0  # same offsets: nothing to re-seek


async def test_one_rebuild_at_a_time(pg_settings) -> None:
    import asyncpg

    from services.projector.service_layer.rebuild import REBUILD_LOCK

    await publish_scenario(pg_settings, *scenario(50, seed=1))
    holder = await asyncpg.connect(pg_settings.database_url)
    try:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", REBUILD_LOCK)
        try:
            await rebuild(pg_settings)
        except RebuildBusy:
            pass
        else:
            raise AssertionError("a second rebuild must not start")
    finally:
        await holder.close()
    report = await rebuild(pg_settings)  # no live schema yet: the shadow simply becomes it
    assert report.records > 0 and await dump(pg_settings.database_url)
