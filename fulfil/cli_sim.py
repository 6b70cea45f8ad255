"""`fulfil simulate` (seeded store traffic) and `fulfil trace ORDER_ID` (one order's history)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.tree import Tree

from fulfil.cli_common import JsonOption, fail_usage
from fulfil_platform.config import load_settings
from schemas.registry import COMMANDS

console = Console()
err = Console(stderr=True)


def _dump(document: object) -> None:
    typer.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


def _progress(disable: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=disable,
    )


# ---------------------------------------------------------------- simulate


async def _publish(
    settings: Any, records: Any, on_progress: Any, rate: float = 0
) -> dict[str, int]:
    from aiokafka.errors import KafkaError

    from fulfil.simulation.publish import publish_simulated
    from fulfil_platform import kafka

    try:  # declared topics keep FULFIL_PARTITIONS; auto-created ones would not
        await kafka.create_topics(settings)
    except KafkaError as exc:  # no admin rights: topics are managed elsewhere
        typer.echo(f"fulfil: warning: could not ensure the topics exist: {exc}", err=True)
    return await publish_simulated(settings, records, on_progress, rate)


_Events = Annotated[
    int, typer.Option(min=1, max=100_000_000, help="How many messages (20 k ≈ one simulated day).")
]
_Seed = Annotated[int, typer.Option(help="Seed: the same arguments give byte-identical output.")]
_Warehouses = Annotated[int, typer.Option(min=1, max=200, help="Warehouses (stock pools).")]
_Skus = Annotated[
    int, typer.Option(min=1, max=200_000, help="SKUs in the catalogue (Zipf-like demand).")
]
_Out = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        dir_okay=False,
        help="Write JSONL (one envelope per line, publish order) to this file. Its clock ticks are the allocator's internal commands, which `fulfil publish` refuses: to publish the same traffic, use --publish with the same options.",
    ),
]
_Publish = Annotated[
    bool,
    typer.Option("--publish", help="Publish to the topics instead (key = warehouse_id, batched)."),
]
_InvalidRate = Annotated[
    float,
    typer.Option(min=0.0, max=1.0, help="Share of invalid messages the router must dead-letter."),
]
_Rate = Annotated[
    float,
    typer.Option(
        min=0.0,
        help="With --publish: events per second (0 = as fast as possible). Orders and inventory are separate topics, so only a paced publish keeps their simulated order on the command log.",
    ),
]


def simulate(
    events: _Events = 20_000,
    seed: _Seed = 1,
    warehouses: _Warehouses = 3,
    skus: _Skus = 300,
    out: _Out = None,
    publish: _Publish = False,
    invalid_rate: _InvalidRate = 0.005,
    rate: _Rate = 0.0,
    json_output: JsonOption = False,
) -> None:
    """Generate realistic store traffic: orders, receipts, inbounds, delays, adjustments, cancellations, policies.

    Writes JSONL to --out, publishes with --publish, or writes JSONL to stdout.
    A summary goes to stdout (--json: one JSON document) unless stdout carries the JSONL.

    Example: fulfil simulate --events 5000 --seed 7 --out day.jsonl
    """
    from fulfil.simulation import generate

    _check_simulate_options(out, publish, rate, json_output)
    to_stdout = out is None and not publish
    settings = load_settings() if publish else None
    if settings is not None:
        settings.require_kafka()

    tally = _Tally()
    started = time.monotonic()
    records = tally.count(generate(events, seed, warehouses, skus, invalid_rate))
    by_topic: dict[str, int] = {}
    with _progress(disable=json_output or to_stdout) as bar:
        task = bar.add_task("simulating" if not publish else "publishing", total=events, rate="")

        def advance(done: int) -> None:
            elapsed = max(time.monotonic() - started, 1e-6)
            bar.update(task, completed=done, rate=f"{done / elapsed:,.0f} events/s")

        if publish:
            by_topic = asyncio.run(_publish(settings, records, advance, rate))
        else:
            _write_jsonl(records, out, advance)
        advance(sum(tally.counts.values()))
    elapsed = time.monotonic() - started
    if to_stdout:
        return
    document = _simulate_summary(tally, seed, warehouses, skus, elapsed, out, by_topic, publish)
    if json_output:
        _dump(document)
        return
    _print_simulate_summary(document, tally.size, elapsed, seed, out, by_topic, publish)


def _check_simulate_options(
    out: Path | None, publish: bool, rate: float, json_output: bool
) -> None:
    """Reject option combinations `fulfil simulate` cannot honour."""
    if out is not None and publish:
        raise fail_usage("choose one of --out and --publish")
    to_stdout = out is None and not publish
    if rate and not publish:
        raise fail_usage("--rate needs --publish")
    if to_stdout and json_output:
        raise fail_usage("--json needs --out or --publish (stdout carries the JSONL)")


class _Tally:
    """Counts the simulated records by type, their bytes and their first and last time."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first: Any = None
        self.last: Any = None
        self.size = 0

    def count(self, stream: Any) -> Any:
        for record in stream:
            self.counts[record.type] += 1
            self.first = self.first or record.occurred_at
            self.last = record.occurred_at
            self.size += len(record.value)
            yield record


def _write_jsonl(records: Any, out: Path | None, advance: Any) -> None:
    """One value per line to `out`, or to stdout when there is no `out`."""
    to_stdout = out is None
    handle = sys.stdout.buffer if out is None else out.open("wb")
    try:
        for count, record in enumerate(records, start=1):
            handle.write(record.value)
            handle.write(b"\n")
            if count % 20_000 == 0:
                advance(count)
        handle.flush()
    except BrokenPipeError:  # `fulfil simulate | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None
    finally:
        if not to_stdout:
            handle.close()


def _simulate_summary(
    tally: _Tally,
    seed: int,
    warehouses: int,
    skus: int,
    elapsed: float,
    out: Path | None,
    by_topic: dict[str, int],
    publish: bool,
) -> dict[str, Any]:
    """The run's summary document (what --json prints)."""
    from fulfil.simulation import START

    counts, first, last = tally.counts, tally.first, tally.last
    invalid = {
        kind.split(":", 1)[1]: n
        for kind, n in sorted(counts.items())
        if kind.startswith("invalid:")
    }
    valid = {
        kind: n
        for kind, n in sorted(counts.items(), key=lambda kv: -kv[1])
        if not kind.startswith("invalid:")
    }
    total = sum(counts.values())
    return {
        "events": total,
        "seed": seed,
        "warehouses": warehouses,
        "skus": skus,
        "by_type": valid,
        "invalid": invalid,
        "first_occurred_at": first.isoformat() if first else None,
        "trading_starts_at": START.isoformat(),
        "last_occurred_at": last.isoformat() if last else None,
        "bytes": tally.size,
        "seconds": round(elapsed, 3),
        "events_per_s": round(total / elapsed) if elapsed else None,
        "out": str(out) if out else None,
        "published": by_topic if publish else None,
    }


def _print_simulate_summary(
    document: dict[str, Any],
    size: int,
    elapsed: float,
    seed: int,
    out: Path | None,
    by_topic: dict[str, int],
    publish: bool,
) -> None:
    total = document["events"]
    table = Table("type", "count", title=f"simulated {total:,} events (seed {seed})")
    for kind, n in document["by_type"].items():
        table.add_row(kind, f"{n:,}")
    for kind, n in document["invalid"].items():
        table.add_row(f"[red]invalid[/red] ({kind})", f"{n:,}")
    console.print(table)
    console.print(
        f"occurred_at {document['first_occurred_at']} … {document['last_occurred_at']} "
        f"(trading from {document['trading_starts_at']}); {size / 1e6:,.1f} MB in {elapsed:.2f}s "
        f"({document['events_per_s'] or 0:,} events/s)",
        highlight=False,
    )
    if publish:
        console.print(
            "published: " + ", ".join(f"{n:,} to {t}" for t, n in sorted(by_topic.items())),
            highlight=False,
        )
    else:
        console.print(f"written to {out}", highlight=False)


# ---------------------------------------------------------------- trace


def _where(entry: Any) -> str:
    text = f"{entry.topic}[{entry.partition}]@{entry.offset}"
    if entry.topic.endswith(COMMANDS):  # only seen on the command log
        return text
    if entry.command_offsets and entry.relation != "output":
        text += f" → cmd@{','.join(map(str, entry.command_offsets))}"
    elif entry.relation == "output" and entry.command_offsets:
        text += f" (cmd@{entry.command_offsets[0]}#{entry.output_index})"
    return text


_STYLES = {
    "order": "bold cyan",
    "cause": "bold yellow",
    "inbound": "yellow",
    "output": "bold green",
    "dead_letter": "bold red",
}


def _render(trace: Any, show_pii: bool) -> None:
    tree = Tree(_trace_title(trace, show_pii))
    _add_entries(tree, trace, show_pii)
    attached = {e.id for e in trace.entries if e.relation == "output"}
    others = [row for row in trace.notifications if row.get("event_id") not in attached]
    if others:
        branch = tree.add("[bold]other notifications[/bold] (reminders)")
        for row in others:
            branch.add(_notification_label(row))
    console.print(tree)
    for note in trace.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    console.print(f"[dim]{trace.records_read:,} records read in {trace.seconds:.2f}s[/dim]")


def _trace_title(trace: Any, show_pii: bool) -> str:
    title = f"[bold]order {escape(trace.order_id)}[/bold]"
    if trace.warehouse_id is not None:
        title += f" · warehouse {escape(trace.warehouse_id)} · command partition {trace.command_partition}"
    customer = trace.customer()
    if customer:
        if show_pii:
            who = " ".join(
                str(v) for v in (customer.get("name"), f"<{customer.get('email')}>") if v
            )
            title += f" · customer {escape(who)} ({escape(str(customer.get('customer_id')))}, {escape(str(customer.get('locale')))})"
        else:
            title += " · customer \\[redacted] (--show-pii to show)"
    return title


def _entry_label(entry: Any, show_pii: bool) -> str:
    from fulfil.tracing import summarize

    style = _STYLES.get(entry.relation, "bold")
    when = escape(entry.occurred_at or "?")
    ident = escape(entry.id or "-")
    return (
        f"[dim]{when}[/dim] [{style}]{escape(entry.type)}[/{style}] [dim]{ident} · {escape(_where(entry))}[/dim]\n"
        f"{escape(summarize(entry, show_pii))}"
    )


def _add_entries(tree: Tree, trace: Any, show_pii: bool) -> None:
    """Each input with the outputs it caused and their notifications; outputs whose cause
    is not in the trace stand on their own."""
    by_cause: dict[str, list[Any]] = {}
    for entry in trace.entries:
        if entry.relation == "output" and entry.causation_id:
            by_cause.setdefault(entry.causation_id, []).append(entry)
    notes_by_event: dict[str, list[dict[str, Any]]] = {}
    for row in trace.notifications:
        notes_by_event.setdefault(row.get("event_id"), []).append(row)
    placed = {e.id for e in trace.entries if e.relation != "output"}
    for entry in trace.entries:
        if entry.relation == "output":
            if entry.causation_id in placed:
                continue
            node = tree.add(
                _entry_label(entry, show_pii)
                + f"\n[red]cause {escape(entry.causation_id or '?')} not found[/red]"
            )
            for row in notes_by_event.get(entry.id, []):
                node.add(_notification_label(row))
            continue
        node = tree.add(_entry_label(entry, show_pii))
        for output in by_cause.get(entry.id or "", []):
            child = node.add(_entry_label(output, show_pii))
            for row in notes_by_event.get(output.id, []):
                child.add(_notification_label(row))


def _notification_label(row: dict[str, Any]) -> str:
    text = (
        f"✉ {escape(str(row.get('channel')))} {escape(str(row.get('kind')))}: "
        f"[bold]{escape(str(row.get('status')))}[/bold], {row.get('attempts')} attempt(s)"
    )
    if row.get("sent_at"):
        text += f", sent {escape(str(row['sent_at']))}"
    if row.get("last_error"):
        text += f" [red]{escape(str(row['last_error'])[:120])}[/red]"
    return text


def trace(
    order_id: Annotated[str, typer.Argument(help="The order to trace.")],
    warehouse: Annotated[
        str | None,
        typer.Option(
            "--warehouse",
            "-w",
            help="The order's warehouse, if known: skips scanning orders.v1 (faster on a big log).",
        ),
    ] = None,
    show_pii: Annotated[
        bool, typer.Option("--show-pii", help="Do not redact customer data.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """The order's causal history: its inputs, the inventory events that moved it, every allocation event, dead letters, notifications.

    Example: fulfil trace ord-1-0000042 -w berlin-1
    """
    from fulfil.tracing import TraceError, trace_order

    settings = load_settings()
    settings.require_kafka()
    with _progress(disable=json_output) as bar:
        tasks: dict[str, Any] = {}
        started = time.monotonic()

        def progress(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(f"reading {name}", total=total, rate="")
            elapsed = max(time.monotonic() - started, 1e-6)
            bar.update(
                tasks[name], completed=done, total=total, rate=f"{done / elapsed:,.0f} records/s"
            )

        try:
            found = asyncio.run(
                trace_order(settings, order_id, warehouse_id=warehouse, progress=progress)
            )
        except TraceError as exc:
            typer.echo(f"fulfil: {exc}", err=True)
            raise typer.Exit(1) from None
    if not found.found:
        where = (
            f"warehouse {warehouse}'s partitions" if warehouse else f"{settings.topic('orders.v1')}"
        )
        typer.echo(
            f"fulfil: order {order_id!r} not found on {where} or the dead-letter topics", err=True
        )
        raise typer.Exit(1)
    if json_output:
        _dump(found.document(show_pii=show_pii))
    else:
        _render(found, show_pii)


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
    app.command("trace")(trace)
