"""CLI: `--json` shapes of every query, tables without it, exit codes; the
seeds' reorder formula end to end on hand-computed numbers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import orjson
import pytest
import typer
from typer.testing import CliRunner

from schemas.contract import (
    AllocationLine,
    Backordered,
    BackorderedData,
    Customer,
    PartiallyShipped,
    PartiallyShippedData,
    StockPositionChanged,
    StockPositionChangedData,
)
from services.projector.entrypoints import cli as projector_cli
from tests.builders.inputs import Events
from tests.kafka_helpers import publish
from tests.services.projector.helpers import failed, publish_scenario, running, wait_caught_up

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
AS_OF = "2026-11-20T12:00:00+00:00"
CUSTOMER = Customer(customer_id="c-9", email="ada@shop.example", name="Ada Lovelace", locale="en")


def _at(event, moment):
    return event.model_copy(update={"occurred_at": moment})


def worked_example() -> tuple[list, list]:
    """BEAN in WH1: demand 50, 10, 0, 20, 20 bags over five days (avg 20, max 50);
    two inbounds ordered on day 0 arrive after 2 and 10 days (avg 6, max 10)."""
    ev = Events(prefix="cli")
    inputs = []
    for day, quantities in ((0, (30, 20)), (1, (10,)), (3, (20,)), (4, (20,))):
        for i, qty in enumerate(quantities):
            placed = T0 + day * DAY + timedelta(hours=i)
            inputs.append(
                _at(
                    ev.order_placed(
                        f"o-{day}-{i}", "WH1", [("BEAN", qty, "9.50", "EUR")], placed_at=placed
                    ),
                    placed,
                )
            )
    for inbound_id, lead_days, eta in (("in-fast", 2, "2026-11-04"), ("in-slow", 10, "2026-11-09")):
        inputs.append(
            _at(
                ev.inbound_scheduled(inbound_id, "WH1", [("BEAN", 40)], eta, supplier="Roastery"),
                T0,
            )
        )
        received = T0 + lead_days * DAY
        receipt = ev.stock_received(
            "WH1", "BEAN", 40, receipt_id=f"r-{inbound_id}", inbound_id=inbound_id
        )
        inputs.append(
            receipt.model_copy(
                update={
                    "occurred_at": received,
                    "data": receipt.data.model_copy(update={"received_at": received}),
                }
            )
        )
    inputs.append(
        _at(ev.inbound_scheduled("in-late", "WH1", [("BEAN", 60)], "2026-11-18"), T0 + 5 * DAY)
    )
    inputs.append(_at(ev.shipment_delayed("in-late", "WH1", "2026-11-25"), T0 + 6 * DAY))
    # Never received, past its ETA plus the grace at AS_OF: overdue.
    inputs.append(
        _at(ev.inbound_scheduled("in-stuck", "WH1", [("BEAN", 10)], "2026-11-10"), T0 + 5 * DAY)
    )
    # A purchase order cancelled: nothing of it will arrive, so it is not late either.
    inputs.append(
        _at(ev.inbound_scheduled("in-po", "WH1", [("BEAN", 25)], "2026-11-12"), T0 + 5 * DAY)
    )
    inputs.append(_at(ev.inbound_cancelled("in-po", "WH1", "supplier closed"), T0 + 7 * DAY))

    def envelope(model, kind, n, moment, data):
        return model(
            id=f"out-{n}",
            type=kind,
            occurred_at=moment,
            source="tests",
            causation_id=f"in-{n}",
            data=data,
        )

    waiting = AllocationLine(
        line_no=1,
        sku="BEAN",
        quantity=10,
        backordered=10,
        eta=date(2026, 11, 25),
        unit_price="9.50",
        currency="EUR",
    )
    partial = AllocationLine(
        line_no=1,
        sku="BEAN",
        quantity=5,
        shipped=2,
        allocated=2,
        backordered=3,
        eta=date(2026, 11, 25),
        unit_price="9.50",
        currency="EUR",
    )
    outputs = [
        envelope(
            Backordered,
            "Backordered",
            1,
            T0 + 5 * DAY,
            BackorderedData(
                order_id="o-wait",
                warehouse_id="WH1",
                customer=CUSTOMER,
                lines=[waiting],
                reason="insufficient_stock",
            ),
        ),
        envelope(
            PartiallyShipped,
            "PartiallyShipped",
            2,
            T0 + 15 * DAY,
            PartiallyShippedData(
                order_id="o-part",
                warehouse_id="WH1",
                customer=CUSTOMER,
                lines=[partial],
                shipment_id="s-1",
            ),
        ),
        envelope(
            StockPositionChanged,
            "StockPositionChanged",
            3,
            T0 + 15 * DAY,
            StockPositionChangedData(
                warehouse_id="WH1",
                sku="BEAN",
                available=30,
                backordered=13,
                reserved=0,
                incoming=53,
                next_eta=date(2026, 11, 25),
                promise_eta=date(2026, 11, 25),
            ),
        ),
    ]
    return inputs, outputs


@pytest.fixture
async def projected(pg_settings, env_for_subprocess):
    inputs, outputs = worked_example()
    await publish_scenario(pg_settings, inputs, outputs)
    # Garbage on every topic: skipped (the router dead-letters inputs), nothing stalls.
    for topic in ("orders.v1", "inventory.v1", "allocations.v1"):
        await publish(
            pg_settings,
            [b'{"type": "OrderPlaced", "broken"', orjson.dumps({"type": "OrderPlaced", "id": "x"})],
            topic=topic,
        )
    async with running(pg_settings) as projector:
        await wait_caught_up(pg_settings, check=lambda: failed(projector))
        assert projector.skipped == 6  # two bad records on each of the three topics
    env = env_for_subprocess(pg_settings)
    env.pop("FULFIL_DEBUG", None)
    return env


def _app() -> typer.Typer:
    app = typer.Typer()
    projector_cli.register(app)
    return app


async def _cli(env: dict[str, str], *args: str):
    # asyncio.run inside the commands needs a thread without a running loop.
    result = await asyncio.to_thread(CliRunner(env=env).invoke, _app(), list(args))
    return result


async def _json(env, *args):
    result = await _cli(env, *args, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    return orjson.loads(result.stdout)


async def test_json_shapes_of_every_query(projected) -> None:
    env = projected
    backlog = await _json(env, "backlog")
    assert backlog == [{
        "warehouse_id": "WH1", "sku": "BEAN", "backordered_units": 13, "open_orders": 2,
        "oldest_backorder_at": "2026-11-07T09:00:00+00:00", "next_eta": "2026-11-25",
        "promise_eta": "2026-11-25", "available": 30, "reserved": 0, "incoming": 53,
    }]  # fmt: skip
    assert [r["promise_eta"] for r in await _json(env, "backlog", "--all")] == ["2026-11-25"]
    assert [r["promise_eta"] for r in await _json(env, "backlog", "--sku", "BEAN")] == [
        "2026-11-25"
    ]
    assert await _json(env, "backlog", "--warehouse", "WH9") == []

    (order,) = await _json(env, "order", "o-part")
    assert order["order_id"] == "o-part" and order["status"] == "partially_shipped"
    assert order["lines"] == [{
        "line_no": 1, "sku": "BEAN", "quantity": 5, "allocated": 2, "backordered": 3, "reserved": 0,
        "rejected": 0, "cancelled": 0, "eta": "2026-11-25", "eta_reason": None,
        "backorder_reason": "insufficient_stock", "reason": None, "unit_price": "9.50", "currency": "EUR",
    }]  # fmt: skip
    assert "ada@shop.example" not in orjson.dumps(order).decode()  # no PII for support queries
    assert (await _json(env, "order", "o-0-0"))[0][
        "status"
    ] == "pending"  # placed, not allocated (here)

    inbound = await _json(env, "inbound", "--as-of", AS_OF)
    assert [i["inbound_id"] for i in inbound] == [
        "in-fast",
        "in-slow",
        "in-stuck",
        "in-po",
        "in-late",
    ]
    (po,) = [i for i in inbound if i["inbound_id"] == "in-po"]
    assert (
        po["status"],
        po["cancel_reason"],
        po["quantity_cancelled"],
        po["late"],
        po["overdue"],
    ) == (
        "cancelled",
        "supplier closed",
        25,
        False,
        False,
    )
    assert po["cancelled_at"] is not None
    late = await _json(env, "inbound", "--late", "--as-of", AS_OF)
    assert late == [{
        "warehouse_id": "WH1", "inbound_id": "in-stuck", "supplier": None,
        "original_eta": "2026-11-10", "current_eta": "2026-11-10", "delay_days": 0,
        "scheduled_at": "2026-11-07T09:00:00+00:00", "cancelled_at": None, "cancel_reason": None,
        "quantity_expected": 10, "quantity_received": 0, "quantity_cancelled": 0,
        "status": "expected", "late": True, "overdue": True,
    }, {
        "warehouse_id": "WH1", "inbound_id": "in-late", "supplier": None,
        "original_eta": "2026-11-18", "current_eta": "2026-11-25", "delay_days": 7,
        "scheduled_at": "2026-11-07T09:00:00+00:00", "cancelled_at": None, "cancel_reason": None,
        "quantity_expected": 60, "quantity_received": 0, "quantity_cancelled": 0,
        "status": "expected", "late": True, "overdue": False,
    }]  # fmt: skip
    # Within the grace (2 days past its ETA) an inbound is late, not overdue yet.
    (stuck,) = [
        i
        for i in await _json(env, "inbound", "--as-of", "2026-11-12")
        if i["inbound_id"] == "in-stuck"
    ]
    assert (stuck["late"], stuck["overdue"]) == (True, False)

    # The promise date: available units first, then the one-unit promise_eta, then the
    # inbound walk (overdue in-stuck and cancelled in-po give no date).
    promise = await _json(env, "promise", "BEAN", "--warehouse", "WH1", "--as-of", AS_OF)
    assert promise["promise_eta"] is None and promise["from_stock"] == 1 and promise["covered"]
    promise = await _json(
        env, "promise", "BEAN", "--warehouse", "WH1", "--quantity", "31", "--as-of", AS_OF
    )
    assert (promise["beyond_available"], promise["promise_eta"]) == (1, "2026-11-25")
    promise = await _json(
        env, "promise", "BEAN", "--warehouse", "WH1", "--quantity", "87", "--as-of", AS_OF
    )
    assert (promise["beyond_available"], promise["promise_eta"]) == (
        57,
        "2026-11-25",
    )  # 13 + 57 = in-late's 70
    promise = await _json(
        env, "promise", "BEAN", "--warehouse", "WH1", "--quantity", "88", "--as-of", AS_OF
    )
    assert (promise["promise_eta"], promise["covered"]) == (None, False)
    for bad in (["--quantity", "0"], ["--quantity", "x"], []):
        result = await _cli(env, "promise", "BEAN", *bad)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    result = await _cli(env, "promise", "NOPE", "--warehouse", "WH1")
    assert result.exit_code == 1 and "not known" in result.stderr

    aging = await _json(env, "aging", "--as-of", AS_OF)
    assert aging["as_of"] == AS_OF
    # o-wait waits since Nov 7 (13 days), o-part since Nov 17 (3 days).
    assert aging["overall"] == {
        "days_0_7": 3,
        "days_8_14": 10,
        "days_15_30": 0,
        "days_over_30": 0,
        "backordered_units": 13,
    }
    assert aging["skus"] == [{"warehouse_id": "WH1", "sku": "BEAN", **aging["overall"]}]

    deposits = await _json(env, "deposits")
    assert deposits == {
        "totals": [{"currency": "EUR", "amount": "123.50", "backordered_units": 13, "orders": 2}],
        "orders": [
            {
                "warehouse_id": "WH1",
                "order_id": "o-wait",
                "currency": "EUR",
                "amount": "95.00",
                "backordered_units": 10,
            },
            {
                "warehouse_id": "WH1",
                "order_id": "o-part",
                "currency": "EUR",
                "amount": "28.50",
                "backordered_units": 3,
            },
        ],
    }

    (reorder,) = await _json(env, "reorder")
    # The seeds' formula on hand-computed numbers: see test_domain's worked example.
    assert reorder == {
        "warehouse_id": "WH1", "sku": "BEAN", "units_ordered": 100, "days_observed": 5,
        "avg_daily_demand": 20.0, "max_daily_demand": 50, "lead_time_observations": 2,
        "lead_time_source": "sku", "avg_lead_time_days": 6.0, "max_lead_time_days": 10.0,
        "available": 30, "incoming": 53, "backordered": 13, "safety_stock": 380.0,
        "reorder_point": 500.0, "position": 70, "gap": 430.0, "suggested_order_quantity": 430,
    }  # fmt: skip
    assert await _json(env, "reorder", "--needed", "--sku", "BEAN") == [reorder]


async def test_the_same_warehouse_and_sku_filters_on_every_query(projected) -> None:
    """`--warehouse/-w` on backlog, order, inbound, promise, aging, deposits and reorder;
    `--sku` on the per-SKU ones: the rows of that warehouse (or SKU), nothing else."""
    env = projected
    for args in (["backlog"], ["inbound", "--as-of", AS_OF], ["reorder"]):
        everything = await _json(env, *args)
        assert everything and await _json(env, *args, "-w", "WH1") == everything, args
        assert await _json(env, *args, "--warehouse", "WH9") == [], args
    assert len(await _json(env, "order", "o-part", "-w", "WH1")) == 1
    assert (await _cli(env, "order", "o-part", "-w", "WH9")).exit_code == 1
    promised = await _json(env, "promise", "BEAN", "-w", "WH1", "--as-of", AS_OF)
    assert promised["warehouse_id"] == "WH1"
    aging = await _json(env, "aging", "--as-of", AS_OF)
    assert await _json(env, "aging", "--as-of", AS_OF, "-w", "WH1", "--sku", "BEAN") == aging
    for other in (["-w", "WH9"], ["--sku", "NOPE"]):
        nothing = await _json(env, "aging", "--as-of", AS_OF, *other)
        assert nothing["skus"] == [] and nothing["overall"]["backordered_units"] == 0
    deposits = await _json(env, "deposits")
    assert await _json(env, "deposits", "-w", "WH1") == deposits
    assert await _json(env, "deposits", "-w", "WH9") == {"totals": [], "orders": []}
    assert await _json(env, "reorder", "--sku", "NOPE") == []


async def test_tables_without_json_and_unknown_order(projected) -> None:
    env = projected
    expected = {
        ("backlog",): "BEAN", ("order", "o-wait"): "BEAN", ("inbound",): "in-late",
        ("aging",): "BEAN", ("deposits",): "o-wait", ("reorder",): "BEAN",
    }  # fmt: skip
    for args, shown in expected.items():
        result = await _cli({**env, "COLUMNS": "200"}, *args)
        assert result.exit_code == 0, (args, result.output)
        assert shown in result.stdout, (args, result.stdout)
        assert "Ada" not in result.stdout and "@" not in result.stdout
    result = await _cli(env, "order", "nope", "--json")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip() == "fulfil: order 'nope' not found"
    # The real console script, wired in fulfil/cli.py.
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "fulfil", "order", "nope"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "not found" in done.stderr


async def test_config_errors_exit_2_and_missing_schema_exits_1(
    pg_settings, env_for_subprocess
) -> None:
    env = {k: v for k, v in env_for_subprocess(pg_settings).items() if k != "DATABASE_URL"}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "fulfil", "backlog", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "DATABASE_URL" in done.stderr
    result = await _cli(env_for_subprocess(pg_settings), "backlog", "--json")
    assert result.exit_code == 1 and "fulfil db migrate" in result.stderr
    result = await _cli(env_for_subprocess(pg_settings), "db", "migrate", "--json")
    assert orjson.loads(result.stdout) == {
        "schema": "projection",
        "applied": ["0001_read_models", "0002_warehouse_order_keys", "0003_supply_side"],
    }
    assert await _json(env_for_subprocess(pg_settings), "backlog") == []
    assert os.environ.get("DATABASE_URL") != pg_settings.database_url  # CliRunner restored the env


async def test_rebuild_command_swaps_in_an_equal_model(projected, pg_settings) -> None:
    from tests.services.projector.helpers import dump

    before = await dump(pg_settings.database_url)
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "fulfil", "rebuild", "--json"], env=projected,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = orjson.loads(done.stdout)
    assert (summary["records"], summary["events"], summary["skipped"]) == (23, 17, 6)
    assert "rebuilding read models" in done.stderr  # the progress bar, on stderr
    assert await dump(pg_settings.database_url) == before


async def test_logs_carry_no_customer_data(pg_settings) -> None:
    import io

    import structlog

    from fulfil_platform.logs import configure_logging

    inputs, outputs = worked_example()
    await publish_scenario(pg_settings, inputs, outputs)
    # An invalid record full of customer data: its skip is logged, its content is not.
    leaky = orjson.loads(orjson.dumps(outputs[0].model_dump(mode="json")))
    leaky["data"]["lines"][0]["allocated"] = 99
    await publish(pg_settings, [orjson.dumps(leaky)], topic="allocations.v1")
    buffer = io.StringIO()
    configure_logging("DEBUG", "json", stream=buffer)
    try:
        async with running(pg_settings) as projector:
            await wait_caught_up(pg_settings, check=lambda: failed(projector))
    finally:
        structlog.reset_defaults()
    logs = buffer.getvalue()
    assert "record skipped" in logs and "projector started" in logs
    for secret in ("ada@shop.example", "Ada Lovelace", "@shop.example"):
        assert secret not in logs
