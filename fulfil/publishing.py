"""Publishing envelopes from a JSONL file to the topics of their types.

A ClockTicked line ("today is `now`" for the allocator core) goes to every command
partition, written as `fulfil clock tick --now <now>` writes it (one tick per
partition, ids derived from partition and `now`): a tick on one partition only
would move today for one share of the warehouses and leave the others behind.
Files written by `fulfil simulate --out` carry ticks; `fulfil simulate --publish`
writes them the same way."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fulfil_platform.config import Settings
from fulfil_platform.kafka import producer
from schemas.contract import ClockTicked
from schemas.registry import (
    ALLOCATIONS,
    COMMANDS,
    OUTPUT_TYPES,
    ContractError,
    parse_event,
    spec_for,
)
from services.allocator.service_layer.clock import write_ticks


@dataclass
class PublishReport:
    published: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    bad: list[tuple[int, str]] = field(default_factory=list)
    ticks: int = 0  # ClockTicked lines, each written to every command partition


class NotAnInput(ValueError):
    """The file holds an event only a service may write: nothing of it is published."""


def refuse_outputs(path: Path) -> None:
    """Raise NotAnInput at the first allocation event in the file.

    Checked before anything is sent: a file refused half-way would leave its
    first lines published. Only the `type` is looked at; the contract is checked
    while publishing."""
    with path.open("rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            try:
                doc = orjson.loads(line) if line.strip() else None
            except orjson.JSONDecodeError:
                continue  # reported as a bad line while publishing
            kind = doc.get("type") if isinstance(doc, dict) else None
            if kind in OUTPUT_TYPES:
                raise NotAnInput(
                    f"{path}:{line_no}: {kind} belongs on {ALLOCATIONS}, which only the allocator "
                    "writes; publish inputs (orders.v1, inventory.v1) and let it decide"
                )


async def publish_file(settings: Settings, path: Path) -> PublishReport:
    refuse_outputs(path)
    report = PublishReport()
    counts: Counter[str] = Counter()
    tick_records = 0
    prod = producer(settings)
    await prod.start()
    try:
        pending: list[Any] = []  # delivery futures
        with path.open("rb") as handle:
            for line_no, line in enumerate(handle, start=1):
                raw = line.strip()
                if not raw:
                    continue
                try:
                    event = parse_event(raw)
                except ContractError as exc:
                    report.bad.append((line_no, f"{exc.kind}: {exc.reason}"))
                    continue
                if isinstance(event, ClockTicked):
                    # After everything before it is acknowledged: the file's order, as far as one producer keeps it.
                    for delivery in pending:
                        await delivery
                    pending.clear()
                    written = await write_ticks(settings, event.data.now, prod)
                    counts[settings.topic(COMMANDS)] += written
                    report.ticks += 1
                    tick_records += written
                    continue
                spec = spec_for(event)
                topic = settings.topic(spec.topic)
                # The line is published as given: the contract is validated,
                # not rewritten, so unknown fields reach tolerant readers.
                pending.append(await prod.send(topic, raw, key=spec.key(event)))
                counts[topic] += 1
        for delivery in pending:
            await delivery
    finally:
        await prod.stop()
    report.published = (
        sum(counts.values()) - tick_records + report.ticks
    )  # lines; by_topic counts records
    report.by_topic = dict(counts)
    return report
