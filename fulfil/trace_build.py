"""`build_trace(plan, records) -> Trace`: one order's causal history from records, pure.

The records are whatever was read (consumer records or hand-built `Rec`s):
any superset of what `fulfil.tracing` reads gives the same trace, because
every rule lives here and the reader only skips records these rules would
drop. The reads come in three passes, each needing the previous one's answer
(`locate`, then `outputs_of`, then `inputs_of`):

1. `orders.v1`, every partition (upstream keys it as it likes), and the dead
   letter topics: records whose bytes contain the quoted order id are parsed;
   the first OrderPlaced/OrderCancelled of the order names its warehouse.
   With the warehouse given (`--warehouse`), `orders.v1` is not read.
2. `allocations.v1`, only the partition of that warehouse (the core writes the
   outputs of command partition p to allocations partition p, and the command
   partition is the producer's DefaultPartitioner over the warehouse key):
   outputs with `data.order_id == ORDER_ID`. Their `causation_id`s name the
   inputs that caused them; their headers name command partition and offset.
3. `allocator.commands.v1` (that partition) and `inventory.v1` (the partition
   of the warehouse key), together: the order's own inputs and the causing
   inputs by id (their command offsets and inventory positions), plus the
   InboundScheduled / ShipmentDelayed events of the inbounds those name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiokafka.partitioner import DefaultPartitioner

from fulfil.trace_model import Entry, Trace, parse_time
from fulfil_platform.dead_letter_writer import (
    H_KIND,
    H_OFFSET,
    H_PARTITION,
    H_REASON,
    H_STAGE,
    H_TOPIC,
)
from fulfil_platform.kafka import header
from schemas.allocation_headers import H_COMMAND_OFFSET, H_OUTPUT_INDEX
from schemas.registry import ALLOCATIONS, COMMANDS, DLQ_SUFFIX, INVENTORY, ORDERS

ORDER_INPUTS = frozenset({"OrderPlaced", "OrderCancelled"})
INBOUND_MARKERS = (b'"InboundScheduled"', b'"ShipmentDelayed"', b'"InboundCancelled"')
# Commands of the whole partition, not of a warehouse (no data.warehouse_id): the clock.
PARTITION_COMMANDS = frozenset({"ClockTicked"})
TRACED_TOPICS = (ORDERS, INVENTORY, COMMANDS, ALLOCATIONS)


class Record(Protocol):
    """What a trace needs of a record (aiokafka's ConsumerRecord has it)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass(frozen=True)
class Rec:
    """A record built by hand (tests, tools that read logs some other way)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


class Matcher:
    """Does a byte range mention any of the needles? (`bytes.find` / one regex, in C)."""

    def __init__(self, needles: Iterable[bytes] = (), pattern: re.Pattern[bytes] | None = None):
        self.needles = sorted(set(needles))
        self.pattern = pattern
        if pattern is None and len(self.needles) > 4:
            self.pattern = re.compile(b"|".join(re.escape(n) for n in self.needles))

    def search(self, raw: bytes) -> bool:
        if self.pattern is not None:
            return self.pattern.search(raw) is not None
        return any(needle in raw for needle in self.needles)

    def select(self, records: Iterable[Record]) -> list[Record]:
        """The records whose value matches (the scan's hot loop: one C call per record)."""
        if self.pattern is not None:
            search = self.pattern.search
            return [r for r in records if r.value is not None and search(r.value) is not None]
        if len(self.needles) == 1:
            needle = self.needles[0]
            return [r for r in records if r.value is not None and needle in r.value]
        return [r for r in records if r.value is not None and self.search(r.value)]


def quoted(text: str) -> list[bytes]:
    """The ways a JSON producer may write `text` as a string (escaped or not)."""
    return sorted({orjson.dumps(text), json.dumps(text).encode()})


def partition_for(key: str, partitions: Iterable[int]) -> int:
    """The partition the producers' DefaultPartitioner picks for `key` (see BatchSender)."""
    ordered = sorted(partitions)
    partition: int = DefaultPartitioner()(key.encode(), ordered, ordered)
    return partition


@dataclass
class TracePlan:
    """What is traced and what the cluster holds: order id, the topics' actual
    names (base -> prefixed), their partitions, and the warehouse if given."""

    order_id: str
    topics: dict[str, str]
    partitions: dict[str, list[int]]  # actual topic name -> its partitions
    warehouse_id: str | None = None

    def __post_init__(self) -> None:
        self.order_needles = quoted(self.order_id)
        self.mentions_order = Matcher(self.order_needles)
        # Dead letters may be anything: the bare id between non-id characters counts.
        self.bare = Matcher(
            pattern=re.compile(
                rb"(?<![\w.\-])" + re.escape(self.order_id.encode()) + rb"(?![\w.\-])"
            )
        )
        self.dlq_topics = [self.topics[base] + DLQ_SUFFIX for base in TRACED_TOPICS]
        self.rank = {
            name: i
            for i, name in enumerate([*(self.topics[b] for b in TRACED_TOPICS), *self.dlq_topics])
        }

    def topic(self, base: str) -> str:
        return self.topics[base]

    def first_pass(self) -> list[tuple[str, int]]:
        """Pass 1's partitions: orders.v1 (unless the warehouse is given) and the DLQs."""
        topics = (
            self.dlq_topics
            if self.warehouse_id is not None
            else [self.topic(ORDERS), *self.dlq_topics]
        )
        return [(t, p) for t in topics for p in self.partitions.get(t, [])]

    def first_matcher(self, topic: str) -> Matcher:
        return self.bare if topic in self.dlq_topics else self.mentions_order

    def input_matcher(self, wanted: set[str]) -> Matcher:
        """Pass 3's byte filter: a wanted id, the order id, or an inbound event."""
        return Matcher(
            [n for i in wanted for n in quoted(i)] + self.order_needles + list(INBOUND_MARKERS)
        )


@dataclass
class Located:
    """Pass 1's answer: the order's own inputs, its dead letters, its warehouse's partitions."""

    warehouse_id: str | None
    command_partition: int | None
    inventory_partition: int | None
    own: list[Entry]
    dead: list[Entry]
    notes: list[str] = field(default_factory=list)


@dataclass
class Inputs:
    """Pass 3's records by event id: command-log copies, inventory copies, inbound events."""

    commands: dict[Any, list[tuple[int, dict[str, Any], Record]]] = field(default_factory=dict)
    inventory: dict[Any, list[tuple[Record, dict[str, Any]]]] = field(default_factory=dict)
    inbound: list[tuple[Record, dict[str, Any]]] = field(default_factory=list)


def build_trace(
    plan: TracePlan, records: Iterable[Record], *, records_read: int = 0, seconds: float = 0.0
) -> Trace:
    """The order's history from `records` (any order, any superset of what is read)."""
    ordered = sorted(
        records,
        key=lambda r: (plan.rank.get(r.topic, len(plan.rank)), r.topic, r.partition, r.offset),
    )
    located = locate(plan, ordered)
    outputs, notes = outputs_of(plan, located, ordered)
    wanted = wanted_ids(located, outputs)
    inputs = inputs_of(plan, located, wanted, ordered)
    own_inputs = _inputs(plan, located, inputs, wanted)
    inbounds = _inbounds(plan, inputs, own_inputs, outputs)
    _mark_dead_lettered(own_inputs, located.dead)
    return Trace(
        order_id=plan.order_id,
        warehouse_id=located.warehouse_id,
        command_partition=located.command_partition,
        inventory_partition=located.inventory_partition,
        entries=_timeline(own_inputs + inbounds + outputs + located.dead),
        topics=plan.topics,
        scan_notes=located.notes + notes,
        awaiting_outputs=bool(
            located.warehouse_id is not None
            and located.command_partition is not None
            and located.own
            and not outputs
        ),
        records_read=records_read,
        seconds=seconds,
    )


# ---------------------------------------------------------------- pass 1


def locate(plan: TracePlan, records: Iterable[Record]) -> Located:
    """The order's inputs on orders.v1, its dead letters, and where its warehouse's records are."""
    own, dead = _orders_and_dead_letters(plan, records)
    own.sort(key=lambda e: (e.type != "OrderPlaced", e.sort_key(), e.partition, e.offset))
    warehouse_id, notes = _warehouse(plan, own, dead)
    own = [e for e in own if e.data.get("warehouse_id") == warehouse_id]
    located = Located(warehouse_id, None, None, own, dead, notes)
    if warehouse_id is None:
        return located
    command_parts = plan.partitions.get(plan.topic(COMMANDS), [])
    if not command_parts:
        notes.append(f"topic {plan.topic(COMMANDS)} does not exist: nothing was routed yet")
    else:
        located.command_partition = partition_for(warehouse_id, command_parts)
    inventory_parts = plan.partitions.get(plan.topic(INVENTORY), [])
    if inventory_parts:
        located.inventory_partition = partition_for(warehouse_id, inventory_parts)
    return located


def _orders_and_dead_letters(
    plan: TracePlan, records: Iterable[Record]
) -> tuple[list[Entry], list[Entry]]:
    own: list[Entry] = []
    dead: list[Entry] = []
    orders = plan.topic(ORDERS) if plan.warehouse_id is None else None
    for record in records:
        value = record.value
        if value is None:
            continue
        if record.topic in plan.dlq_topics:
            if plan.bare.search(value):
                dead.append(_dead_letter(record))
        elif record.topic == orders and plan.mentions_order.search(value):
            doc = _loads(value)
            if doc is None:
                continue
            data = doc.get("data")
            if (
                isinstance(data, dict)
                and data.get("order_id") == plan.order_id
                and doc.get("type") in ORDER_INPUTS
            ):
                own.append(_entry(record, doc, "order"))
    return own, dead


def _warehouse(
    plan: TracePlan, own: list[Entry], dead: list[Entry]
) -> tuple[str | None, list[str]]:
    """The given warehouse, else the (first) OrderPlaced's, else a dead letter's."""
    if plan.warehouse_id is not None:
        return plan.warehouse_id, []
    warehouses: list[str] = []
    for entry in own:
        wh = entry.data.get("warehouse_id")
        if isinstance(wh, str) and wh not in warehouses:
            warehouses.append(wh)
    if len(warehouses) > 1:
        note = (
            f"order id {plan.order_id} appears in warehouses {', '.join(warehouses)}; "
            f"showing {warehouses[0]} (use --warehouse to pick another)"
        )
        return warehouses[0], [note]
    if warehouses:
        return warehouses[0], []
    for entry in dead:
        wh = entry.data.get("warehouse_id")
        if isinstance(wh, str) and entry.data.get("order_id") == plan.order_id:
            return wh, []
    return None, []


# ---------------------------------------------------------------- pass 2


def outputs_of(
    plan: TracePlan, located: Located, records: Iterable[Record]
) -> tuple[list[Entry], list[str]]:
    """The order's outputs on its warehouse's allocations partition; (outputs, notes)."""
    partition = located.command_partition
    allocations = plan.topic(ALLOCATIONS)
    if partition is None:
        return [], []
    if partition not in plan.partitions.get(allocations, []):
        return [], [f"{allocations} has no partition {partition}"]
    outputs: list[Entry] = []
    for record in records:
        if record.topic != allocations or record.partition != partition:
            continue
        if record.value is None or not plan.mentions_order.search(record.value):
            continue
        doc = _loads(record.value)
        data = doc.get("data") if doc else None
        if doc is None or not isinstance(data, dict) or data.get("order_id") != plan.order_id:
            continue
        if data.get("warehouse_id") != located.warehouse_id:
            continue
        entry = _entry(record, doc, "output")
        offset = _int(header(record.headers, H_COMMAND_OFFSET))
        entry.command_offsets = [offset] if offset is not None else []
        entry.output_index = _int(header(record.headers, H_OUTPUT_INDEX))
        outputs.append(entry)
    return outputs, []


def wanted_ids(located: Located, outputs: list[Entry]) -> set[str]:
    """The ids pass 3 looks for: the outputs' causes and the order's own inputs."""
    return {e.causation_id for e in outputs if e.causation_id} | {e.id for e in located.own if e.id}


# ---------------------------------------------------------------- pass 3


def input_partitions(plan: TracePlan, located: Located) -> list[tuple[str, int]]:
    """Pass 3's partitions: the warehouse's command partition and inventory partition."""
    if located.command_partition is None:
        return []
    parts = [(plan.topic(COMMANDS), located.command_partition)]
    if located.inventory_partition is not None:
        parts.append((plan.topic(INVENTORY), located.inventory_partition))
    return parts


def inputs_of(
    plan: TracePlan, located: Located, wanted: set[str], records: Iterable[Record]
) -> Inputs:
    """The wanted inputs and the inbound events of the warehouse, by event id."""
    inputs = Inputs()
    parts = input_partitions(plan, located)
    if not parts:
        return inputs
    is_wanted = Matcher([n for i in wanted for n in quoted(i)] + plan.order_needles)
    is_inbound = Matcher(INBOUND_MARKERS)
    for record in records:
        if (record.topic, record.partition) in parts and record.value is not None:
            _classify(
                plan,
                located,
                wanted,
                inputs,
                record,
                (is_wanted.search(record.value), is_inbound.search(record.value)),
            )
    return inputs


def _classify(
    plan: TracePlan,
    located: Located,
    wanted: set[str],
    inputs: Inputs,
    record: Record,
    found: tuple[bool, bool],
) -> None:
    hit, inbound = found
    on_commands = record.topic == plan.topic(COMMANDS)
    doc = _warehouse_doc(record, located.warehouse_id, on_commands) if hit or inbound else None
    if doc is None:
        return
    event_id = doc.get("id")
    # The bytes only suggested it: a hit is the order's own input or a wanted id.
    hit = _is_own(plan, doc) or (hit and event_id in wanted)
    if on_commands:
        if hit or inbound:
            inputs.commands.setdefault(event_id, []).append((record.offset, doc, record))
        if inbound and not hit:
            inputs.inbound.append((record, doc))
    elif hit:
        inputs.inventory.setdefault(event_id, []).append((record, doc))
    elif inbound:
        inputs.inbound.append((record, doc))


def _warehouse_doc(
    record: Record, warehouse_id: str | None, on_commands: bool = False
) -> dict[str, Any] | None:
    """The record's envelope if it is one of the warehouse's: it names the warehouse, or
    it is a command of the warehouse's whole command partition (a clock tick)."""
    doc = _loads(record.value or b"")
    data = doc.get("data") if doc is not None else None
    if not isinstance(data, dict):
        return None
    if on_commands and doc is not None and doc.get("type") in PARTITION_COMMANDS:
        return doc
    return doc if data.get("warehouse_id") == warehouse_id else None


def _is_own(plan: TracePlan, doc: dict[str, Any]) -> bool:
    data = doc.get("data")
    return (
        doc.get("type") in ORDER_INPUTS
        and isinstance(data, dict)
        and data.get("order_id") == plan.order_id
    )


# ---------------------------------------------------------------- assembly


def _inputs(plan: TracePlan, located: Located, inputs: Inputs, wanted: set[str]) -> list[Entry]:
    """One entry per source record of the order's inputs and the causing inputs,
    with the command offsets of their copies on the command log."""
    by_id: dict[Any, list[Entry]] = {}
    for entry in located.own:
        by_id.setdefault(entry.id or "", []).append(entry)
    for event_id, copies in inputs.inventory.items():
        if event_id not in by_id:
            by_id[event_id] = [_entry(record, doc, "cause") for record, doc in copies]
    for event_id, on_log in inputs.commands.items():
        on_log.sort(key=lambda copy: copy[0])
        offsets = [offset for offset, _, _ in on_log]
        if event_id not in by_id:
            routed = _command_entry(plan, on_log[0], wanted)
            if routed is None:
                continue  # an inbound event: see _inbounds
            by_id[event_id] = [routed]
        for entry in by_id[event_id]:
            entry.command_offsets = offsets
    return [entry for group in by_id.values() for entry in group]


def _command_entry(
    plan: TracePlan, copy: tuple[int, dict[str, Any], Record], wanted: set[str]
) -> Entry | None:
    """An input seen only on the command log (not routed from orders/inventory read here)."""
    _, doc, record = copy
    is_own = _is_own(plan, doc)
    if not (is_own or doc.get("id") in wanted):
        return None
    return _entry(record, doc, "order" if is_own else "cause")


def _inbound_ids(inputs: list[Entry], outputs: list[Entry]) -> set[str]:
    """The inbounds named by the causing inputs and by ETA changes."""
    ids = {
        e.data["inbound_id"]
        for e in inputs
        if e.relation == "cause" and isinstance(e.data.get("inbound_id"), str)
    }
    for entry in outputs:
        cause = entry.data.get("cause")
        if isinstance(cause, dict) and isinstance(cause.get("inbound_id"), str):
            ids.add(cause["inbound_id"])
    return ids


def _inbounds(
    plan: TracePlan, inputs: Inputs, own_inputs: list[Entry], outputs: list[Entry]
) -> list[Entry]:
    """Those inbounds' whole story: one entry per event, its inventory record
    preferred over its command-log copy."""
    wanted = _inbound_ids(own_inputs, outputs)
    seen = {entry.id for entry in own_inputs}
    commands = plan.topic(COMMANDS)
    by_id: dict[Any, Entry] = {}
    for record, doc in sorted(
        inputs.inbound, key=lambda item: (item[0].topic, item[0].partition, item[0].offset)
    ):
        event_id = doc.get("id")
        if (doc.get("data") or {}).get("inbound_id") not in wanted or event_id in seen:
            continue
        previous = by_id.get(event_id)
        if previous is None or (record.topic != commands and previous.topic == commands):
            by_id[event_id] = _entry(record, doc, "inbound")
    for event_id, entry in by_id.items():
        entry.command_offsets = sorted(offset for offset, _, _ in inputs.commands.get(event_id, []))
    return list(by_id.values())


def _mark_dead_lettered(inputs: list[Entry], dead: list[Entry]) -> None:
    """A record of the order that the router dead-lettered: say so on the record itself."""
    refs = {}
    for entry in dead:
        info = entry.dead_letter or {}
        key = (info.get("source_topic"), info.get("source_partition"), info.get("source_offset"))
        refs[key] = f"{entry.topic}:{entry.partition}:{entry.offset}"
    for entry in inputs:
        entry.dead_lettered_as = refs.get((entry.topic, entry.partition, entry.offset))


def _timeline(entries: list[Entry]) -> list[Entry]:
    """Processing order: what the allocator read, in command-log order (each input
    followed by its outputs); records that never reached the command log (dead
    letters, inputs not routed yet) are merged in by `occurred_at`."""
    placed = sorted(
        (e for e in entries if e.command_offsets),
        key=lambda e: (e.command_offsets[0], e.sort_key()[2:]),
    )
    loose = sorted((e for e in entries if not e.command_offsets), key=Entry.sort_key)
    out: list[Entry] = []
    i = 0
    for entry in placed:
        moment = parse_time(entry.occurred_at)
        while i < len(loose) and parse_time(loose[i].occurred_at) < moment:
            out.append(loose[i])
            i += 1
        out.append(entry)
    return out + loose[i:]


# ---------------------------------------------------------------- records


def _loads(value: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _entry(record: Record, doc: dict[str, Any], relation: str) -> Entry:
    def text(name: str) -> str | None:
        value = doc.get(name)
        return value if isinstance(value, str) else None

    return Entry(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        type=text("type") or "?",
        id=text("id"),
        causation_id=text("causation_id"),
        occurred_at=text("occurred_at"),
        relation=relation,
        doc=doc,
    )


def _dead_letter(record: Record) -> Entry:
    raw = record.value or b""
    doc = _loads(raw)
    entry = _entry(record, doc or {}, "dead_letter")
    entry.doc = doc
    entry.raw = raw
    entry.dead_letter = {
        "kind": header(record.headers, H_KIND),
        "reason": header(record.headers, H_REASON),
        "source_topic": header(record.headers, H_TOPIC),
        "source_partition": _int(header(record.headers, H_PARTITION)),
        "source_offset": _int(header(record.headers, H_OFFSET)),
        "stage": header(record.headers, H_STAGE),
    }
    return entry
