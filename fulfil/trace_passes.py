"""The three passes of a trace (see fulfil.trace_build): where the order's records are,
its outputs, and the inputs that caused them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fulfil.trace_model import Entry
from fulfil.trace_plan import (
    INBOUND_MARKERS,
    ORDER_INPUTS,
    PARTITION_COMMANDS,
    Inputs,
    Located,
    Matcher,
    TracePlan,
    partition_for,
    quoted,
)
from fulfil.trace_records import Record, dead_letter_entry, parse_doc, parse_int, to_entry
from fulfil_platform.kafka import header
from schemas.allocation_headers import H_COMMAND_OFFSET, H_OUTPUT_INDEX
from schemas.registry import ALLOCATIONS, COMMANDS, INVENTORY, ORDERS

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
                dead.append(dead_letter_entry(record))
        elif record.topic == orders and plan.mentions_order.search(value):
            doc = parse_doc(value)
            if doc is None:
                continue
            data = doc.get("data")
            if (
                isinstance(data, dict)
                and data.get("order_id") == plan.order_id
                and doc.get("type") in ORDER_INPUTS
            ):
                own.append(to_entry(record, doc, "order"))
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
        doc = parse_doc(record.value)
        data = doc.get("data") if doc else None
        if doc is None or not isinstance(data, dict) or data.get("order_id") != plan.order_id:
            continue
        if data.get("warehouse_id") != located.warehouse_id:
            continue
        entry = to_entry(record, doc, "output")
        offset = parse_int(header(record.headers, H_COMMAND_OFFSET))
        entry.command_offsets = [offset] if offset is not None else []
        entry.output_index = parse_int(header(record.headers, H_OUTPUT_INDEX))
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
    hit = is_own_input(plan, doc) or (hit and event_id in wanted)
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
    doc = parse_doc(record.value or b"")
    data = doc.get("data") if doc is not None else None
    if not isinstance(data, dict):
        return None
    if on_commands and doc is not None and doc.get("type") in PARTITION_COMMANDS:
        return doc
    return doc if data.get("warehouse_id") == warehouse_id else None


def is_own_input(plan: TracePlan, doc: dict[str, Any]) -> bool:
    data = doc.get("data")
    return (
        doc.get("type") in ORDER_INPUTS
        and isinstance(data, dict)
        and data.get("order_id") == plan.order_id
    )
