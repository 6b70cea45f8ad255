"""`build_trace(plan, records) -> Trace`: one order's causal history from records, pure.

The records are whatever was read (consumer records or hand-built `Rec`s):
any superset of what `fulfil.tracing` reads gives the same trace, because
every rule lives here and the reader only skips records these rules would
drop. The reads come in three passes, each needing the previous one's answer
(`locate`, then `outputs_of`, then `inputs_of`, in `fulfil.trace_passes`; what
they look for in `fulfil.trace_plan`):

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

from collections.abc import Iterable
from typing import Any

from fulfil.trace_model import Entry, Trace, parse_time
from fulfil.trace_passes import inputs_of, is_own_input, locate, outputs_of, wanted_ids
from fulfil.trace_plan import Inputs, Located, TracePlan
from fulfil.trace_records import Record, to_entry
from schemas.registry import COMMANDS


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


# ---------------------------------------------------------------- assembly


def _inputs(plan: TracePlan, located: Located, inputs: Inputs, wanted: set[str]) -> list[Entry]:
    """One entry per source record of the order's inputs and the causing inputs,
    with the command offsets of their copies on the command log."""
    by_id: dict[Any, list[Entry]] = {}
    for entry in located.own:
        by_id.setdefault(entry.id or "", []).append(entry)
    for event_id, copies in inputs.inventory.items():
        if event_id not in by_id:
            by_id[event_id] = [to_entry(record, doc, "cause") for record, doc in copies]
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
    is_own = is_own_input(plan, doc)
    if not (is_own or doc.get("id") in wanted):
        return None
    return to_entry(record, doc, "order" if is_own else "cause")


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
            by_id[event_id] = to_entry(record, doc, "inbound")
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
