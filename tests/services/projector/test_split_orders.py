"""A split order (the same order_id placed in two warehouses) is two orders:
the allocator keys orders by (warehouse_id, order_id), and so do the read
models, the order query, deposits and the notifier's reminders query."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
import typer
from typer.testing import CliRunner

from services.allocator.domain import fold as allocator_fold
from services.notifier.adapters.read_model import ReadModel
from services.projector.entrypoints import cli as projector_cli
from tests.builders.inputs import Events
from tests.services.projector.helpers import failed, publish_scenario, running, wait_caught_up


def split_order() -> tuple[list, list]:
    """o-split: 3 of SKU-A in WH1 (in stock: allocated) and 4 of SKU-B in WH2 (none:
    backordered); o-wait waits in both warehouses, for different SKUs and prices."""
    ev = Events(prefix="split")
    inputs = [
        ev.stock_received("WH1", "SKU-A", 5),
        ev.order_placed("o-split", "WH1", [("SKU-A", 3, "2.00", "EUR")]),
        ev.order_placed("o-split", "WH2", [("SKU-B", 4, "5.00", "EUR")]),
        ev.order_placed("o-wait", "WH1", [("SKU-C", 1, "7.00", "EUR")]),
        ev.order_placed(
            "o-wait", "WH2", [("SKU-D", 2, "3.00", "EUR"), ("SKU-E", 1, "1.00", "EUR")]
        ),
    ]
    _, outputs = allocator_fold(inputs)
    return inputs, outputs


def _app() -> typer.Typer:
    app = typer.Typer()
    projector_cli.register(app)
    return app


async def _json(env: dict[str, str], *args: str):
    result = await asyncio.to_thread(CliRunner(env=env).invoke, _app(), [*args, "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    return orjson.loads(result.stdout)


async def test_a_split_order_is_two_orders_in_every_read_model(
    pg_settings, env_for_subprocess
) -> None:
    inputs, outputs = split_order()
    await publish_scenario(pg_settings, inputs, outputs)
    async with running(pg_settings) as projector:
        await wait_caught_up(pg_settings, check=lambda: failed(projector))

    conn = await asyncpg.connect(pg_settings.database_url)
    try:
        orders = {
            (r["warehouse_id"], r["order_id"]): r["status"]
            for r in await conn.fetch(
                "SELECT warehouse_id, order_id, status FROM projection.orders"
            )
        }
        lines = {
            (r["warehouse_id"], r["order_id"], r["line_no"]): (
                r["sku"],
                r["quantity"],
                r["backordered"],
            )
            for r in await conn.fetch(
                "SELECT warehouse_id, order_id, line_no, sku, quantity, backordered FROM projection.order_lines"
            )
        }
    finally:
        await conn.close()
    assert orders == {
        ("WH1", "o-split"): "allocated",
        ("WH2", "o-split"): "backordered",
        ("WH1", "o-wait"): "backordered",
        ("WH2", "o-wait"): "backordered",
    }
    assert lines == {
        ("WH1", "o-split", 1): ("SKU-A", 3, 0),
        ("WH2", "o-split", 1): ("SKU-B", 4, 4),
        ("WH1", "o-wait", 1): ("SKU-C", 1, 1),
        ("WH2", "o-wait", 1): ("SKU-D", 2, 2),
        ("WH2", "o-wait", 2): ("SKU-E", 1, 1),
    }

    env = env_for_subprocess(pg_settings)
    env.pop("FULFIL_DEBUG", None)
    parts = await _json(env, "order", "o-split")
    assert [(p["warehouse_id"], p["status"], [ln["sku"] for ln in p["lines"]]) for p in parts] == [
        ("WH1", "allocated", ["SKU-A"]),
        ("WH2", "backordered", ["SKU-B"]),
    ]
    (only,) = await _json(env, "order", "o-split", "--warehouse", "WH2")
    assert only["warehouse_id"] == "WH2" and only["lines"][0]["backordered"] == 4
    result = await asyncio.to_thread(
        CliRunner(env=env).invoke, _app(), ["order", "o-split", "--warehouse", "WH9", "--json"]
    )
    assert result.exit_code == 1 and "not found" in result.stderr

    deposits = await _json(env, "deposits")
    assert deposits["totals"] == [
        {"currency": "EUR", "amount": "34.00", "backordered_units": 8, "orders": 3}
    ]
    assert sorted((o["warehouse_id"], o["order_id"], o["amount"]) for o in deposits["orders"]) == [
        ("WH1", "o-wait", "7.00"),
        ("WH2", "o-split", "20.00"),
        ("WH2", "o-wait", "7.00"),
    ]

    # The notifier's reminders read the same tables: one reminder candidate per part.
    pool = await asyncpg.create_pool(pg_settings.database_url, min_size=1, max_size=2)
    try:
        waiting = await ReadModel(pool, "projection").backordered_orders()
    finally:
        await pool.close()
    assert sorted(
        (o["warehouse_id"], o["order_id"], [ln["sku"] for ln in lines]) for o, lines in waiting
    ) == [
        ("WH1", "o-wait", ["SKU-C"]),
        ("WH2", "o-split", ["SKU-B"]),
        ("WH2", "o-wait", ["SKU-D", "SKU-E"]),
    ]
