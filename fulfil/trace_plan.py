"""What a trace looks for: the order, the topics and partitions the cluster holds, the
byte filters of each pass, and what passes 1 and 3 hand on."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka.partitioner import DefaultPartitioner

from fulfil.trace_model import Entry
from fulfil.trace_records import Record
from schemas.registry import ALLOCATIONS, COMMANDS, DLQ_SUFFIX, INVENTORY, ORDERS

# What the shop says about one order (StockAlert* name no order: they are not traced here).
ORDER_INPUTS = frozenset(
    {
        "OrderPlaced",
        "OrderCancelled",
        "OrderLinesCancelled",
        "OrderPolicyChanged",
        "BackorderConsentGiven",
    }
)
INBOUND_MARKERS = (b'"InboundScheduled"', b'"ShipmentDelayed"', b'"InboundCancelled"')
# Commands of the whole partition, not of a warehouse (no data.warehouse_id): the clock.
PARTITION_COMMANDS = frozenset({"ClockTicked"})
TRACED_TOPICS = (ORDERS, INVENTORY, COMMANDS, ALLOCATIONS)


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
