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
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer

from fulfil_platform.config import load_settings
from fulfil_platform.logs import configure_logging

T = TypeVar("T")

db_app = typer.Typer(help="Manage the projector's PostgreSQL schema.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
WarehouseOption = Annotated[str | None, typer.Option("--warehouse", help="Only this warehouse_id.")]
SkuOption = Annotated[str | None, typer.Option("--sku", help="Only this SKU.")]
AsOfOption = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Reference time (ISO 8601 date or timestamp, UTC if no offset); default now.",
    ),
]


# ---------------------------------------------------------------- helpers


def _money(value: Decimal) -> str:
    """Money as a decimal string with at least two decimals: 95.00, 9.50, 12.3456."""
    normal = value.normalize()
    if normal.as_tuple().exponent > -2:  # type: ignore[operator]
        normal = value.quantize(Decimal("0.01"))
    return format(normal, "f")


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _money(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _print_json(document: Any) -> None:
    typer.echo(orjson.dumps(document, default=_default, option=orjson.OPT_NON_STR_KEYS).decode())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, Decimal):
        return _money(value)
    if isinstance(value, bool):
        return "yes" if value else ""
    return str(value)


def _print_table(title: str, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    if not rows:
        typer.echo(f"{title}: none")
        return
    columns = columns or list(rows[0])
    table = Table(title=title, title_justify="left")
    cells = [[_cell(row.get(name)) for name in columns] for row in rows]
    for i, name in enumerate(columns):
        # Values never wrap (dates, ids); long headers wrap instead.
        widest = max(len(line[i]) for line in cells)
        table.add_column(name.replace("_", " "), min_width=widest, overflow="fold")
    for line in cells:
        table.add_row(*line)
    Console(soft_wrap=False).print(table)


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
    """Fold allocations.v1 (and the inputs it needs) into PostgreSQL until SIGTERM/SIGINT."""
    settings = load_settings()
    settings.require_kafka()
    settings.require_database()
    from services.projector.service_layer.projector import run_projector

    configure_logging(settings.fulfil_log_level, settings.fulfil_log_format)
    asyncio.run(run_projector(settings, health_file=health_file, max_records=max_records))


@db_app.command("migrate")
def db_migrate(json_output: JsonOption = False) -> None:
    """Apply pending read-model migrations (yoyo-migrations); idempotent."""
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


def backlog(
    warehouse: WarehouseOption = None,
    sku: SkuOption = None,
    all_skus: Annotated[
        bool, typer.Option("--all", help="Include SKUs without backorders.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Backordered units, open orders, oldest backorder and stock position per (warehouse, SKU)."""
    from services.projector.adapters import queries

    rows = _query(
        lambda c: queries.backlog(c, warehouse_id=warehouse, sku=sku, include_all=all_skus)
    )
    if json_output:
        _print_json(rows)
    else:
        _print_table("backlog", rows, list(queries.BACKLOG_FIELDS))


def order(
    order_id: Annotated[str, typer.Argument(help="The order to show.")],
    warehouse: WarehouseOption = None,
    json_output: JsonOption = False,
) -> None:
    """One order: status and, per line, quantities by state and the current ETA.

    A split order (the same order_id in several warehouses) has one part per
    warehouse; every part is shown (`--json`: a list, one document per warehouse).
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
    for found in parts:
        typer.echo(
            f"order {found['order_id']} ({found['warehouse_id']}): {found['status']}"
            f"; placed {_cell(found['placed_at'])}; updated {_cell(found['updated_at'])}"
            + (
                f"; backordered since {_cell(found['backordered_since'])}"
                if found["backordered_since"]
                else ""
            )
        )
        _print_table("lines", found["lines"], list(queries.LINE_FIELDS))


def inbound(
    late: Annotated[
        bool, typer.Option("--late", help="Only delayed or overdue shipments.")
    ] = False,
    as_of: AsOfOption = None,
    json_output: JsonOption = False,
) -> None:
    """Inbound supplier shipments: original and current ETA, delay, quantities, cancelled.

    `overdue`: units still to come and the current ETA plus FULFIL_OVERDUE_GRACE_DAYS
    is past (the customers it covered have no date until a delay notice or a receipt).
    """
    from services.projector.adapters import queries

    moment = _as_of(as_of)
    grace = load_settings().fulfil_overdue_grace_days
    rows = _query(lambda c: queries.inbound(c, as_of=moment, late_only=late, grace_days=grace))
    if json_output:
        _print_json(rows)
    else:
        _print_table(
            "inbound shipments",
            rows,
            [
                "warehouse_id", "inbound_id", "supplier", "original_eta", "current_eta",
                "delay_days", "quantity_expected", "quantity_received", "quantity_cancelled",
                "status", "late", "overdue",
            ],
        )  # fmt: skip


def _usage(message: str) -> typer.Exit:
    """A bad argument: one line on stderr, exit 2."""
    typer.echo(f"fulfil: {message}", err=True)
    return typer.Exit(2)


def promise(
    sku: Annotated[str, typer.Argument(help="The SKU to promise.")],
    warehouse: Annotated[
        str | None, typer.Option("--warehouse", help="The warehouse_id (required).")
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


def aging(as_of: AsOfOption = None, json_output: JsonOption = False) -> None:
    """Backordered units by days waited (0-7, 8-14, 15-30, >30), per SKU and overall."""
    from services.projector.adapters import queries

    moment = _as_of(as_of)
    doc = _query(lambda c: queries.aging(c, as_of=moment))
    if json_output:
        _print_json(doc)
        return
    _print_table(
        f"backlog aging as of {_cell(doc['as_of'])} (units)",
        [*doc["skus"], {"warehouse_id": "all", "sku": "", **doc["overall"]}],
    )


def deposits(
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many orders.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Customer deposits: value of paid, still backordered units, per currency and per order."""
    from services.projector.adapters import queries

    doc = _query(lambda c: queries.deposits(c, limit=limit))
    if json_output:
        _print_json(doc)
        return
    _print_table("customer deposits (unearned revenue)", doc["totals"])
    _print_table("per order", doc["orders"])


def reorder(
    warehouse: WarehouseOption = None,
    sku: SkuOption = None,
    needed: Annotated[
        bool, typer.Option("--needed", help="Only SKUs below their reorder point.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Reorder suggestions: safety stock, reorder point and the gap to the current position."""
    from services.projector.adapters import queries

    rows = _query(lambda c: queries.reorder(c, warehouse_id=warehouse, sku=sku))
    if needed:
        rows = [r for r in rows if r["gap"] is not None and r["gap"] > 0]
    rows = _rounded(rows)
    if json_output:
        _print_json(rows)
    else:
        _print_table(
            "reorder suggestions",
            rows,
            [
                "warehouse_id", "sku", "avg_daily_demand", "max_daily_demand",
                "avg_lead_time_days", "max_lead_time_days", "safety_stock", "reorder_point",
                "position", "gap", "suggested_order_quantity",
            ],
        )  # fmt: skip


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
