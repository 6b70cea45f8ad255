"""`fulfil trace ORDER_ID`: one order's causal history across the topics.

What is read, and why no more than that:

1. `orders.v1`, every partition (upstream keys it as it likes), and the dead
   letter topics: records whose bytes contain the quoted order id are parsed;
   the first OrderPlaced/OrderCancelled of the order names its warehouse.
2. `allocations.v1`, only the partition of that warehouse (the core writes the
   outputs of command partition p to allocations partition p, and the command
   partition is the producer's DefaultPartitioner over the warehouse key):
   outputs with `data.order_id == ORDER_ID`. Their `causation_id`s name the
   inputs that caused them; their headers name command partition and offset.
3. `allocator.commands.v1` (that partition) and `inventory.v1` (the partition
   of the warehouse key), together: the order's own inputs and the causing
   inputs by id (their command offsets and inventory positions), plus the
   InboundScheduled / ShipmentDelayed events of the inbounds those name.

Candidate records are found with a bytes search before any JSON parsing, and
nothing else is kept, so memory stays flat on a large log. Ends are taken from
the high watermark of fetch responses (Tansu's ListOffsets can be wrong; see
fulfil.kafka.read_ranges). Notifications come from the notifier's outbox
(`notifier_outbox`) when DATABASE_URL is set: status, channel, attempts —
never the rendered message or the address.
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from fulfil import kafka
from fulfil.config import Settings
from fulfil.dlq import H_KIND, H_OFFSET, H_PARTITION, H_REASON, H_STAGE, H_TOPIC
from fulfil.logs import redact_pii
from schemas.registry import ALLOCATIONS, COMMANDS, DLQ_SUFFIX, INVENTORY, ORDERS
from services.allocator.service_layer.partition import H_COMMAND_OFFSET, H_OUTPUT_INDEX

ORDER_INPUTS = frozenset({"OrderPlaced", "OrderCancelled"})
INBOUND_EVENTS = frozenset({"InboundScheduled", "ShipmentDelayed"})
_INBOUND_MARKERS = (b'"InboundScheduled"', b'"ShipmentDelayed"')
# Progress callback: (pass name, records read, records expected or None).
Progress = Callable[[str, int, int | None], None]
_LATEST = datetime.max.replace(tzinfo=UTC)


class TraceError(Exception):
    """The trace cannot be made (e.g. a topic is missing); one line for the operator."""


@dataclass
class Entry:
    """One record in the order's history."""

    topic: str
    partition: int
    offset: int
    type: str
    id: str | None
    causation_id: str | None
    occurred_at: str | None
    relation: str  # order | output | cause | inbound | dead_letter
    doc: dict[str, Any] | None = None  # the parsed envelope (None: not JSON)
    raw: bytes = b""
    command_offsets: list[int] = field(default_factory=list)
    output_index: int | None = None
    dead_letter: dict[str, Any] | None = None
    dead_lettered_as: str | None = None  # this record's dead letter (DLQ topic:partition:offset)

    @property
    def data(self) -> dict[str, Any]:
        data = (self.doc or {}).get("data")
        return data if isinstance(data, dict) else {}

    def sort_key(self) -> tuple[datetime, int, int, str, int, int]:
        moment = _parse_time(self.occurred_at)
        command = self.command_offsets[0] if self.command_offsets else 1 << 62
        index = 0 if self.output_index is None else 1 + self.output_index
        return (moment, command, index, self.topic, self.partition, self.offset)


@dataclass
class Trace:
    order_id: str
    warehouse_id: str | None
    command_partition: int | None
    inventory_partition: int | None
    entries: list[Entry]
    notifications: list[dict[str, Any]]
    notes: list[str]
    records_read: int
    seconds: float
    topics: dict[str, str]  # base name -> actual (prefixed) name

    @property
    def found(self) -> bool:
        return bool(self.entries)

    def customer(self) -> dict[str, Any] | None:
        for entry in self.entries:
            if entry.type == "OrderPlaced" and entry.relation == "order":
                customer = entry.data.get("customer")
                return customer if isinstance(customer, dict) else None
        return None

    def document(self, show_pii: bool = False) -> dict[str, Any]:
        timeline = []
        for entry in self.entries:
            item: dict[str, Any] = {
                "topic": entry.topic,
                "partition": entry.partition,
                "offset": entry.offset,
                "type": entry.type,
                "id": entry.id,
                "causation_id": entry.causation_id,
                "occurred_at": entry.occurred_at,
                "summary": summarize(entry, show_pii),
                "relation": entry.relation,
                "command_offset": entry.command_offsets[0] if entry.command_offsets else None,
                "output_index": entry.output_index,
            }
            if len(entry.command_offsets) > 1:
                item["command_copies"] = entry.command_offsets
            if entry.dead_lettered_as is not None:
                item["dead_lettered_as"] = entry.dead_lettered_as
            if entry.doc is not None:
                item["data"] = entry.data if show_pii else _redact(entry.data)
            if entry.dead_letter is not None:
                item["dead_letter"] = entry.dead_letter
                text = entry.raw[:2_000].decode("utf-8", "replace")
                item["raw"] = text if show_pii else _redact({"raw": text})["raw"]
            timeline.append(item)
        return {
            "order_id": self.order_id,
            "warehouse_id": self.warehouse_id,
            "command_partition": self.command_partition,
            "partitions": {
                self.topics[ORDERS]: "all",
                self.topics[COMMANDS]: self.command_partition,
                self.topics[ALLOCATIONS]: self.command_partition,
                self.topics[INVENTORY]: self.inventory_partition,
            },
            "timeline": timeline,
            "notifications": self.notifications,
            "notes": self.notes,
            "scanned": {"records": self.records_read, "seconds": round(self.seconds, 3)},
        }


def _redact(value: dict[str, Any]) -> dict[str, Any]:
    return redact_pii(None, "", value)


def _parse_time(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return _LATEST
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return _LATEST


def _loads(value: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _quoted(text: str) -> list[bytes]:
    """The ways a JSON producer may write `text` as a string (escaped or not)."""
    forms = {orjson.dumps(text), json.dumps(text).encode()}
    return sorted(forms)


def partition_for(key: str, partitions: Iterable[int]) -> int:
    """The partition the producers' DefaultPartitioner picks for `key` (see BatchSender)."""
    ordered = sorted(partitions)
    return DefaultPartitioner()(key.encode(), ordered, ordered)


# ---------------------------------------------------------------- reading


class Matcher:
    """Does a byte range mention any of the needles? (`bytes.find` / one regex, in C)."""

    def __init__(self, needles: Iterable[bytes] = (), pattern: re.Pattern[bytes] | None = None, everything: bool = False):
        self.needles = sorted(set(needles))
        self.pattern = pattern
        if pattern is None and len(self.needles) > 4:
            self.pattern = re.compile(b"|".join(re.escape(n) for n in self.needles))
        self.everything = everything

    def search(self, raw: bytes, start: int = 0, end: int | None = None) -> bool:
        if self.everything:
            return True
        end = len(raw) if end is None else end
        if self.pattern is not None:
            return self.pattern.search(raw, start, end) is not None
        return any(raw.find(needle, start, end) != -1 for needle in self.needles)


_BATCH = struct.Struct(">qi")  # baseOffset, batchLength
_MAGIC_AT, _ATTRIBUTES_AT, _LAST_DELTA_AT = 16, 21, 23
_COMPRESSION, _CONTROL = 0x07, 0x20
_OFFSET_OUT_OF_RANGE = 1
_RETRIABLE = {3, 5, 6, 9}  # unknown topic/partition, leader not available, not leader, replica not available


class RawReader:
    """Reads partitions with plain Fetch requests and decodes only the record
    batches whose bytes mention what we look for.

    An uncompressed v2 batch carries keys and values verbatim, so a bytes search
    over the batch decides whether any record in it can match; everything else is
    skipped by its header (base offset, last offset delta) without building a
    single record object. Compressed or legacy batches are decoded and searched
    record by record. The end of a partition is the high watermark of the fetch
    response (never ListOffsets: see notes/tansu.md).
    """

    def __init__(self, settings: Settings, *, partition_bytes: int = 16 * 1024 * 1024):
        self.settings = settings
        self.partition_bytes = partition_bytes
        self.client: Any = None

    async def start(self) -> None:
        from aiokafka.client import AIOKafkaClient

        self.client = AIOKafkaClient(**self.settings.kafka_client_options())
        await self.client.bootstrap()  # metadata of every topic

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    def partitions(self, topic: str) -> list[TopicPartition]:
        found = self.client.cluster.partitions_for_topic(topic)
        return [TopicPartition(topic, p) for p in sorted(found or ())]

    async def scan(
        self,
        parts: list[TopicPartition],
        match: Callable[[str], Matcher],
        handle: Callable[[TopicPartition, list[Any]], None],
        progress: Callable[[int, int | None], None],
        *,
        workers: int = 4,
        chunk: int = 100_000,
        deadline_s: float = 30.0,
    ) -> int:
        """Every record of `parts` from the log start to the high watermark
        whose batch `match(topic)` finds goes to `handle` (objects with offset,
        key, value, headers, timestamp; not in offset order across chunks).
        Returns the number of offsets covered.

        One fetch per partition learns its high watermark; the rest is split
        into ranges of about `chunk` offsets read by `workers` concurrent
        fetch loops (the broker serves them in parallel).
        """
        matchers = {tp.topic: match(tp.topic) for tp in parts}
        done: dict[TopicPartition, int] = {tp: 0 for tp in parts}
        ends: dict[TopicPartition, int] = {}
        progress(0, None)

        def report() -> None:
            known = sum(ends.values()) if len(ends) == len(parts) else None
            progress(sum(done.values()), known)

        # Round one: every partition from its log start; learns the high watermarks.
        ranges: list[tuple[TopicPartition, int, int]] = []
        for tp, (start, position, highwater) in (await self._first_round(parts, matchers, handle)).items():
            ends[tp] = highwater - start
            done[tp] = position - start
            for lo in range(position, highwater, chunk):
                ranges.append((tp, lo, min(lo + chunk, highwater)))
        report()
        ranges.reverse()  # pop() from the end takes them in log order

        async def worker() -> None:
            while ranges:
                tp, lo, hi = ranges.pop()
                await self._read_range(tp, lo, hi, matchers[tp.topic], handle, done, report, deadline_s)

        await asyncio.gather(*(worker() for _ in range(max(1, workers))))
        report()
        return sum(done.values())

    def _fetch_request(self, partitions: list[tuple[TopicPartition, int]]) -> Any:
        from aiokafka.protocol.fetch import FetchRequest

        topics: dict[str, list[tuple[int, int, int]]] = {}
        for tp, offset in partitions:
            topics.setdefault(tp.topic, []).append((tp.partition, offset, self.partition_bytes))
        # A short max wait: an empty partition is answered after it (Tansu answers
        # max_wait 0 with no partitions at all), a full one at once.
        return FetchRequest(10, 1, 64 * 1024 * 1024, 0, list(topics.items()))

    def _leader(self, tp: TopicPartition) -> int:
        leader = self.client.cluster.leader_for_partition(tp)
        if leader is None or leader == -1:
            raise TraceError(f"no leader for {tp.topic}[{tp.partition}]")
        return leader

    async def _request(self, tp: TopicPartition, offset: int) -> tuple[int, int, Any]:
        """One Fetch for one partition: (error code, high watermark, rest of the partition data)."""
        for attempt in range(10):
            response = await self.client.send(self._leader(tp), self._fetch_request([(tp, offset)]))
            for _topic, partitions in response.topics:
                for _partition, error, highwater, *rest in partitions:
                    if error in _RETRIABLE and attempt < 9:
                        break
                    return error, highwater, (response.API_VERSION, rest)
            await self.client.force_metadata_update()
        raise TraceError(f"cannot read {tp.topic}[{tp.partition}]: no answer")

    async def _first_round(
        self, parts: list[TopicPartition], matchers: dict[str, Matcher], handle: Callable[[TopicPartition, list[Any]], None]
    ) -> dict[TopicPartition, tuple[int, int, int]]:
        """One Fetch per broker for every partition from its log start: (log start, next offset, high watermark)."""
        starts = dict.fromkeys(parts, 0)
        result: dict[TopicPartition, tuple[int, int, int]] = {}
        for _ in range(10):
            todo = [tp for tp in parts if tp not in result]
            if not todo:
                return result
            by_leader: dict[int, list[tuple[TopicPartition, int]]] = {}
            for tp in todo:
                by_leader.setdefault(self._leader(tp), []).append((tp, starts[tp]))
            responses = await asyncio.gather(
                *(self.client.send(leader, self._fetch_request(batch)) for leader, batch in by_leader.items())
            )
            refresh = False
            for response in responses:
                for topic, partitions in response.topics:
                    for partition, error, highwater, *rest in partitions:
                        tp = TopicPartition(topic, partition)
                        if error == _OFFSET_OUT_OF_RANGE and response.API_VERSION >= 5:
                            starts[tp] = rest[1]  # retention moved the log start
                            continue
                        if error in _RETRIABLE:
                            refresh = True
                            continue
                        self._check(tp, error)
                        start = starts[tp]
                        position, found = self._records(rest[-1] or b"", start, highwater, matchers[topic])
                        if found:
                            handle(tp, found)
                        result[tp] = (start, min(max(position, start), highwater), highwater)
            if refresh:
                await self.client.force_metadata_update()
        raise TraceError("partition leaders keep moving; try again")

    async def _read_range(
        self, tp: TopicPartition, lo: int, hi: int, matcher: Matcher,
        handle: Callable[[TopicPartition, list[Any]], None], done: dict[TopicPartition, int],
        report: Callable[[], None], deadline_s: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + deadline_s
        while lo < hi:
            error, _highwater, (_version, rest) = await self._request(tp, lo)
            self._check(tp, error)
            position, found = self._records(rest[-1] or b"", lo, hi, matcher)
            if found:
                handle(tp, found)
            if position > lo:
                done[tp] += min(position, hi) - lo
                lo = position
                give_up = loop.time() + deadline_s
                report()
            elif loop.time() > give_up:
                raise TraceError(f"no progress reading {tp.topic}[{tp.partition}] at offset {lo} in {deadline_s:.0f}s")

    @staticmethod
    def _check(tp: TopicPartition, error: int) -> None:
        if error:
            from aiokafka.errors import for_code

            raise TraceError(f"cannot read {tp.topic}[{tp.partition}]: {for_code(error).__name__}")

    @staticmethod
    def _records(raw: bytes, position: int, stop: int, matcher: Matcher) -> tuple[int, list[Any]]:
        """(next offset, records in [position, stop) of the matching batches)."""
        from aiokafka.record.memory_records import MemoryRecords

        found: list[Any] = []
        next_offset = position
        pos, size = 0, len(raw)
        while pos + 12 <= size:
            base, length = _BATCH.unpack_from(raw, pos)
            end = pos + 12 + length
            if end > size or base >= stop:
                break  # a partial batch (fetched again next time), or past the range
            magic = raw[pos + _MAGIC_AT]
            if magic == 2:
                attributes = int.from_bytes(raw[pos + _ATTRIBUTES_AT:pos + _ATTRIBUTES_AT + 2], "big")
                last = base + int.from_bytes(raw[pos + _LAST_DELTA_AT:pos + _LAST_DELTA_AT + 4], "big", signed=True)
                plain = not attributes & _COMPRESSION
                if not attributes & _CONTROL and last >= position and (not plain or matcher.search(raw, pos, end)):
                    for record in MemoryRecords(raw[pos:end]).next_batch():
                        if position <= record.offset < stop and (plain or matcher.search(record.value or b"")):
                            found.append(record)
                next_offset = max(next_offset, last + 1)
            else:  # legacy message set: decode it
                for record in MemoryRecords(raw[pos:end]).next_batch():
                    if position <= record.offset < stop and matcher.search(record.value or b""):
                        found.append(record)
                    next_offset = max(next_offset, record.offset + 1)
            pos = end
        return next_offset, found


def _header(record: Any, name: str) -> str | None:
    return kafka.header(record.headers, name)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def trace_order(
    settings: Settings,
    order_id: str,
    *,
    warehouse_id: str | None = None,
    progress: Progress | None = None,
) -> Trace:
    """Collect the order's history (see the module docstring for what is read)."""
    started = time.monotonic()
    report = progress or (lambda name, done, total: None)
    topics = {base: settings.topic(base) for base in (ORDERS, INVENTORY, COMMANDS, ALLOCATIONS)}
    dlq_topics = [settings.topic(base) + DLQ_SUFFIX for base in (ORDERS, INVENTORY, COMMANDS, ALLOCATIONS)]
    order_needles = _quoted(order_id)
    mentions_order = Matcher(order_needles)
    # Dead letters may be anything: the bare id between non-id characters counts.
    bare = Matcher(pattern=re.compile(rb"(?<![\w.\-])" + re.escape(order_id.encode()) + rb"(?![\w.\-])"))
    notes: list[str] = []
    entries: list[Entry] = []
    read = 0

    reader = RawReader(settings)
    await reader.start()
    try:
        partitions = reader.partitions

        if not partitions(topics[ORDERS]):
            raise TraceError(f"topic {topics[ORDERS]} does not exist (run `fulfil topics create`)")

        # ---- pass 1: orders.v1 (all partitions, unless the warehouse is given) and the DLQs
        own: list[Entry] = []
        warehouses: list[str] = []

        def keep_orders(tp: TopicPartition, records: list[Any]) -> None:
            for record in records:
                value = record.value
                if value is None:
                    continue
                if tp.topic in dlq_set:
                    if bare.search(value):
                        entries.append(_dead_letter(tp, record))
                    continue
                if not mentions_order.search(value):
                    continue
                doc = _loads(value)
                data = doc.get("data") if doc else None
                if not isinstance(data, dict) or data.get("order_id") != order_id or doc.get("type") not in ORDER_INPUTS:
                    continue
                own.append(_entry(tp, record, doc, "order"))

        dlq_set = set(dlq_topics)
        first_parts = [tp for t in dlq_topics for tp in partitions(t)]
        if warehouse_id is None:
            first_parts = partitions(topics[ORDERS]) + first_parts
        read += await reader.scan(
            first_parts, lambda topic: bare if topic in dlq_set else mentions_order, keep_orders,
            lambda d, t: report("orders + dead letters", d, t),
        )

        own.sort(key=lambda e: (e.type != "OrderPlaced", e.sort_key(), e.partition, e.offset))
        for entry in own:  # the warehouse of the (first) OrderPlaced comes first
            wh = entry.data.get("warehouse_id")
            if isinstance(wh, str) and wh not in warehouses:
                warehouses.append(wh)
        if warehouse_id is None:
            if warehouses:
                warehouse_id = warehouses[0]
                if len(warehouses) > 1:
                    notes.append(
                        f"order id {order_id} appears in warehouses {', '.join(warehouses)}; "
                        f"showing {warehouse_id} (use --warehouse to pick another)"
                    )
            else:
                for entry in entries:  # a dead letter may still name the warehouse
                    wh = entry.data.get("warehouse_id")
                    if isinstance(wh, str) and entry.data.get("order_id") == order_id:
                        warehouse_id = wh
                        break
        own = [e for e in own if e.data.get("warehouse_id") == warehouse_id]

        command_partition = inventory_partition = None
        outputs: list[Entry] = []
        if warehouse_id is not None:
            command_parts = partitions(topics[COMMANDS])
            if not command_parts:
                notes.append(f"topic {topics[COMMANDS]} does not exist: nothing was routed yet")
            else:
                command_partition = partition_for(warehouse_id, (tp.partition for tp in command_parts))
            inventory_parts = partitions(topics[INVENTORY])
            if inventory_parts:
                inventory_partition = partition_for(warehouse_id, (tp.partition for tp in inventory_parts))

        # ---- pass 2: the warehouse's allocations partition
        if command_partition is not None:
            allocations = TopicPartition(topics[ALLOCATIONS], command_partition)
            if allocations not in partitions(topics[ALLOCATIONS]):
                notes.append(f"{topics[ALLOCATIONS]} has no partition {command_partition}")
            else:

                def keep_outputs(tp: TopicPartition, records: list[Any]) -> None:
                    for record in records:
                        value = record.value
                        if value is None or not mentions_order.search(value):
                            continue
                        doc = _loads(value)
                        data = doc.get("data") if doc else None
                        if not isinstance(data, dict) or data.get("order_id") != order_id:
                            continue
                        if data.get("warehouse_id") != warehouse_id:
                            continue
                        entry = _entry(tp, record, doc, "output")
                        offset = _int(_header(record, H_COMMAND_OFFSET))
                        entry.command_offsets = [offset] if offset is not None else []
                        entry.output_index = _int(_header(record, H_OUTPUT_INDEX))
                        outputs.append(entry)

                read += await reader.scan(
                    [allocations], lambda topic: mentions_order, keep_outputs, lambda d, t: report("allocations", d, t)
                )

        # ---- pass 3: the command partition and the inventory partition, together
        wanted = {e.causation_id for e in outputs if e.causation_id} | {e.id for e in own if e.id}
        commands: dict[str, list[tuple[int, dict[str, Any], Any]]] = {}
        inventory: dict[str, list[tuple[TopicPartition, Any, dict[str, Any]]]] = {}
        inbound_records: list[tuple[TopicPartition, Any, dict[str, Any]]] = []
        if command_partition is not None:
            is_wanted = Matcher([n for i in wanted for n in _quoted(i)] + order_needles)
            is_inbound = Matcher(_INBOUND_MARKERS)
            either = Matcher([*is_wanted.needles, *is_inbound.needles])
            command_tp = TopicPartition(topics[COMMANDS], command_partition)

            def keep_inputs(tp: TopicPartition, records: list[Any]) -> None:
                for record in records:
                    value = record.value
                    if value is None:
                        continue
                    hit = is_wanted.search(value)
                    inbound = is_inbound.search(value)
                    if not (hit or inbound):
                        continue
                    doc = _loads(value)
                    if doc is None:
                        continue
                    event_id = doc.get("id")
                    data = doc.get("data")
                    if not isinstance(data, dict) or data.get("warehouse_id") != warehouse_id:
                        continue
                    if doc.get("type") in ORDER_INPUTS and data.get("order_id") == order_id:
                        hit = True
                    elif event_id not in wanted:
                        hit = False
                    if tp == command_tp:
                        if hit or inbound:
                            commands.setdefault(event_id, []).append((record.offset, doc, record))
                        if inbound and not hit:
                            inbound_records.append((tp, record, doc))
                    elif hit:
                        inventory.setdefault(event_id, []).append((tp, record, doc))
                    elif inbound:
                        inbound_records.append((tp, record, doc))

            parts = [command_tp]
            if inventory_partition is not None:
                parts.append(TopicPartition(topics[INVENTORY], inventory_partition))
            read += await reader.scan(
                parts, lambda topic: either, keep_inputs, lambda d, t: report("commands + inventory", d, t)
            )
    finally:
        await reader.close()

    # ---- assemble: one entry per source record, with its command offsets
    by_id: dict[str, list[Entry]] = {}
    for entry in own:
        by_id.setdefault(entry.id or "", []).append(entry)
    for event_id, copies in inventory.items():
        if event_id in by_id:
            continue
        for tp, record, doc in copies:
            by_id.setdefault(event_id, []).append(_entry(tp, record, doc, "cause"))
    for event_id, copies in commands.items():
        copies.sort(key=lambda copy: copy[0])
        offsets = [offset for offset, _, _ in copies]
        if event_id in by_id:
            for entry in by_id[event_id]:
                entry.command_offsets = offsets
            continue
        _, doc, record = copies[0]
        is_own = doc.get("type") in ORDER_INPUTS and (doc.get("data") or {}).get("order_id") == order_id
        if not (is_own or event_id in wanted):
            continue  # an inbound event: dealt with below
        entry = _entry(TopicPartition(topics[COMMANDS], command_partition or 0), record, doc, "order" if is_own else "cause")
        entry.command_offsets = offsets
        by_id[event_id] = [entry]
    inputs = [entry for group in by_id.values() for entry in group]

    # The inbounds named by the causing inputs (and by ETA changes): their whole story.
    inbound_ids: set[str] = set()
    for entry in inputs:
        if entry.relation == "cause" and isinstance(entry.data.get("inbound_id"), str):
            inbound_ids.add(entry.data["inbound_id"])
    for entry in outputs:
        cause = entry.data.get("cause")
        if isinstance(cause, dict) and isinstance(cause.get("inbound_id"), str):
            inbound_ids.add(cause["inbound_id"])
    seen = {entry.id for entry in inputs}
    inbound_by_id: dict[str, Entry] = {}
    for tp, record, doc in sorted(inbound_records, key=lambda item: (item[0].topic, item[0].partition, item[1].offset)):
        event_id = doc.get("id")
        if (doc.get("data") or {}).get("inbound_id") not in inbound_ids or event_id in seen:
            continue
        if tp.topic == topics[COMMANDS]:
            if event_id not in inbound_by_id:
                entry = _entry(tp, record, doc, "inbound")
                inbound_by_id[event_id] = entry
            continue
        entry = _entry(tp, record, doc, "inbound")
        previous = inbound_by_id.get(event_id)
        if previous is None or previous.topic == topics[COMMANDS]:
            inbound_by_id[event_id] = entry
    for event_id, entry in inbound_by_id.items():
        entry.command_offsets = sorted(offset for offset, _, _ in commands.get(event_id, []))

    # A record of the order that the router dead-lettered: say so on the record itself.
    refs = {}
    for dead in entries:
        info = dead.dead_letter or {}
        refs[(info.get("source_topic"), info.get("source_partition"), info.get("source_offset"))] = (
            f"{dead.topic}:{dead.partition}:{dead.offset}"
        )
    for entry in inputs:
        entry.dead_lettered_as = refs.get((entry.topic, entry.partition, entry.offset))

    entries = _timeline(inputs + list(inbound_by_id.values()) + outputs + entries)
    notifications: list[dict[str, Any]] = []
    if warehouse_id is not None and entries:
        notifications, note = await outbox_rows(settings, warehouse_id, order_id)
        if note:
            notes.append(note)
    if warehouse_id is not None and command_partition is not None and own and not outputs:
        notes.append("no allocation events yet: is the allocator running and caught up?")
    return Trace(
        order_id=order_id,
        warehouse_id=warehouse_id,
        command_partition=command_partition,
        inventory_partition=inventory_partition,
        entries=entries,
        notifications=notifications,
        notes=notes,
        records_read=read,
        seconds=time.monotonic() - started,
        topics=topics,
    )


def _timeline(entries: list[Entry]) -> list[Entry]:
    """Processing order: what the allocator read, in command-log order (each input
    followed by its outputs); records that never reached the command log (dead
    letters, inputs not routed yet) are merged in by `occurred_at`."""
    placed = sorted((e for e in entries if e.command_offsets), key=lambda e: (e.command_offsets[0], e.sort_key()[2:]))
    loose = sorted((e for e in entries if not e.command_offsets), key=Entry.sort_key)
    out: list[Entry] = []
    i = 0
    for entry in placed:
        moment = _parse_time(entry.occurred_at)
        while i < len(loose) and _parse_time(loose[i].occurred_at) < moment:
            out.append(loose[i])
            i += 1
        out.append(entry)
    return out + loose[i:]


def _entry(tp: TopicPartition, record: Any, doc: dict[str, Any], relation: str) -> Entry:
    def text(name: str) -> str | None:
        value = doc.get(name)
        return value if isinstance(value, str) else None

    return Entry(
        topic=tp.topic,
        partition=tp.partition,
        offset=record.offset,
        type=text("type") or "?",
        id=text("id"),
        causation_id=text("causation_id"),
        occurred_at=text("occurred_at"),
        relation=relation,
        doc=doc,
    )


def _dead_letter(tp: TopicPartition, record: Any) -> Entry:
    doc = _loads(record.value)
    entry = _entry(tp, record, doc or {}, "dead_letter")
    entry.doc = doc
    entry.raw = record.value
    entry.dead_letter = {
        "kind": _header(record, H_KIND),
        "reason": _header(record, H_REASON),
        "source_topic": _header(record, H_TOPIC),
        "source_partition": _int(_header(record, H_PARTITION)),
        "source_offset": _int(_header(record, H_OFFSET)),
        "stage": _header(record, H_STAGE),
    }
    return entry


# ---------------------------------------------------------------- notifications

_OUTBOX_SQL = """
SELECT event_id, channel, kind, event_type, status, attempts, created_at, sent_at,
       next_attempt_at, superseded_by, last_error, note
FROM notifier_outbox
WHERE warehouse_id = $1 AND order_id = $2
ORDER BY created_at, id
"""


async def outbox_rows(settings: Settings, warehouse_id: str, order_id: str) -> tuple[list[dict[str, Any]], str | None]:
    """The notifier's outbox rows of the order, without message or recipient; (rows, note)."""
    if not settings.database_url:
        return [], "DATABASE_URL is not set: notifications not shown"
    import asyncpg

    try:
        conn = await asyncpg.connect(settings.database_url, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return [], f"notifications not shown: cannot connect to PostgreSQL ({type(exc).__name__})"
    try:
        if await conn.fetchval("SELECT to_regclass('notifier_outbox')") is None:
            return [], "notifications not shown: the notifier's outbox does not exist yet"
        rows = await conn.fetch(_OUTBOX_SQL, warehouse_id, order_id)
    except asyncpg.PostgresError as exc:
        return [], f"notifications not shown: {type(exc).__name__}"
    finally:
        await conn.close()
    out = []
    for row in rows:
        item = {
            key: (value.isoformat() if isinstance(value, datetime) else value) for key, value in dict(row).items()
        }
        # Server replies may quote an address: scrubbed always, like `fulfil notifications`.
        out.append(_redact(item))
    return out, None


# ---------------------------------------------------------------- summaries


class _Facts(dict):
    """An event's data for summaries: a missing required field reads "?" (dead letters)."""

    OPTIONAL = frozenset({"inbound_id", "supplier", "priority", "cause", "lines", "shipment_id"})

    def get(self, key: str, default: Any = None) -> Any:
        value = super().get(key)
        if value is None:
            return default if key in self.OPTIONAL else "?"
        return value


def _lines(lines: Any, limit: int = 4) -> str:
    if not isinstance(lines, list):
        return ""
    parts = []
    for line in lines[:limit]:
        if not isinstance(line, dict):
            continue
        text = f"{line.get('sku')}×{line.get('quantity')}"
        if line.get("unit_price") is not None:
            text += f" @ {line.get('unit_price')} {line.get('currency')}"
        parts.append(text)
    if len(lines) > limit:
        parts.append(f"+{len(lines) - limit} more")
    return ", ".join(parts)


def _allocation_lines(lines: Any) -> str:
    if not isinstance(lines, list):
        return ""
    parts = []
    for line in lines:
        if not isinstance(line, dict):
            continue
        facts = [f"{name} {line[name]}" for name in ("shipped", "allocated", "backordered", "reserved", "rejected", "cancelled") if line.get(name)]
        if line.get("previous_eta") is not None or line.get("eta") is not None:
            if line.get("previous_eta") is not None:
                facts.append(f"eta {line.get('previous_eta')} → {line.get('eta') or 'no date'}")
            elif line.get("backordered"):
                facts.append(f"eta {line.get('eta')}")
        elif line.get("backordered"):
            facts.append("eta: no date yet")
        if line.get("reason"):
            facts.append(str(line["reason"]))
        parts.append(f"L{line.get('line_no')} {line.get('sku')}×{line.get('quantity')}: {', '.join(facts) or 'no change'}")
    return "; ".join(parts)


def summarize(entry: Entry, show_pii: bool = False) -> str:
    """One line about the event. It never quotes the customer block; free text
    from upstream (reasons) is scrubbed of e-mail addresses unless `show_pii`."""
    if entry.dead_letter is not None:
        dl = entry.dead_letter
        where = f" from {dl['source_topic']}[{dl['source_partition']}]@{dl['source_offset']}" if dl.get("source_topic") else ""
        text = f"dead letter{where}: {dl.get('kind') or '?'}: {dl.get('reason') or ''}".strip()
    else:
        text = _summary(entry)
    if entry.dead_lettered_as is not None:
        text += f" [dead-lettered: {entry.dead_lettered_as}]"
    return text if show_pii else _redact({"summary": text})["summary"]


def _summary(entry: Entry) -> str:
    d = _Facts(entry.data)
    kind = entry.type
    if kind == "OrderPlaced":
        text = f"order {d.get('order_id')}: {_lines(d.get('lines'))}; {d.get('fulfilment_policy', 'ship_partial')}"
        return text + (f"; priority {d['priority']}" if d.get("priority") else "")
    if kind == "OrderCancelled":
        return f"order {d.get('order_id')} cancelled: {d.get('reason')}"
    if kind == "StockReceived":
        via = f" against inbound {d['inbound_id']}" if d.get("inbound_id") else " (no inbound)"
        return f"{d.get('sku')} +{d.get('quantity')} received{via} (receipt {d.get('receipt_id')})"
    if kind == "StockAdjusted":
        delta = d.get("delta")
        sign = "+" if isinstance(delta, int) and delta > 0 else ""
        return f"{d.get('sku')} {sign}{delta} adjusted: {d.get('reason')}"
    if kind == "InboundScheduled":
        supplier = f" from {d['supplier']}" if d.get("supplier") else ""
        return f"inbound {d.get('inbound_id')}{supplier} expected {d.get('eta')}: {_lines(d.get('lines'))}"
    if kind == "ShipmentDelayed":
        return f"inbound {d.get('inbound_id')} delayed to {d.get('new_eta')}: {d.get('reason')}"
    if kind == "SkuPolicySet":
        return f"{d.get('sku')}: backorderable={d.get('backorderable')}, discontinued={d.get('discontinued')}"
    if kind == "BackorderEtaChanged":
        cause = d.get("cause") if isinstance(d.get("cause"), dict) else {}
        why = cause.get("event_type") or "?"
        if cause.get("inbound_id"):
            why += f" of inbound {cause['inbound_id']}"
        if cause.get("reason"):
            why += f": {cause['reason']}"
        return f"{_allocation_lines(d.get('lines'))} (cause: {why})"
    if kind in ("OrderAllocated", "PartiallyShipped", "BackorderAllocated"):
        return f"shipment {d.get('shipment_id')}: {_allocation_lines(d.get('lines'))}"
    if kind in ("Backordered", "OrderCancellationProcessed"):
        return f"{d.get('reason')}: {_allocation_lines(d.get('lines'))}"
    if kind == "OrderRejected":
        return _allocation_lines(d.get("lines"))
    return kind
