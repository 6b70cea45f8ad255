"""`fulfil notifier` and `fulfil notifications [--failed] [--json] | retry`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from fulfil_platform.logs import configure_logging
from services.notifier.config import CHANNELS, load_notifier_settings

if TYPE_CHECKING:
    from services.notifier.adapters.outbox import OutboxStore

notifications_app = typer.Typer(
    help="The notifier's outbox: list messages (e.g. the failed ones) and re-queue failures.",
    invoke_without_command=True,
)


def notifier() -> None:
    """Run the notifier until SIGTERM/SIGINT; a graceful stop finishes the batch, commits, exits 0."""
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


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


@notifications_app.callback(invoke_without_command=True)
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
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON document.")] = False,
) -> None:
    """List outbox messages, newest first (no addresses or names: look those up by order)."""
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
    for r in rows:
        when = _when(r["sent_at"]) if r["status"] == "sent" else _when(r["next_attempt_at"])
        # A back-in-stock message is about a stock alert, not an order.
        about = f"order {r['order_id']}" if r["order_id"] is not None else f"alert {r['alert_id']}"
        line = (
            f"{r['id']:>8}  {r['status']:<10} {r['channel']:<7} {r['kind']:<17} {about}"
            f"  attempts {r['attempts']}  {'sent' if r['status'] == 'sent' else 'due'} {when}"
        )
        if r["last_error"]:
            line += f"  last error: {r['last_error']}"
        typer.echo(line)


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
    """Re-queue failed messages: due at once, with a fresh set of attempts, same Message-ID."""

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
