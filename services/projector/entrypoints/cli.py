"""The projector's commands: the service, migrations, read-model queries, rebuild.

    from services.projector.entrypoints import cli as projector_cli
    projector_cli.register(app)

Every query prints one JSON document with `--json` (snake_case keys, dates
and timestamps in ISO 8601, money as decimal strings) and a table without it.
No query prints customer PII: support staff trace an order by its id, and
the customer's contact details stay in the database for the notifier.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer

from fulfil_platform.config import load_settings
from fulfil_platform.logs import configure_logging
from fulfil_platform.tables import (
    FREE_TEXT,
    Table,
    WideOption,
    col,
    histogram,
    money,
    print_renderable,
    print_table,
    when,
    with_columns,
)
from services.projector.domain.aging import BUCKETS

T = TypeVar("T")

db_app = typer.Typer(
    help="Manage the projector's PostgreSQL schema.\n\nExample: fulfil db migrate",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
WarehouseOption = Annotated[
    str | None, typer.Option("--warehouse", "-w", help="Only this warehouse_id.")
]
SkuOption = Annotated[str | None, typer.Option("--sku", help="Only this SKU.")]
AsOfOption = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Reference time (ISO 8601 date or timestamp, UTC if no offset); default now.",
    ),
]


# ---------------------------------------------------------------- helpers


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return money(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _print_json(document: Any) -> None:
    typer.echo(orjson.dumps(document, default=_default, option=orjson.OPT_NON_STR_KEYS).decode())


def _bucket_label(first: int, last: int | None) -> str:
    return f"{first}–{last} d" if last is not None else f"> {first - 1} d"


# What the tables show (`--json` prints every field, unchanged): the columns an operator
# reads first fit 80 columns; `--wide` adds the rest.
BACKLOG = Table((
    col("warehouse_id", "warehouse"), col("sku"),
    col("backordered_units", "backordered", numeric=True),
    col("open_orders", numeric=True), col("available", numeric=True),
    col("incoming", numeric=True), col("next_eta"),
    col("promise_eta", wide=True), col("reserved", numeric=True, wide=True),
    col("oldest_backorder_at", "oldest backorder", wide=True),
))  # fmt: skip
LINES = Table((
    col("line_no", "line"), col("sku"), col("quantity", "qty", numeric=True),
    col("allocated", numeric=True), col("backordered", numeric=True),
    col("rejected", numeric=True), col("cancelled", numeric=True), col("eta"),
    col("reserved", numeric=True, wide=True), col("eta_reason", "eta reason", wide=True),
    col("backorder_reason", "backorder reason", wide=True),
    col("reason", "reject reason", wide=True), col("unit_price", "unit price", wide=True),
    col("currency", wide=True),
))  # fmt: skip


def _late(row: Mapping[str, Any]) -> str:
    return "overdue" if row["overdue"] else "late" if row["late"] else ""


INBOUND = Table((
    col("warehouse_id", "warehouse"), col("inbound_id", "inbound"),
    col("current_eta", "eta"), col("delay_days", "delay days", numeric=True),
    col("quantity_expected", "expected", numeric=True),
    col("quantity_received", "received", numeric=True),
    col("status", wrap=1, value=lambda r: str(r["status"]).replace("_", " ")),
    col("late", value=_late),
    col("supplier", wide=True, wrap=FREE_TEXT), col("original_eta", "original eta", wide=True),
    col("quantity_cancelled", "cancelled", numeric=True, wide=True),
    col("cancel_reason", "cancel reason", wide=True, wrap=FREE_TEXT),
))  # fmt: skip
AGING = Table((
    col("warehouse_id", "warehouse"), col("sku"),
    *(col(name, _bucket_label(first, last), numeric=True) for name, first, last in BUCKETS),
    col("backordered_units", "total", numeric=True),
))  # fmt: skip
DEPOSIT_TOTALS = Table((
    col("currency"), col("amount", numeric=True),
    col("backordered_units", "backordered units", numeric=True), col("orders", numeric=True),
))  # fmt: skip
DEPOSIT_ORDERS = Table((
    col("warehouse_id", "warehouse"), col("order_id", "order"), col("currency"),
    col("amount", numeric=True), col("backordered_units", "backordered units", numeric=True),
))  # fmt: skip
REORDER = Table((
    col("warehouse_id", "warehouse"), col("sku"),
    col("avg_daily_demand", "avg daily demand", numeric=True),
    col("safety_stock", "safety stock", numeric=True),
    col("reorder_point", "reorder point", numeric=True), col("position", numeric=True),
    col("gap", numeric=True),
    col("suggested_order_quantity", "suggested order quantity", numeric=True),
    col("max_daily_demand", "max daily demand", numeric=True, wide=True),
    col("avg_lead_time_days", "avg lead time days", numeric=True, wide=True),
    col("max_lead_time_days", "max lead time days", numeric=True, wide=True),
    col("lead_time_source", "lead time from", wide=True),
    col("available", numeric=True, wide=True), col("incoming", numeric=True, wide=True),
    col("backordered", numeric=True, wide=True),
))  # fmt: skip


def _as_of(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        try:
            moment = datetime.combine(date.fromisoformat(value), datetime.min.time())
        except ValueError:
            raise typer.BadParameter(f"not an ISO 8601 date or timestamp: {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _query(run: Callable[[Any], Awaitable[T]]) -> T:
    """Run `run(connection)` against the live read models."""
    import asyncpg

    from services.projector.adapters import store as pg
    from services.projector.service_layer.projector import LIVE_SCHEMA

    database_url = load_settings().require_database()

    async def go() -> T:
        conn = await pg.connect(database_url, LIVE_SCHEMA, timeout=10)
        try:
            return await run(conn)
        except asyncpg.UndefinedTableError:
            typer.echo(
                "fulfil: the read models do not exist yet "
                "(run `fulfil db migrate`, or start `fulfil projector`)",
                err=True,
            )
            raise typer.Exit(1) from None
        finally:
            await conn.close()

    return asyncio.run(go())


def _rounded(rows: list[dict[str, Any]], digits: int = 4) -> list[dict[str, Any]]:
    return [
        {k: round(v, digits) if isinstance(v, float) else v for k, v in row.items()} for row in rows
    ]


# ---------------------------------------------------------------- service & schema


def projector(
    health_file: Annotated[
        Path | None,
        typer.Option("--health-file", help='Keep a JSON health flag here ({"healthy": ...}).'),
    ] = None,
    max_records: Annotated[
        int, typer.Option(min=1, max=100_000, help="Records per batch.")
    ] = 10_000,
) -> None:
    """Fold allocations.v1 (and the inputs it needs) into PostgreSQL until SIGTERM/SIGINT.

    Example: fulfil projector --health-file /tmp/projector.health
    """
    settings = load_settings()
    settings.require_kafka()
    settings.require_database()
    from services.projector.service_layer.projector import run_projector

    configure_logging(settings.fulfil_log_level, settings.fulfil_log_format)
    asyncio.run(run_projector(settings, health_file=health_file, max_records=max_records))


@db_app.command("migrate")
def db_migrate(json_output: JsonOption = False) -> None:
    """Apply pending read-model migrations (yoyo-migrations); idempotent.

    Example: fulfil db migrate --json
    """
    from services.projector.adapters.migrate import migrate
    from services.projector.service_layer.projector import LIVE_SCHEMA

    applied = migrate(load_settings().require_database(), LIVE_SCHEMA)
    if json_output:
        _print_json({"schema": LIVE_SCHEMA, "applied": applied})
    elif applied:
        for name in applied:
            typer.echo(f"applied {name} to schema {LIVE_SCHEMA}")
    else:
        typer.echo(f"schema {LIVE_SCHEMA} is up to date")


def rebuild(
    json_output: JsonOption = False,
    allow_truncated: Annotated[
        bool,
        typer.Option(
            "--allow-truncated",
            help="Rebuild even when retention removed the start of a source topic (those events are lost).",
        ),
    ] = False,
) -> None:
    """Rebuild every read model from offset 0 into a shadow schema, then swap it in.

    Queries keep being served from the live schema meanwhile, and a running
    `fulfil projector` carries on from the rebuilt schema's offsets. Refuses
    (exit 1) when a source topic no longer starts at offset 0, unless
    --allow-truncated.

    Example: fulfil rebuild --json
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from services.projector.service_layer.rebuild import HistoryTruncated, RebuildBusy
    from services.projector.service_layer.rebuild import rebuild as run_rebuild

    settings = load_settings()
    settings.require_kafka()
    settings.require_database()
    configure_logging(settings.fulfil_log_level, settings.fulfil_log_format)
    console = Console(stderr=True)
    with Progress(
        TextColumn("rebuilding read models"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>9,.0f} events/s"),
        TextColumn("{task.fields[left]:>9,} left"),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("rebuild", total=None, rate=0.0, left=0)
        started = time.monotonic()

        def progress(done: int, known: int | None) -> None:
            elapsed = max(time.monotonic() - started, 1e-6)
            left = max((known or done) - done, 0)
            bar.update(task, completed=done, total=known, rate=done / elapsed, left=left)

        try:
            report = asyncio.run(
                run_rebuild(settings, progress=progress, allow_truncated=allow_truncated)
            )
        except (RebuildBusy, HistoryTruncated) as exc:
            typer.echo(f"fulfil: {exc}", err=True)
            raise typer.Exit(1) from None
    summary = {
        "records": report.records,
        "events": report.events,
        "skipped": report.skipped,
        "seconds": round(report.seconds, 3),
        "offsets": report.offsets,
        "truncated": [{"topic": t, "partition": p, "start": o} for t, p, o in report.truncated],
    }
    if json_output:
        _print_json(summary)
    else:
        typer.echo(
            f"rebuilt from {report.records:,} records ({report.events:,} events, "
            f"{report.skipped} skipped) in {report.seconds:.1f}s; swapped in"
        )


# ---------------------------------------------------------------- queries


@with_columns(BACKLOG)
def backlog(
    warehouse: WarehouseOption = None,
    sku: SkuOption = None,
    all_skus: Annotated[
        bool, typer.Option("--all", help="Include SKUs without backorders.")
    ] = False,
    wide: WideOption = False,
    json_output: JsonOption = False,
) -> None:
    """Backordered units, open orders, oldest backorder and stock position per (warehouse, SKU).

    Example: fulfil backlog -w berlin-1 --wide
    """
    from services.projector.adapters import queries

    rows = _query(
        lambda c: queries.backlog(c, warehouse_id=warehouse, sku=sku, include_all=all_skus)
    )
    if json_output:
        _print_json(rows)
    else:
        print_table(BACKLOG, rows, title="backlog", wide=wide)


@with_columns(LINES)
def order(
    order_id: Annotated[str, typer.Argument(help="The order to show.")],
    warehouse: WarehouseOption = None,
    wide: WideOption = False,
    json_output: JsonOption = False,
) -> None:
    """One order: status and, per line, quantities by state and the current ETA.

    A split order (the same order_id in several warehouses) has one part per
    warehouse; every part is shown (`--json`: a list, one document per warehouse).

    Example: fulfil order ord-1-0000042 --json
    """
    from services.projector.adapters import queries

    parts = _query(lambda c: queries.order(c, order_id, warehouse_id=warehouse))
    if not parts:
        where = f" in warehouse {warehouse!r}" if warehouse is not None else ""
        typer.echo(f"fulfil: order {order_id!r} not found{where}", err=True)
        raise typer.Exit(1)
    if json_output:
        _print_json(parts)
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console(soft_wrap=False, highlight=False)
    for found in parts:
        since = found["backordered_since"]
        console.print(
            f"[bold]order {escape(found['order_id'])}[/bold] in {escape(found['warehouse_id'])}: "
            f"{found['status']}; placed {when(found['placed_at'])}, "
            f"updated {when(found['updated_at'])}"
            + (f", backordered since {when(since)}" if since else "")
        )
        print_table(LINES, found["lines"], title="lines", wide=wide)


@with_columns(INBOUND)
def inbound(
    warehouse: WarehouseOption = None,
    late: Annotated[
        bool, typer.Option("--late", help="Only delayed or overdue shipments.")
    ] = False,
    as_of: AsOfOption = None,
    wide: WideOption = False,
    json_output: JsonOption = False,
) -> None:
    """Inbound supplier shipments: original and current ETA, delay, quantities, cancelled.

    `overdue`: units still to come and the current ETA plus FULFIL_OVERDUE_GRACE_DAYS
    is past (the customers it covered have no date until a delay notice or a receipt).

    Example: fulfil inbound --late -w berlin-1
    """
    from services.projector.adapters import queries

    moment = _as_of(as_of)
    grace = load_settings().fulfil_overdue_grace_days
    rows = _query(
        lambda c: queries.inbound(
            c, as_of=moment, late_only=late, grace_days=grace, warehouse_id=warehouse
        )
    )
    if json_output:
        _print_json(rows)
    else:
        title = "late inbound shipments" if late else "inbound shipments"
        print_table(INBOUND, rows, title=f"{title} as of {when(moment)}", wide=wide)


def _usage(message: str) -> typer.Exit:
    """A bad argument: one line on stderr, exit 2."""
    typer.echo(f"fulfil: {message}", err=True)
    return typer.Exit(2)


def promise(
    sku: Annotated[str, typer.Argument(help="The SKU to promise.")],
    warehouse: Annotated[
        str | None, typer.Option("--warehouse", "-w", help="The warehouse_id (required).")
    ] = None,
    quantity: Annotated[
        str,
        typer.Option(
            "--quantity", metavar="N", help="Units a new order would ask for (default 1)."
        ),
    ] = "1",
    as_of: AsOfOption = None,
    json_output: JsonOption = False,
) -> None:
    """The date a new order's units beyond `available` would get, after everything queued.

    One unit: the allocator's promise_eta (last StockPositionChanged). N units: the date
    of the inbound covering the N-th unit beyond available after the waiting ones, never
    before the one-unit promise. null: no scheduled inbound covers it (or it is overdue).

    Example: fulfil promise LAMP-0001 -w berlin-1 --quantity 5
    """
    from services.projector.adapters import queries

    if not warehouse:
        raise _usage("promise needs --warehouse W")
    units = int(quantity) if quantity.isdigit() else 0
    if units < 1:
        raise _usage(f"--quantity must be a positive integer, not {quantity!r}")
    try:
        moment = _as_of(as_of)
    except typer.BadParameter as exc:
        raise _usage(str(exc)) from None
    grace = load_settings().fulfil_overdue_grace_days
    found = _query(
        lambda c: queries.promise(
            c, warehouse_id=warehouse, sku=sku, quantity=units, as_of=moment, grace_days=grace
        )
    )
    if found is None:
        typer.echo(f"fulfil: SKU {sku!r} is not known in warehouse {warehouse!r}", err=True)
        raise typer.Exit(1)
    if json_output:
        _print_json(found)
        return
    if not found["beyond_available"]:
        typer.echo(f"{sku} ({warehouse}): {units} unit(s) available now")
    elif found["promise_eta"] is None:
        typer.echo(
            f"{sku} ({warehouse}): {found['beyond_available']} unit(s) beyond available "
            "have no date: no scheduled inbound covers them"
        )
    else:
        typer.echo(
            f"{sku} ({warehouse}): {found['from_stock']} unit(s) now, "
            f"{found['beyond_available']} by {found['promise_eta'].isoformat()}"
        )


@with_columns(AGING)
def aging(
    warehouse: WarehouseOption = None,
    sku: SkuOption = None,
    as_of: AsOfOption = None,
    wide: WideOption = False,
    json_output: JsonOption = False,
) -> None:
    """Backordered units by days waited, overall (a histogram) and per SKU.

    The table's buckets are the `--json` document's days_0_7, days_8_14, … keys.

    Example: fulfil aging -w berlin-1 --as-of 2026-11-20
    """
    from services.projector.adapters import queries

    moment = _as_of(as_of)
    doc = _query(lambda c: queries.aging(c, as_of=moment, warehouse_id=warehouse, sku=sku))
    if json_output:
        _print_json(doc)
        return
    title = f"backordered units by days waited, as of {when(doc['as_of'])}"
    overall = doc["overall"]
    if not overall["backordered_units"]:
        typer.echo(f"{title}: none")
        return
    bars = [(_bucket_label(first, last), overall[name]) for name, first, last in BUCKETS]
    print_renderable(histogram(title, bars))
    typer.echo("")
    print_table(AGING, doc["skus"], title="per SKU", wide=wide)


@with_columns(DEPOSIT_TOTALS, DEPOSIT_ORDERS)
def deposits(
    warehouse: WarehouseOption = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many orders.")] = None,
    wide: WideOption = False,
    json_output: JsonOption = False,
) -> None:
    """Customer deposits: value of paid, still backordered units, per currency and per order.

    Example: fulfil deposits -w berlin-1 --limit 10
    """
    from services.projector.adapters import queries

    doc = _query(lambda c: queries.deposits(c, limit=limit, warehouse_id=warehouse))
    if json_output:
        _print_json(doc)
        return
    print_table(
        DEPOSIT_TOTALS, doc["totals"], title="customer deposits (unearned revenue)", wide=wide
    )
    print_table(DEPOSIT_ORDERS, doc["orders"], title="per order", wide=wide)


@with_columns(REORDER)
def reorder(
    warehouse: WarehouseOption = None,
    sku: SkuOption = None,
    needed: Annotated[
        bool, typer.Option("--needed", help="Only SKUs below their reorder point.")
    ] = False,
    wide: WideOption = False,
    json_output: JsonOption = False,
) -> None:
    """Reorder suggestions: safety stock, reorder point and the gap to the current position.

    Example: fulfil reorder --needed -w berlin-1
    """
    from services.projector.adapters import queries

    rows = _query(lambda c: queries.reorder(c, warehouse_id=warehouse, sku=sku))
    if needed:
        rows = [r for r in rows if r["gap"] is not None and r["gap"] > 0]
    rows = _rounded(rows)
    if json_output:
        _print_json(rows)
    else:
        print_table(REORDER, rows, title="reorder suggestions", wide=wide)


def register(app: typer.Typer) -> None:
    app.command("projector")(projector)
    app.add_typer(db_app, name="db")
    app.command("backlog")(backlog)
    app.command("order")(order)
    app.command("inbound")(inbound)
    app.command("promise")(promise)
    app.command("aging")(aging)
    app.command("deposits")(deposits)
    app.command("reorder")(reorder)
    app.command("rebuild")(rebuild)
