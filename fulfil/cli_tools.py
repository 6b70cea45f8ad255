"""Operator commands: topics, publish, and the service entry points."""

from __future__ import annotations

import asyncio
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from fulfil.cli_common import fail_usage
from fulfil_platform.config import Settings, load_settings
from fulfil_platform.logs import configure_logging

if TYPE_CHECKING:
    from fulfil.publishing import PublishReport

topics_app = typer.Typer(
    help="Manage the Kafka topics of the service.\n\nExample: fulfil topics list",
    no_args_is_help=True,
)


@topics_app.command("create")
def topics_create(
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON document.")] = False,
) -> None:
    """Create every topic (inputs, commands, allocations, dead letters); idempotent.

    Example: FULFIL_PARTITIONS=12 fulfil topics create
    """
    from fulfil_platform.kafka import create_topics

    settings = load_settings()
    created, existing = asyncio.run(create_topics(settings))
    if json_output:
        typer.echo(orjson.dumps({"created": created, "existing": existing}).decode())
        return
    for name in created:
        typer.echo(f"created {name} ({settings.fulfil_partitions} partitions)")
    for name in existing:
        typer.echo(f"exists  {name}")


def publish(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="JSONL file of envelopes."),
    ],
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
    ordered: Annotated[
        bool,
        typer.Option(
            "--ordered",
            help="Send each line only after the previous one had its effect (the allocator "
            "processed it, or it was dead-lettered), so the allocator folds the file in its "
            "order; prints what each line led to. Needs `fulfil allocator` running.",
        ),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=0.1,
            metavar="SECONDS",
            help="With --ordered: how long one line may take before publishing stops (exit 1).",
        ),
    ] = 60.0,
) -> None:
    """Validate each line and publish it to the topic its `type` belongs to.

    Bad lines are reported with their line number and reason; good lines are
    still published. Exit code 1 if any line was bad (or, with --ordered, was
    dead-lettered, or had no effect in time). Only upstream inputs are published:
    a file holding an event only a service writes is refused whole, exit 2 (an
    allocation event: allocations.v1 is the allocator's; a ClockTicked: write it
    with `fulfil clock tick --now T`).

    Orders and inventory travel on two topics, so without --ordered the allocator
    may fold them in another order than the file's. With --ordered a line's effect
    is its dead letter, or the allocator core having processed it: its outputs, or
    none for a duplicate or a statement that changed nothing (fulfil/publishing.py).

    Example: fulfil publish --ordered examples/walk/1-monday.jsonl
    """
    from fulfil.publishing import NotAnInput, publish_file

    settings = load_settings()
    configure_logging(settings.fulfil_log_level, settings.fulfil_log_format)
    if ordered:
        _publish_ordered(settings, file, json_output, timeout)
        return
    try:
        report = asyncio.run(publish_file(settings, file))
    except NotAnInput as exc:
        raise fail_usage(str(exc)) from None
    _print_report(file, report, json_output)


def _publish_ordered(settings: Settings, file: Path, json_output: bool, timeout: float) -> None:
    from fulfil.publish_effects import Effect, NoEffect
    from fulfil.publishing import NotAnInput, publish_ordered

    def show(effect: Effect) -> None:
        if not json_output:
            typer.echo(
                f"{effect.line_no:>3} {effect.event_type} {effect.subject}: {effect.summary()}"
            )

    try:
        report = asyncio.run(publish_ordered(settings, file, timeout=timeout, on_effect=show))
    except NotAnInput as exc:
        raise fail_usage(str(exc)) from None
    except NoEffect as exc:
        typer.echo(f"fulfil: {exc}", err=True)
        raise typer.Exit(1) from None
    _print_report(file, report, json_output)


def _print_report(file: Path, report: PublishReport, json_output: bool) -> None:
    """The bad lines on stderr, the summary on stdout; exit 1 if a line was bad or (with
    --ordered) dead-lettered."""
    from fulfil.publishing import OrderedReport

    ordered = isinstance(report, OrderedReport)
    dead = report.dead_lettered if isinstance(report, OrderedReport) else 0
    for line_no, reason in report.bad:
        typer.echo(f"{file}:{line_no}: {reason}", err=True)
    if json_output:
        document: dict[str, object] = {
            "published": report.published,
            "by_topic": report.by_topic,
            "bad": [{"line": n, "reason": r} for n, r in report.bad],
        }
        if isinstance(report, OrderedReport):
            document["effects"] = [e.to_json() for e in report.effects]
        typer.echo(orjson.dumps(document).decode())
    else:
        topics = ", ".join(f"{n} to {t}" for t, n in sorted(report.by_topic.items()))
        events = f"{report.published} event{'' if report.published == 1 else 's'}"
        how = f"{events} in order" if ordered else events
        dead_part = f"; {dead} dead-lettered" if ordered else ""
        typer.echo(f"published {how} ({topics or 'none'}){dead_part}; {len(report.bad)} bad lines")
    if report.bad or dead:
        raise typer.Exit(1)


class Stage(StrEnum):
    all = "all"
    router = "router"
    core = "core"


def allocator(
    stage: Annotated[
        Stage, typer.Option(help="Run both stages, or one to scale them apart.")
    ] = Stage.all,
) -> None:
    """Run the allocator (router + core) until SIGTERM/SIGINT; graceful stop exits 0.

    Example: fulfil allocator --stage core
    """
    settings = load_settings()
    settings.require_kafka()
    from services.allocator.entrypoints.app import run_allocator

    configure_logging(settings.fulfil_log_level, settings.fulfil_log_format)
    asyncio.run(run_allocator(settings, stage.value))


def register(app: typer.Typer) -> None:
    app.add_typer(topics_app, name="topics")
    app.command("publish")(publish)
    app.command("allocator")(allocator)
