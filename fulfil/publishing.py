"""Publishing envelopes from a JSONL file to the topics of their types.

A ClockTicked line ("today is `now`" for the allocator core) goes to every command
partition, written as `fulfil clock tick --now <now>` writes it (one tick per
partition, ids derived from partition and `now`): a tick on one partition only
would move today for one share of the warehouses and leave the others behind.
Files written by `fulfil simulate --out` carry ticks; `fulfil simulate --publish`
writes them the same way.

`--ordered` (`publish_ordered`): orders and inventory travel on two topics, and the
router interleaves them as they come, so a file published at full speed is not
folded in file order. With `--ordered` each line is sent only once the previous
one had its effect:

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
`SkuPolicySet` that changes nothing the position shows, a tick of a day the core
already has: each is processed and reported as "no output", never waited on until
the deadline. A `ClockTicked` line waits for its tick on every command partition.

Each line has `timeout` seconds; if nothing happened by then, `NoEffect` names the
line and the stage it is stuck in (not routed: the router is not running; routed
but not processed: the core is not), and nothing after it is sent. Outputs seen
without the core's commit by the deadline (a failed offset commit, or a long
FULFIL_COMMIT_INTERVAL_MS) count as the effect, reported as possibly incomplete.
Every line waits for the core's commit, so with FULFIL_COMMIT_INTERVAL_MS set a
line takes up to that long."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from fulfil_platform import kafka
from fulfil_platform.config import Settings
from fulfil_platform.dead_letter_writer import H_KIND, H_OFFSET, H_PARTITION, H_REASON, H_TOPIC
from fulfil_platform.kafka import producer
from schemas.allocation_headers import H_COMMAND_PARTITION, position_of
from schemas.contract import ClockTicked
from schemas.registry import (
    ALLOCATIONS,
    COMMANDS,
    DLQ_SUFFIX,
    INVENTORY,
    ORDERS,
    OUTPUT_TYPES,
    ContractError,
    encode,
    parse_event,
    spec_for,
)
from services.allocator.service_layer.clock import tick, write_ticks


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


# --------------------------------------------------------------------------- --ordered

DEFAULT_TIMEOUT = 60.0  # seconds a line may take to have its effect


@dataclass
class Effect:
    """What one published line led to, once the allocator had dealt with it."""

    line_no: int
    event_id: str
    event_type: str
    subject: str  # the business key the line is about (order, inbound, SKU, ...)
    outputs: list[str] = field(default_factory=list)  # output types, in log order
    dead_letter: str | None = None  # "<dlq topic>: <kind>: <reason>"
    # False: outputs naming it were seen, but the core had not committed the command by
    # the deadline (a commit that failed or FULFIL_COMMIT_INTERVAL_MS); more may follow.
    complete: bool = True

    def summary(self) -> str:
        if self.dead_letter is not None:
            return f"dead-lettered to {self.dead_letter}"
        if not self.outputs:
            return "processed, no output"
        counted: list[tuple[str, int]] = []
        for kind in self.outputs:
            if counted and counted[-1][0] == kind:
                counted[-1] = (kind, counted[-1][1] + 1)
            else:
                counted.append((kind, 1))
        text = ", ".join(kind if n == 1 else f"{n} {kind}" for kind, n in counted)
        return text if self.complete else f"{text} (more may follow: not committed yet)"

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.line_no,
            "id": self.event_id,
            "type": self.event_type,
            "subject": self.subject,
            "outputs": self.outputs,
            "dead_letter": self.dead_letter,
            "complete": self.complete,
        }


@dataclass
class OrderedReport(PublishReport):
    effects: list[Effect] = field(default_factory=list)

    @property
    def dead_lettered(self) -> int:
        return sum(e.dead_letter is not None for e in self.effects)


class NoEffect(RuntimeError):
    """A line had no effect before its deadline (or could not have one: a topic is
    missing); nothing after it was published."""


SUBJECT_FIELDS = ("order_id", "receipt_id", "adjustment_id", "inbound_id", "alert_id", "sku")


def subject_of(event: Any) -> str:
    """The business key a line is about, for progress lines (never customer data)."""
    data = event.data
    if isinstance(event, ClockTicked):
        return str(data.now.isoformat())
    for name in SUBJECT_FIELDS:
        value = getattr(data, name, None)
        if value is not None:
            sku = getattr(data, "sku", None)
            return f"{value} {sku}" if sku is not None and name != "sku" else str(value)
    return str(event.id)


Position = tuple[int, int]  # (command partition, command offset)


class EffectWatcher:
    """Reads what the allocator does with published lines, from where the logs ended at start.

    Topics read, without a consumer group: `allocator.commands.v1` (where the router put
    a line: its position, found by envelope id), `allocations.v1` (outputs, by the
    command position in their headers and their `causation_id`), and the two input
    dead-letter topics (by the source topic, partition and offset the router names in
    their headers). The allocator core's committed offsets (its consumer group, asked,
    never joined) tell when a command was processed, outputs or none."""

    def __init__(self, settings: Settings, wanted: set[str]) -> None:
        from services.allocator.entrypoints.core import CORE_GROUP

        self.wanted = wanted
        self.commands_topic = settings.topic(COMMANDS)
        self.allocations = settings.topic(ALLOCATIONS)
        self.dlqs = [settings.topic(t) + DLQ_SUFFIX for t in (ORDERS, INVENTORY)]
        self.reader = kafka.consumer(settings, group_id=None)
        self.probe = kafka.consumer(settings, group_id=None)
        self.core = kafka.consumer(settings, group_id=settings.topic(CORE_GROUP))
        self.commands: dict[str, list[Position]] = {}  # envelope id -> unclaimed positions
        self.outputs: dict[Position, list[tuple[int, str, str | None]]] = {}
        self.dead: dict[tuple[str, int, int], str] = {}
        self.partitions: dict[str, list[int]] = {}

    async def start(self) -> None:
        for client in (self.reader, self.probe):
            await client.start()
        topics = await self.reader.topics()
        for topic in (self.commands_topic, self.allocations, *self.dlqs):
            if topic not in topics:
                raise NoEffect(f"topic {topic} does not exist: run `fulfil topics create` first")
            self.partitions[topic] = sorted(self.reader.partitions_for_topic(topic) or ())
        tps = [TopicPartition(t, p) for t, ps in self.partitions.items() for p in ps]
        # The true ends (fetch high watermarks, notes/tansu.md): effects land after them,
        # and nothing before them (an earlier run of the same file) is mistaken for one.
        ends = await kafka.log_ends(self.reader, tps)
        for tp, end in ends.items():
            self.reader.seek(tp, end)
        self.core.assign([TopicPartition(self.commands_topic, p) for p in self.command_partitions])
        await self.core.start()

    async def stop(self) -> None:
        for client in (self.reader, self.probe, self.core):
            await client.stop()

    @property
    def command_partitions(self) -> list[int]:
        return self.partitions[self.commands_topic]

    async def poll(self, timeout_ms: int = 100) -> None:
        fetched = await self.reader.getmany(timeout_ms=timeout_ms, max_records=5_000)
        for tp, records in fetched.items():
            for record in records:
                if tp.topic == self.allocations:
                    self._output(record)
                elif tp.topic == self.commands_topic:
                    event_id = _field(record.value, "id")
                    if event_id in self.wanted:
                        self.commands.setdefault(event_id, []).append((tp.partition, record.offset))
                else:
                    self._dead_letter(record)

    def _output(self, record: Any) -> None:
        partition = kafka.header(record.headers, H_COMMAND_PARTITION)
        at = position_of(record.headers)
        if partition is None or at is None or not partition.isdigit():
            return
        try:
            doc = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            return
        if not isinstance(doc, dict):
            return
        cause = doc.get("causation_id")
        if cause in self.wanted:
            position = (int(partition), at[0])
            self.outputs.setdefault(position, []).append((at[1], str(doc.get("type")), cause))

    def _dead_letter(self, record: Any) -> None:
        topic = kafka.header(record.headers, H_TOPIC)
        partition = kafka.header(record.headers, H_PARTITION)
        offset = kafka.header(record.headers, H_OFFSET)
        if topic is None or partition is None or offset is None:
            return
        try:
            key = (topic, int(partition), int(offset))
        except ValueError:
            return
        kind = kafka.header(record.headers, H_KIND) or "?"
        reason = kafka.header(record.headers, H_REASON) or ""
        self.dead[key] = f"{record.topic}: {kind}: {reason}"[:300]

    async def processed(self, position: Position) -> bool:
        """The core committed past the command: its outputs, if any, are on allocations.v1."""
        partition, offset = position
        try:
            committed = await self.core.committed(TopicPartition(self.commands_topic, partition))
        except KafkaError:
            return False  # the coordinator is busy or away: asked again on the next turn
        return committed is not None and committed > offset

    async def drain(self, partition: int, give_up: float) -> bool:
        """Read allocations.v1's partition up to its end as it is now; False if that
        took past `give_up` (loop time)."""
        loop = asyncio.get_running_loop()
        tp = TopicPartition(self.allocations, partition)
        start = await self.reader.position(tp)
        self.probe.assign([tp])
        self.probe.seek(tp, start)
        while (end := self.probe.highwater(tp)) is None:
            if loop.time() > give_up:
                return False
            await self.probe.getmany(tp, timeout_ms=50, max_records=1)
        while await self.reader.position(tp) < end:
            if loop.time() > give_up:
                return False
            await self.poll()
        return True

    def take_outputs(self, position: Position, cause: str | None) -> list[str]:
        found = sorted(self.outputs.pop(position, []))
        return [kind for _, kind, by in found if cause is None or by == cause]

    def claim(self, event_id: str) -> Position | None:
        """The command position of the line being waited for (its id's oldest unclaimed)."""
        positions = self.commands.get(event_id)
        return positions[0] if positions else None

    def release(self, event_id: str) -> None:
        positions = self.commands.get(event_id)
        if positions:
            positions.pop(0)


def _field(value: bytes | None, name: str) -> str | None:
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    found = doc.get(name) if isinstance(doc, dict) else None
    return found if isinstance(found, str) else None


async def _wait_for_record(
    watcher: EffectWatcher, effect: Effect, sent: Any, timeout: float, where: str
) -> None:
    """Until the line's dead letter appears, or the core processed its command."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    source = (sent.topic, sent.partition, sent.offset)
    while True:
        await watcher.poll()
        if source in watcher.dead:
            effect.dead_letter = watcher.dead.pop(source)
            return
        position = watcher.claim(effect.event_id)
        if position is not None and await watcher.processed(position):
            effect.complete = await watcher.drain(position[0], give_up)
            watcher.release(effect.event_id)
            effect.outputs = watcher.take_outputs(position, effect.event_id)
            return
        if loop.time() < give_up:
            continue
        if position is not None and watcher.outputs.get(position):
            watcher.release(effect.event_id)
            effect.outputs = watcher.take_outputs(position, effect.event_id)
            effect.complete = False
            return
        if position is None:
            why = (
                f"the router has not put it on {watcher.commands_topic} "
                "(is `fulfil allocator` running?)"
            )
        else:
            why = (
                f"it is on {watcher.commands_topic} partition {position[0]} offset "
                f"{position[1]}, which the allocator core has not processed "
                "(is `fulfil allocator` running with its core stage?)"
            )
        raise NoEffect(
            f"{where}: {effect.event_type} {effect.event_id} had no effect within {timeout:g}s: {why}"
        )


async def _wait_for_ticks(
    watcher: EffectWatcher, effect: Effect, positions: list[Position], timeout: float, where: str
) -> None:
    """Until the core processed the tick on every command partition."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    waiting = list(positions)
    while waiting:
        await watcher.poll()
        still = []
        for position in waiting:
            if await watcher.processed(position):
                if not await watcher.drain(position[0], give_up):
                    effect.complete = False
                effect.outputs += watcher.take_outputs(position, None)
            else:
                still.append(position)
        waiting = still
        if waiting and loop.time() > give_up:
            partitions = ", ".join(str(p) for p, _ in waiting)
            raise NoEffect(
                f"{where}: ClockTicked {effect.subject} had no effect within {timeout:g}s: the "
                f"allocator core has not processed it on partition(s) {partitions} of "
                f"{watcher.commands_topic} (is `fulfil allocator` running?)"
            )


def _ids(path: Path) -> set[str]:
    """The envelope ids in the file (valid or not: only the ids are read)."""
    found: set[str] = set()
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                event_id = _field(line, "id")
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
    """Publish each line once the previous one had its effect (see the module docs of
    `fulfil publish --ordered` in fulfil/cli_tools.py). Raises NoEffect at the first
    line with no effect before `timeout` seconds; nothing after it is published."""
    refuse_outputs(path)
    report = OrderedReport()
    counts: Counter[str] = Counter()
    watcher = EffectWatcher(settings, _ids(path))
    prod = producer(settings)
    await prod.start()
    try:
        await watcher.start()
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
                effect = Effect(line_no, event.id, event.type, subject_of(event))
                where = f"{path}:{line_no}"
                if isinstance(event, ClockTicked):
                    commands = settings.topic(COMMANDS)
                    positions = []
                    for partition in watcher.command_partitions:
                        ticked = tick(event.data.now, partition)
                        watcher.wanted.add(ticked.id)  # its outputs name it as their cause
                        sent = await prod.send_and_wait(
                            commands,
                            encode(ticked),
                            partition=partition,
                            headers=[("fulfil-event-type", b"ClockTicked")],
                        )
                        positions.append((partition, sent.offset))
                    counts[commands] += len(positions)
                    report.ticks += 1
                    await _wait_for_ticks(watcher, effect, positions, timeout, where)
                else:
                    spec = spec_for(event)
                    topic = settings.topic(spec.topic)
                    sent = await prod.send_and_wait(topic, raw, key=spec.key(event))
                    counts[topic] += 1
                    report.published += 1
                    await _wait_for_record(watcher, effect, sent, timeout, where)
                report.effects.append(effect)
                if on_effect is not None:
                    on_effect(effect)
    finally:
        await prod.stop()
        await watcher.stop()
    report.published += report.ticks
    report.by_topic = dict(counts)
    return report
