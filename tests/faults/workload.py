"""The chaos workload and its oracle.

Ordering, and why the oracle can fold the inputs itself
--------------------------------------------------------
The router reads `orders.v1` and `inventory.v1` and merges them onto the
command log; how it interleaves the two topics is up to the consumer (fetch
timing, rebalances, restarts), so a fold of the inputs in publish order could
legitimately differ from the services' order. The workload removes that
freedom instead of trusting the command log: it is published in *phases*, each
phase holding events of ONE input topic only, and the next phase is published
only after the router has committed past the end of the previous one (its
commands are then on the command log, flushed before the commit). Inside a
topic, every event of one warehouse is on one partition (key `warehouse_id`),
so per warehouse the command log has exactly the oracle's order; re-deliveries
after faults only add repeats of envelopes already folded, which the core
ignores by id. Each chunk of `mixed_stream` becomes two phases (its orders,
then its inventory events) and the oracle folds that same order, so the
oracle never reads the command log: a record the router drops is an output
the oracle has and the topic lacks.

Warehouses are independent stock pools, so the oracle keeps one pure
`decide` state per warehouse (command partitions may hold several).

Poison and odd records go into the same phases: records the contract rejects
(bad JSON, unknown type, schema violations) must end in the DLQ; records it
accepts (today: NUL characters in names and ids, year-0001 timestamps, huge
quantities) are folded by the oracle exactly like valid events, so whatever
the contract decides, the services must agree with the oracle downstream. A
record with a non-UTF-8 header carries the bytes of an event published
before it (same envelope id): routed or dead-lettered, the result is the same,
but it must not take the good records of its batch down with it.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.contract import Envelope
from schemas.registry import ORDER_OUTPUT_TYPES, ContractError, encode, parse_input, spec_for
from services.allocator.domain import decide, new_state
from tests.builders.streams import mixed_stream


@dataclass
class Record:
    """One record to publish: raw bytes, key, headers, and the envelope if the contract accepts it."""

    topic: str
    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    event: Envelope | None = None
    kind: str = "valid"


@dataclass
class Phase:
    topic: str
    records: list[Record]


def record_of(event: Envelope) -> Record:
    spec = spec_for(event)
    return Record(spec.topic, encode(event), spec.key(event), event=event)


def phases(events: int, chunks: int, seed: int) -> list[Phase]:
    """`events` valid mixed inputs as 2 x `chunks` single-topic phases (orders, then inventory)."""
    stream = mixed_stream(events, seed=seed, warehouses=3, skus_per_warehouse=40)
    size = max(1, -(-len(stream) // chunks))
    out: list[Phase] = []
    for start in range(0, len(stream), size):
        chunk = [record_of(e) for e in stream[start : start + size]]
        for topic in ("orders.v1", "inventory.v1"):
            records = [r for r in chunk if r.topic == topic]
            if records:
                out.append(Phase(topic, records))
    return out


# ---------------------------------------------------------------- poison


POISON_KINDS = (
    "bad_json", "unknown_type", "schema_violation", "nul_in_name", "nul_in_order_id",
    "nul_in_sku", "year_0001", "huge_quantity",
)  # fmt: skip


def poison(kind: str, template: Record, serial: int) -> Record:
    """A record of `kind` made from `template` (a valid event of the phase's topic)."""
    assert template.event is not None
    doc = orjson.loads(template.value)
    doc["id"] = f"poison-{kind}-{serial}"
    data = doc["data"]
    is_order = doc["type"] == "OrderPlaced"
    if kind == "bad_json":
        raw = template.value[: len(template.value) // 2] + b"\x00{not json"
    else:
        if kind == "unknown_type":
            doc["type"] = "OrderTeleported"
        elif kind == "schema_violation":
            data.pop("warehouse_id", None)
        elif kind == "nul_in_name" and is_order:
            data["customer"]["name"] = "Ann\x00Smith"
            data["order_id"] = f"poison-o-{serial}"
        elif kind == "nul_in_order_id" and is_order:
            data["order_id"] = f"poison\x00o-{serial}"
        elif kind == "nul_in_sku" and "lines" in data:
            data["order_id"] = f"poison-o-{serial}"
            data["lines"][0]["sku"] = "SKU\x00-9"
        elif kind == "nul_in_sku" and "sku" in data:
            data["sku"] = "SKU\x00-9"
            data.pop("receipt_id", None)
            data.pop("inbound_id", None)
        elif kind == "year_0001":
            doc["occurred_at"] = "0001-01-01T00:00:00+14:00"
            for name in ("placed_at", "received_at", "cancelled_at"):
                if name in data:
                    data[name] = "0001-01-01T00:00:00+14:00"
            if is_order:
                data["order_id"] = f"poison-o-{serial}"
        elif kind == "huge_quantity" and is_order:
            data["order_id"] = f"poison-o-{serial}"
            for line in data["lines"]:
                line["quantity"] = 2_000_000_000
        elif kind == "huge_quantity" and "quantity" in data:
            data["quantity"] = 2_000_000_000
            data.pop("receipt_id", None)
            data.pop("inbound_id", None)
        else:  # the kind does not fit this topic's events: a plain schema violation
            data.pop("warehouse_id", None)
        raw = orjson.dumps(doc)
    try:
        event = parse_input(raw)
    except ContractError:
        event = None
    return Record(template.topic, raw, template.key, event=event, kind=kind)


def bad_header(template: Record) -> Record:
    """The bytes of an already published event with a header value that is not UTF-8."""
    return Record(
        template.topic,
        template.value,
        template.key,
        headers=[("traceparent", b"\xff\xfe\x00bad")],
        event=template.event,
        kind="bad_header",
    )


# ---------------------------------------------------------------- oracle


@dataclass
class Oracle:
    """The pure allocator folded over the inputs in publish order, one state per warehouse."""

    states: dict[str, Any] = field(default_factory=dict)
    inputs: list[Envelope] = field(default_factory=list)
    outputs: list[Envelope] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)

    def fold(self, records: Iterable[Record]) -> None:
        for record in records:
            if record.event is None:
                self.rejected[record.kind] += 1
                continue
            event = record.event
            warehouse = event.data.warehouse_id
            state = self.states.get(warehouse)
            if state is None:
                state = new_state()
            state, outputs = decide(state, event)
            self.states[warehouse] = state
            self.inputs.append(event)
            self.outputs.extend(outputs)

    @property
    def output_ids(self) -> set[str]:
        return {o.id for o in self.outputs}


def line_figures(outputs: Iterable[Envelope]) -> tuple[dict[tuple, tuple], dict[tuple, int]]:
    """Read-model figures computed from allocation outputs alone, independently of the projector:
    each order line's latest quantities, and the backordered units per (warehouse, SKU)."""
    lines: dict[tuple, tuple] = {}
    skus: dict[tuple, str] = {}
    for out in outputs:
        if out.type not in ORDER_OUTPUT_TYPES:
            continue
        for line in out.data.lines:
            key = (out.data.warehouse_id, out.data.order_id, line.line_no)
            lines[key] = (
                line.quantity,
                line.allocated,
                line.backordered,
                line.rejected,
                line.cancelled,
            )
            skus[key] = line.sku
    backlog: dict[tuple, int] = defaultdict(int)
    for key, figures in lines.items():
        if figures[2]:
            backlog[(key[0], skus[key])] += figures[2]
    return lines, dict(backlog)


def pick(rng: random.Random, items: list[Any]) -> Any:
    return items[rng.randrange(len(items))]
