"""`fulfil notifier` and `fulfil notifications [--failed] [--json] | retry`."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from fulfil_platform.logs import configure_logging
from fulfil_platform.tables import FREE_TEXT, Table, WideOption, col, print_table, with_columns
from services.notifier.config import CHANNELS, load_notifier_settings

if TYPE_CHECKING:
    from services.notifier.adapters.outbox import OutboxStore

# Its help is the callback's docstring (with the columns of the listing).
notifications_app = typer.Typer(invoke_without_command=True)


def notifier() -> None:
    """Run the notifier until SIGTERM/SIGINT; a graceful stop finishes the batch, commits, exits 0.

    Example: SMTP_URL=smtp://127.0.0.1:1025 fulfil notifier
    """
    settings = load_notifier_settings()
    settings.require_kafka()
    settings.require_database()
    settings.require_channels()
    from services.notifier.entrypoints.app import run_notifier

    configure_logging(settings.fulfil_log_level, settings.fulfil_log_format)
    asyncio.run(run_notifier(settings))


def _channel(value: str | None) -> str | None:
    if value is not None and value not in CHANNELS:
        raise typer.BadParameter(f"must be one of {', '.join(CHANNELS)}")
    return value


async def _with_store(work: Any) -> Any:
    import asyncpg

    from services.notifier.adapters.migrate import apply_migrations
    from services.notifier.adapters.outbox import OutboxStore

    url = load_notifier_settings().require_database()
    await apply_migrations(url)  # a fresh database simply has an empty outbox
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        return await work(OutboxStore(pool))
    finally:
        await pool.close()


def _sent_or_due(row: Mapping[str, Any]) -> datetime | None:
    due: datetime | None = row["sent_at"] if row["status"] == "sent" else row["next_attempt_at"]
    return due


def _about(row: Mapping[str, Any]) -> str:
    # A back-in-stock message is about a stock alert, not an order.
    return row["order_id"] if row["order_id"] is not None else f"alert {row['alert_id']}"


MESSAGES = Table((
    col("id", numeric=True, value=lambda r: str(r["id"])),  # no separators: `retry ID`
    col("status"), col("kind"), col("order_id", "order", value=_about),
    col("sent_or_due", "sent or due", value=_sent_or_due),
    col("channel", wide=True), col("attempts", numeric=True, wide=True),
    col("event_type", "event type", wide=True),
    col("last_error", "last error", wide=True, wrap=FREE_TEXT),
))  # fmt: skip


@notifications_app.callback(invoke_without_command=True)
@with_columns(MESSAGES)
def notifications(
    ctx: typer.Context,
    failed: Annotated[
        bool, typer.Option("--failed", help="Only messages that gave up (status failed).")
    ] = False,
    channel: Annotated[
        str | None, typer.Option(help="Only this channel (email, webhook).", callback=_channel)
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=100_000, help="At most this many, newest first.")
    ] = 50,
    wide: WideOption = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON document.")] = False,
) -> None:
    """The notifier's outbox: list messages, newest first; `retry` re-queues failures.

    No addresses or names are shown: look those up by order.

    Example: fulfil notifications --failed --channel email
    """
    if ctx.invoked_subcommand is not None:
        return

    async def work(store: Any) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
        return await store.list(
            status="failed" if failed else None, channel=channel, limit=limit
        ), await store.counts()

    rows, counts = asyncio.run(_with_store(work))
    if json_output:
        typer.echo(orjson.dumps({"counts": counts, "messages": rows}).decode())
        return
    summary = "; ".join(
        f"{ch}: " + ", ".join(f"{n} {status}" for status, n in sorted(by.items()))
        for ch, by in sorted(counts.items())
    )
    typer.echo(summary or "the outbox is empty")
    if rows:
        print_table(MESSAGES, rows, title="messages, newest first", wide=wide)


@notifications_app.command("retry")
def retry(
    ids: Annotated[
        list[int] | None, typer.Argument(help="Outbox ids to re-queue (default: every failed one).")
    ] = None,
    channel: Annotated[
        str | None, typer.Option(help="Only this channel (email, webhook).", callback=_channel)
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON document.")] = False,
) -> None:
    """Re-queue failed messages: due at once, with a fresh set of attempts, same Message-ID.

    Example: fulfil notifications retry 1042 1043
    """

    async def work(store: OutboxStore) -> list[int]:
        return await store.retry_failed(datetime.now(UTC), ids=ids or None, channel=channel)

    requeued = asyncio.run(_with_store(work))
    if json_output:
        typer.echo(orjson.dumps({"requeued": len(requeued)}).decode())
    else:
        typer.echo(
            f"re-queued {len(requeued)} failed message(s); a running notifier sends them now"
        )
    missing = sorted(set(ids or ()) - set(requeued))
    if missing:
        what = "in that channel " if channel else ""
        typer.echo(
            f"fulfil: no failed message {what}with id {', '.join(map(str, missing))} "
            "(`fulfil notifications --failed` lists them)",
            err=True,
        )
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("notifier")(notifier)
    app.add_typer(notifications_app, name="notifications")
