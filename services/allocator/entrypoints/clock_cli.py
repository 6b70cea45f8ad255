"""`fulfil clock tick --now T`: write one ClockTicked on every command partition."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from pydantic import ValidationError

from schemas.contract import ClockTickedData

clock_app = typer.Typer(
    help=(
        "The allocator's clock (its only notion of today)."
        "\n\nExample: fulfil clock tick --now 2026-11-20T08:00:00Z"
    ),
    no_args_is_help=True,
)


def _usage(message: str) -> typer.Exit:
    typer.echo(f"fulfil: {message}", err=True)
    return typer.Exit(2)


@clock_app.command("tick")
def tick(
    now: Annotated[
        str,
        typer.Option("--now", help="RFC 3339 timestamp with offset, e.g. 2026-11-20T08:00:00Z."),
    ],
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON document: {now, partitions}.")
    ] = False,
) -> None:
    """Write a ClockTicked for NOW on every command partition (tests, staging, catching up).

    Example: fulfil clock tick --now 2026-11-20T08:00:00+01:00 --json
    """
    from fulfil_platform.config import load_settings
    from services.allocator.service_layer.clock import write_ticks

    try:
        moment = ClockTickedData.model_validate({"now": now}).now
    except ValidationError as exc:
        detail = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        raise _usage(f"--now {now!r} is not an RFC 3339 timestamp with offset: {detail}") from None
    settings = load_settings()
    written = asyncio.run(write_ticks(settings, moment))
    if json_output:
        typer.echo(json.dumps({"now": moment.isoformat(), "partitions": written}))
        return
    typer.echo(f"ticked {moment.isoformat()} on {written} command partitions")


def register(app: typer.Typer) -> None:
    app.add_typer(clock_app, name="clock")
