"""Shared helpers of the projector tests: streams, publishing, running, dumping."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from fulfil import embedded
from fulfil_platform import kafka
from fulfil_platform.config import Settings
from schemas.registry import ALLOCATIONS, INVENTORY, ORDERS
from services.allocator.domain import fold as allocator_fold
from services.projector.service_layer.projector import LIVE_SCHEMA, Projector
from tests.builders.inputs import Events
from tests.builders.streams import mixed_stream
from tests.kafka_helpers import TopicWatcher, publish, wait_for

# Tables compared between runs, with the columns that define them (everything
# derived from events; projector_offsets.updated_at is wall-clock and left out).
TABLES: dict[str, tuple[str, ...]] = {
    "orders": ("order_id", "warehouse_id", "customer_id", "customer_email", "customer_name",
               "customer_locale", "status", "placed_at", "updated_at", "backordered_since",
               "backordered_ever", "last_event_type", "last_event_id"),
    "order_lines": ("order_id", "line_no", "warehouse_id", "sku", "quantity", "allocated",
                    "backordered", "reserved", "rejected", "cancelled", "eta", "unit_price",
                    "currency", "reason", "backordered_since", "updated_at", "eta_reason",
                    "backorder_reason"),
    "sku_backlog": ("warehouse_id", "sku", "backordered_units", "open_orders",
                    "oldest_backorder_at", "available", "reserved", "incoming", "next_eta",
                    "shortfall", "position_at", "promise_eta"),
    "inbounds": ("warehouse_id", "inbound_id", "supplier", "original_eta", "current_eta",
                 "delay_days", "scheduled_at", "updated_at", "cancelled_at", "cancel_reason"),
    "inbound_lines": ("warehouse_id", "inbound_id", "sku", "quantity_expected",
                      "quantity_received", "first_received_at", "quantity_cancelled"),
    "daily_demand": ("warehouse_id", "sku", "day", "units"),
}  # fmt: skip
KEYS: dict[str, tuple[str, ...]] = {
    "orders": ("warehouse_id", "order_id"),
    "order_lines": ("warehouse_id", "order_id", "line_no"),
    "sku_backlog": ("warehouse_id", "sku"),
    "inbounds": ("warehouse_id", "inbound_id"),
    "inbound_lines": ("warehouse_id", "inbound_id", "sku"),
    "daily_demand": ("warehouse_id", "sku", "day"),
}


def _stretch(event: Any, start: datetime, factor: float) -> Any:
    def moved(moment: datetime) -> datetime:
        return start + (moment - start) * factor

    data = event.data
    updates = {
        name: moved(getattr(data, name))
        for name in ("placed_at", "received_at", "cancelled_at")
        if getattr(data, name, None) is not None
    }
    return event.model_copy(
        update={"occurred_at": moved(event.occurred_at), "data": data.model_copy(update=updates)}
    )


def scenario(
    n: int,
    seed: int,
    warehouses: int = 2,
    skus: int = 25,
    starve: float = 0.5,
    stretch: float = 150.0,
) -> tuple[list[Any], list[Any]]:
    """`n`-ish valid inputs and the allocator's outputs.

    From `mixed_stream` (a healthy store), with a share `starve` of the receipts
    dropped so that backorders pile up and wait, and time stretched by `stretch`
    (seconds between events become hours) so that demand spans days and
    backorders reach every aging bucket. Any subset of a valid stream is valid.
    """
    rng = random.Random(seed)
    raw = mixed_stream(n, seed=seed, warehouses=warehouses, skus_per_warehouse=skus)
    start = raw[0].occurred_at
    inputs = [
        _stretch(event, start, stretch)
        for event in raw
        if not (event.type == "StockReceived" and rng.random() < starve)
    ]
    _, outputs = allocator_fold(inputs)
    return inputs, outputs


def supply_scenario(n: int, seed: int, **options: Any) -> tuple[list[Any], list[Any]]:
    """`scenario` plus what purchasing does (issue 15): inbounds cancelled, clock ticks
    (every ~25 events, at the event's time) that make unreceived inbounds overdue, SKU
    policies with backorder limits, covered_only and release dates (pre-orders);
    shrinkage comes with the mixed stream's negative adjustments.

    The ticks are allocator commands: they are folded, not returned among the inputs
    (nobody publishes them to orders.v1 / inventory.v1)."""
    inputs, _ = scenario(n, seed, **options)
    rng = random.Random(seed * 7 + 1)
    ev = Events(prefix=f"sup{seed}")
    commands: list[Any] = []
    published: list[Any] = []
    pending_cancels: list[tuple[int, Any]] = []
    skus: list[tuple[str, str]] = []

    def add(event: Any, at: datetime, command_only: bool = False) -> None:
        event = event.model_copy(update={"occurred_at": at})
        commands.append(event)
        if not command_only:
            published.append(event)

    for i, event in enumerate(inputs):
        at = event.occurred_at
        for due, cancel in [c for c in pending_cancels if c[0] <= i]:
            pending_cancels.remove((due, cancel))
            add(cancel, at)
        commands.append(event)
        published.append(event)
        d = event.data
        if event.type == "OrderPlaced":
            skus.extend((d.warehouse_id, line.sku) for line in d.lines)
        elif event.type == "InboundScheduled" and rng.random() < 0.2:
            pending_cancels.append(
                (i + rng.randint(1, 40), ev.inbound_cancelled(d.inbound_id, d.warehouse_id))
            )
        if i % 25 == 24:
            add(ev.clock_ticked(at), at, command_only=True)
        if skus and rng.random() < 0.015:
            wh, sku = rng.choice(skus)
            kind = rng.choice(("limit", "covered", "release"))
            if kind == "limit":
                policy = ev.sku_policy_set(wh, sku, backorder_limit=rng.randint(0, 20))
            elif kind == "covered":
                policy = ev.sku_policy_set(wh, sku, backorder_mode="covered_only")
            else:
                policy = ev.sku_policy_set(
                    wh, sku, release_date=at.date() + timedelta(days=rng.randint(1, 5))
                )
            add(policy, at)
    _, outputs = allocator_fold(commands)
    return published, outputs


async def publish_scenario(settings: Settings, inputs: list[Any], outputs: list[Any]) -> None:
    """Inputs to orders.v1 / inventory.v1 and outputs to allocations.v1, keyed by warehouse."""
    await kafka.create_topics(
        settings, [settings.topic(t) for t in (ORDERS, INVENTORY, ALLOCATIONS)]
    )
    await publish(settings, inputs)
    await publish(settings, outputs)


async def topic_ends(settings: Settings) -> dict[tuple[str, int], int]:
    ends: dict[tuple[str, int], int] = {}
    for base in (ALLOCATIONS, ORDERS, INVENTORY):
        async with TopicWatcher(settings, base) as watcher:
            for partition, end in (await watcher.ends()).items():
                ends[(settings.topic(base), partition)] = end
    return ends


async def stored_offsets(
    database_url: str, schema: str = LIVE_SCHEMA
) -> dict[tuple[str, int], int]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            f'SELECT topic, partition, next_offset FROM "{schema}".projector_offsets'  # noqa: S608 - test constant
        )
    except asyncpg.UndefinedTableError:
        return {}
    finally:
        await conn.close()
    return {(r[0], r[1]): r[2] for r in rows}


async def wait_caught_up(settings: Settings, timeout: float = 120.0, check: Any = None) -> None:
    """Until the stored offsets reach the end of every input partition."""
    ends = await topic_ends(settings)
    wanted = {tp: end for tp, end in ends.items() if end}

    async def caught_up() -> bool:
        if check is not None:
            check()
        stored = await stored_offsets(settings.database_url or "")
        return all(stored.get(tp, 0) >= end for tp, end in wanted.items())

    await wait_for(caught_up, timeout=timeout, interval=0.2, what="the projector to catch up")


@contextlib.asynccontextmanager
async def running(settings: Settings, **options: Any) -> AsyncIterator[Projector]:
    stop = asyncio.Event()
    projector = Projector(settings, **options)
    task = asyncio.create_task(projector.run(stop))
    projector.task = task  # type: ignore[attr-defined]
    try:
        yield projector
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def failed(projector: Projector) -> None:
    task = projector.task  # type: ignore[attr-defined]
    if task.done():
        task.result()  # re-raise the projector's failure in the test
        raise AssertionError("the projector stopped")


def _normal(value: Any) -> Any:
    if isinstance(value, Decimal):
        return value.normalize()
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return value


async def dump(
    database_url: str, schema: str = LIVE_SCHEMA
) -> dict[str, dict[tuple, dict[str, Any]]]:
    """Every compared table as {key: row}, values normalised for comparison."""
    conn = await asyncpg.connect(database_url)
    try:
        out = {}
        for table, columns in TABLES.items():
            rows = await conn.fetch(
                f'SELECT {", ".join(columns)} FROM "{schema}".{table}'  # noqa: S608 - test constants
            )
            out[table] = {
                tuple(r[k] for k in KEYS[table]): {c: _normal(r[c]) for c in columns} for r in rows
            }
        return out
    finally:
        await conn.close()


def normalise_reference(tables: dict[str, Any]) -> dict[str, dict[tuple, dict[str, Any]]]:
    out = {}
    for table, columns in TABLES.items():
        out[table] = {
            (key if isinstance(key, tuple) else (key,)): {c: _normal(row[c]) for c in columns}
            for key, row in tables[table].items()
        }
    return out


def assert_tables_equal(actual: dict, expected: dict) -> None:
    for table in TABLES:
        a, e = actual[table], expected[table]
        missing = sorted(set(e) - set(a), key=str)[:3]
        extra = sorted(set(a) - set(e), key=str)[:3]
        assert not missing and not extra, f"{table}: missing {missing}, unexpected {extra}"
        wrong = [(k, a[k], e[k]) for k in e if a[k] != e[k]]
        assert not wrong, f"{table}: {len(wrong)} rows differ, e.g. {wrong[0]}"


async def new_database(server_url: str) -> str:
    name = f"p_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return embedded.with_database(server_url, name)


async def drop_database(server_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1].split("?")[0]
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def as_of_after(outputs: list[Any], days: float) -> datetime:
    return max(o.occurred_at for o in outputs).astimezone(UTC) + timedelta(days=days)
