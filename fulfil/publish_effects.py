"""What a line published by `fulfil publish --ordered` led to, read from the allocator's logs.

`EffectWatcher` reads, from where the logs ended when publishing started, the
command log (where the router put a line), `allocations.v1` (the outputs naming
it) and the input dead-letter topics; `wait_for_effect` waits for one line's
effect (see fulfil/publishing.py for the rule and why it is sound)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from fulfil_platform import kafka
from fulfil_platform.config import Settings
from fulfil_platform.dead_letter_writer import H_KIND, H_OFFSET, H_PARTITION, H_REASON, H_TOPIC
from schemas.allocation_headers import H_COMMAND_PARTITION, position_of
from schemas.registry import ALLOCATIONS, COMMANDS, DLQ_SUFFIX, INVENTORY, ORDERS


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


class NoEffect(RuntimeError):
    """A line had no effect before its deadline (or could not have one: a topic is
    missing); nothing after it was published."""


SUBJECT_FIELDS = ("order_id", "receipt_id", "adjustment_id", "inbound_id", "alert_id", "sku")


def subject_of(event: Any) -> str:
    """The business key a line is about, for progress lines (never customer data)."""
    data = event.data
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
                    event_id = envelope_field(record.value, "id")
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

    def take_outputs(self, position: Position, cause: str) -> list[str]:
        found = sorted(self.outputs.pop(position, []))
        return [kind for _, kind, by in found if by == cause]

    def claim(self, event_id: str) -> Position | None:
        """The command position of the line being waited for (its id's oldest unclaimed)."""
        positions = self.commands.get(event_id)
        return positions[0] if positions else None

    def release(self, event_id: str) -> None:
        positions = self.commands.get(event_id)
        if positions:
            positions.pop(0)


def envelope_field(value: bytes | None, name: str) -> str | None:
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    found = doc.get(name) if isinstance(doc, dict) else None
    return found if isinstance(found, str) else None


async def wait_for_effect(
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
