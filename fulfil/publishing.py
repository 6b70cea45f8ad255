"""Publishing envelopes from a JSONL file to the topics of their types.

Only upstream inputs are published: the file is refused whole (before anything is
sent) at its first event only a service may write. An output (`OrderAllocated`, ...)
belongs on `allocations.v1`, which only the allocator writes; an internal command
(`ClockTicked`) belongs on `allocator.commands.v1`, which only the router and the
allocator's clock write: `fulfil clock tick --now T` writes a tick, and
`fulfil simulate --publish` writes the ticks of its simulated traffic itself.

`--ordered` (`publish_ordered`): orders and inventory travel on two topics, and the
router interleaves them as they come, so a file published at full speed is not
folded in file order. With `--ordered` each line is sent only once the previous
one had its effect (fulfil/publish_effects.py reads it):

- its dead letter on `<topic>.dlq` (the router's headers name the source topic,
  partition and offset of the record we sent), or
- the allocator core processed its command: the router put it on
  `allocator.commands.v1` (found there by envelope id) and the core's committed
  offset (group `fulfil-allocator-core`) passed it. The outputs naming it
  (`causation_id` = the line's id, command position in their headers) are then
  already on `allocations.v1`; they are read to the partition's end and reported.

Waiting for the command, not only for an output, is what makes the rule sound:
an accepted input may produce nothing at all. A duplicate (an id or business key
seen before), a `ShipmentDelayed` for an inbound not scheduled yet, a
`SkuPolicySet` that changes nothing the position shows: each is processed and
reported as "no output", never waited on until the deadline.

Each line has `timeout` seconds; if nothing happened by then, `NoEffect` names the
line and the stage it is stuck in (not routed: the router is not running; routed
but not processed: the core is not), and nothing after it is sent. Outputs seen
without the core's commit by the deadline (a failed offset commit, or a long
FULFIL_COMMIT_INTERVAL_MS) count as the effect, reported as possibly incomplete.
Every line waits for the core's commit, so with FULFIL_COMMIT_INTERVAL_MS set a
line takes up to that long."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fulfil.publish_effects import (
    Effect,
    EffectWatcher,
    envelope_field,
    subject_of,
    wait_for_effect,
)
from fulfil_platform.config import Settings
from fulfil_platform.kafka import producer
from schemas.contract import Envelope
from schemas.registry import (
    ALLOCATIONS,
    COMMANDS,
    INTERNAL_TYPES,
    OUTPUT_TYPES,
    ContractError,
    parse_event,
    spec_for,
)

# How to write each internal command instead (a service or a `fulfil` command writes it).
_INTERNAL_WRITERS = {"ClockTicked": "use `fulfil clock tick --now T`"}


@dataclass
class PublishReport:
    published: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    bad: list[tuple[int, str]] = field(default_factory=list)


class NotAnInput(ValueError):
    """The file holds an event only a service may write: nothing of it is published."""


def refusal(kind: object) -> str | None:
    """Why an event of this type may not be published by hand (None: it is an input).

    Names the topic's owner: allocations.v1 is the allocator's, allocator.commands.v1
    the router's and the allocator clock's."""
    if kind in OUTPUT_TYPES:
        return (
            f"{kind} belongs on {ALLOCATIONS}, which only the allocator writes; "
            "publish inputs (orders.v1, inventory.v1) and let it decide"
        )
    if kind in INTERNAL_TYPES:
        how = _INTERNAL_WRITERS.get(str(kind), "the allocator writes it itself")
        return f"{kind} is the allocator's internal command ({COMMANDS}): {how}"
    return None


def refuse_non_inputs(path: Path) -> None:
    """Raise NotAnInput at the first event in the file that is not an upstream input
    (an allocation event, or an internal command such as ClockTicked).

    Checked before anything is sent: a file refused half-way would leave its
    first lines published. Only the `type` is looked at; the contract is checked
    while publishing."""
    with path.open("rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            try:
                doc = orjson.loads(line) if line.strip() else None
            except orjson.JSONDecodeError:
                continue  # reported as a bad line while publishing
            why = refusal(doc.get("type")) if isinstance(doc, dict) else None
            if why is not None:
                raise NotAnInput(f"{path}:{line_no}: {why}")


def _events(path: Path, report: PublishReport) -> Iterator[tuple[int, bytes, Envelope]]:
    """(line number, bytes as given, envelope) of each valid line; bad lines go to `report`."""
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
            yield line_no, raw, event


async def publish_file(settings: Settings, path: Path) -> PublishReport:
    refuse_non_inputs(path)
    report = PublishReport()
    counts: Counter[str] = Counter()
    prod = producer(settings)
    await prod.start()
    try:
        pending: list[Any] = []  # delivery futures
        for _, raw, event in _events(path, report):
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
    report.published = sum(counts.values())
    report.by_topic = dict(counts)
    return report


# --------------------------------------------------------------------------- --ordered

DEFAULT_TIMEOUT = 60.0  # seconds a line may take to have its effect


@dataclass
class OrderedReport(PublishReport):
    effects: list[Effect] = field(default_factory=list)

    @property
    def dead_lettered(self) -> int:
        return sum(e.dead_letter is not None for e in self.effects)


def _ids(path: Path) -> set[str]:
    """The envelope ids in the file (valid or not: only the ids are read)."""
    found: set[str] = set()
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                event_id = envelope_field(line, "id")
                if event_id is not None:
                    found.add(event_id)
    return found


async def publish_ordered(
    settings: Settings,
    path: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    on_effect: Callable[[Effect], None] | None = None,
) -> OrderedReport:
    """Publish each line once the previous one had its effect (see the module docs).
    Raises NoEffect at the first line with no effect before `timeout` seconds; nothing
    after it is published."""
    refuse_non_inputs(path)
    report = OrderedReport()
    counts: Counter[str] = Counter()
    watcher = EffectWatcher(settings, _ids(path))
    prod = producer(settings)
    await prod.start()
    try:
        await watcher.start()
        for line_no, raw, event in _events(path, report):
            effect = Effect(line_no, event.id, event.type, subject_of(event))
            spec = spec_for(event)
            topic = settings.topic(spec.topic)
            sent = await prod.send_and_wait(topic, raw, key=spec.key(event))
            counts[topic] += 1
            await wait_for_effect(watcher, effect, sent, timeout, f"{path}:{line_no}")
            report.effects.append(effect)
            if on_effect is not None:
                on_effect(effect)
    finally:
        await prod.stop()
        await watcher.stop()
    report.published = sum(counts.values())
    report.by_topic = dict(counts)
    return report
