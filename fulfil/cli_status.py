"""`fulfil status` and `fulfil topics list` (the gathering is in fulfil/status.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
import typer

from fulfil.cli_common import JsonOption
from fulfil_platform.config import load_settings
from fulfil_platform.tables import (
    FREE_TEXT,
    Table,
    WideOption,
    col,
    print_table,
    when,
    with_columns,
)


def _behind(row: Mapping[str, Any]) -> str:
    lagging = [f"{p['partition']}:{p['lag']:,}" for p in row["partitions"] if p["lag"]]
    return " ".join(lagging) or "-"


def _total(key: str) -> Any:
    def total(row: Mapping[str, Any]) -> int | None:
        known = [p[key] for p in row["partitions"] if p[key] is not None]
        return sum(known) if known else None  # partitions never consumed have no position

    return total


LAG = Table((
    col("service"), col("topic"), col("lag", numeric=True),
    col("behind", "behind (partition:lag)", wrap=FREE_TEXT, value=_behind),
    col("group", wide=True), col("positions_in", "positions in", wide=True),
    col("position", numeric=True, wide=True, value=_total("position")),
    col("end", "log end", numeric=True, wide=True, value=_total("end")),
))  # fmt: skip
PROGRESS = Table((
    col("service"), col("last_progress_at", "last progress"),
    col("last_progress", "measured as", wrap=FREE_TEXT),
))  # fmt: skip
DEAD_LETTERS = Table((
    col("base", "topic"), col("dead_letters", "dead letters", numeric=True),
    col("redriven", numeric=True),
))  # fmt: skip
OUTBOX = Table((
    col("channel"), col("pending", numeric=True), col("failed", numeric=True),
    col("sent", numeric=True), col("last_sent_at", "last sent"),
    col("superseded", numeric=True, wide=True),
))  # fmt: skip
TOPICS = Table((
    col("base", "topic"),
    col("partitions", numeric=True, value=lambda r: r["partitions"] if r["exists"] else "missing"),
    col("records", numeric=True),
    col("start_offsets", "start offsets", wide=True, wrap=FREE_TEXT, value=lambda r: _offsets(r["start_offsets"])),
    col("end_offsets", "end offsets", wide=True, wrap=FREE_TEXT, value=lambda r: _offsets(r["end_offsets"])),
))  # fmt: skip


def _offsets(values: list[int] | None) -> str | None:
    return None if values is None else " ".join(f"{p}:{o:,}" for p, o in enumerate(values))


def _prefixed(prefix: str) -> str:
    return f" (prefix {prefix!r})" if prefix else ""


def _echo_json(document: Any) -> None:
    typer.echo(orjson.dumps(document).decode())


@with_columns(LAG, PROGRESS, DEAD_LETTERS, OUTBOX)
def status(wide: WideOption = False, json_output: JsonOption = False) -> None:
    """Lag, dead letters and outbox at a glance: where every consumer is.

    Consumer lag per group and partition: the stored position (Kafka commits for the
    allocator's router and core, PostgreSQL for the projector and the notifier) against
    the log end; when each last made progress; dead letters per dead-letter topic; the
    notifier's pending and failed messages.

    Example: fulfil status --json | jq '.consumers[] | {service, lag}'
    """
    from fulfil.status import collect

    settings = load_settings()
    settings.require_kafka()
    settings.require_database()
    doc = asyncio.run(collect(settings))
    if json_output:
        _echo_json(doc)
        return
    prefix = doc["topic_prefix"]
    rows = []  # one per (consumer, topic)
    for c in doc["consumers"]:
        for topic in dict.fromkeys(p["topic"] for p in c["partitions"]):
            parts = [p for p in c["partitions"] if p["topic"] == topic]
            lag = sum(p["lag"] for p in parts)
            rows.append({**c, "topic": topic.removeprefix(prefix), "partitions": parts, "lag": lag})
    typer.echo(f"fulfil status at {when(doc['checked_at'])}{_prefixed(prefix)}")
    print_table(
        LAG,
        rows,
        title="consumer lag (stored position → log end)",
        empty="consumer lag: no topics yet (`fulfil topics create` makes them)",
        wide=wide,
    )
    for c in doc["consumers"]:
        if c["note"]:
            typer.echo(f"{c['service']}: {c['note']}")
    print_table(PROGRESS, doc["consumers"], title="last progress of each consumer", wide=wide)
    letters = [{**d, "base": d["topic"].removeprefix(prefix)} for d in doc["dead_letters"]]
    print_table(DEAD_LETTERS, letters, title="dead letters (`fulfil dlq list`)", wide=wide)
    outbox = doc["outbox"]
    if outbox is None:
        typer.echo(f"outbox: {doc['outbox_note']}")
        return
    channels = [
        {"channel": name, **dict.fromkeys(("pending", "failed", "sent", "superseded"), 0), **by}
        for name, by in sorted(outbox["channels"].items())
    ]
    for row in channels:
        row["last_sent_at"] = outbox["last_sent_by_channel"].get(row["channel"])
    print_table(
        OUTBOX,
        channels,
        title="outbox (`fulfil notifications`)",
        empty="outbox: empty",
        wide=wide,
    )


@with_columns(TOPICS)
def topics_list(wide: WideOption = False, json_output: JsonOption = False) -> None:
    """Every topic of the service: partitions and records (end minus start offsets).

    Example: fulfil topics list --wide
    """
    from fulfil.status import topic_list

    settings = load_settings()
    settings.require_kafka()
    topics = asyncio.run(topic_list(settings))
    if json_output:
        _echo_json(topics)
        return
    prefix = settings.fulfil_topic_prefix
    print_table(TOPICS, topics, title=f"topics{_prefixed(prefix)}", wide=wide)


def register(app: typer.Typer) -> None:
    from fulfil.cli_tools import topics_app

    app.command("status")(status)
    topics_app.command("list")(topics_list)
