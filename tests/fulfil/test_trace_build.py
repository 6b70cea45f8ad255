"""`build_trace` on hand-built records: no broker, no database."""

from __future__ import annotations

import random
from typing import Any

import orjson

from fulfil.trace_build import build_trace
from fulfil.trace_model import Entry
from fulfil.trace_plan import TracePlan, partition_for
from fulfil.trace_records import Rec
from fulfil.trace_summary import summarize
from fulfil_platform.dead_letter_writer import H_KIND, H_OFFSET, H_PARTITION, H_REASON, H_TOPIC
from schemas.allocation_headers import H_COMMAND_OFFSET, H_OUTPUT_INDEX
from schemas.registry import ALLOCATIONS, COMMANDS, DLQ_SUFFIX, INVENTORY, ORDERS

ORDER = "ord-1"
WH = "wh-a"
PARTS = [0, 1, 2]
P = partition_for(WH, PARTS)  # the warehouse's partition on commands, allocations and inventory
TOPICS = {base: "t." + base for base in (ORDERS, INVENTORY, COMMANDS, ALLOCATIONS)}


def plan(
    order_id: str = ORDER, warehouse_id: str | None = None, missing: tuple[str, ...] = ()
) -> TracePlan:
    names = [*TOPICS.values(), *(t + DLQ_SUFFIX for t in TOPICS.values())]
    partitions = {t: PARTS for t in names if t not in missing}
    return TracePlan(order_id, TOPICS, partitions, warehouse_id)


def env(event_id: str, kind: str, at: str, causation: str | None = None, **data: Any) -> bytes:
    doc = {
        "id": event_id,
        "type": kind,
        "version": 1,
        "occurred_at": f"2026-11-02T{at}:00+00:00",
        "data": data,
    }
    if causation:
        doc["causation_id"] = causation
    return orjson.dumps(doc)


def rec(base: str, offset: int, value: bytes, partition: int = P, headers: tuple = ()) -> Rec:
    return Rec(TOPICS[base], partition, offset, value, headers)


def output(offset: int, value: bytes, command: int, index: int = 0) -> Rec:
    headers = ((H_COMMAND_OFFSET, str(command).encode()), (H_OUTPUT_INDEX, str(index).encode()))
    return rec(ALLOCATIONS, offset, value, headers=headers)


LINES = [{"line_no": 1, "sku": "LAMP", "quantity": 5}]
PLACED = env(
    "e-placed",
    "OrderPlaced",
    "09:00",
    order_id=ORDER,
    warehouse_id=WH,
    lines=LINES,
    customer={"email": "ann@shop.example", "name": "Ann"},
)
SCHEDULED = env(
    "e-sched",
    "InboundScheduled",
    "08:00",
    inbound_id="po-7",
    warehouse_id=WH,
    eta="2026-11-16",
    lines=[{"sku": "LAMP", "quantity": 20}],
)
DELAYED = env(
    "e-delay",
    "ShipmentDelayed",
    "10:00",
    inbound_id="po-7",
    warehouse_id=WH,
    new_eta="2026-11-23",
    reason="port congestion",
)
SHIPPED = env(
    "o-1",
    "PartiallyShipped",
    "09:00",
    "e-placed",
    order_id=ORDER,
    warehouse_id=WH,
    shipment_id="s-1",
    lines=[
        {
            "line_no": 1,
            "sku": "LAMP",
            "quantity": 5,
            "shipped": 2,
            "backordered": 3,
            "eta": "2026-11-16",
        }
    ],
)
ETA = env(
    "o-2",
    "BackorderEtaChanged",
    "10:00",
    "e-delay",
    order_id=ORDER,
    warehouse_id=WH,
    cause={"event_type": "ShipmentDelayed", "inbound_id": "po-7", "reason": "port congestion"},
    lines=[
        {
            "line_no": 1,
            "sku": "LAMP",
            "quantity": 5,
            "backordered": 3,
            "previous_eta": "2026-11-16",
            "eta": "2026-11-23",
        }
    ],
)
OTHER = env("e-other", "OrderPlaced", "09:30", order_id="ord-2", warehouse_id=WH, lines=LINES)
OTHER_OUT = env(
    "o-9", "OrderAllocated", "09:30", "e-other", order_id="ord-2", warehouse_id=WH, lines=LINES
)


def story() -> list[Rec]:
    """An order backordered on an inbound that is then delayed, next to another order."""
    return [
        rec(ORDERS, 0, PLACED, partition=1),
        rec(ORDERS, 1, OTHER, partition=1),
        rec(INVENTORY, 0, SCHEDULED),
        rec(INVENTORY, 1, DELAYED),
        rec(COMMANDS, 0, SCHEDULED),
        rec(COMMANDS, 1, PLACED),
        rec(COMMANDS, 2, OTHER),
        rec(COMMANDS, 3, DELAYED),
        output(0, SHIPPED, command=1),
        output(1, OTHER_OUT, command=2),
        output(2, ETA, command=3),
    ]


def test_the_order_its_outputs_their_causes_and_the_inbound_in_processing_order() -> None:
    trace = build_trace(plan(), story(), records_read=11)
    assert (trace.warehouse_id, trace.command_partition, trace.inventory_partition) == (WH, P, P)
    rows = [(e.type, e.relation, e.topic, e.command_offsets, e.output_index) for e in trace.entries]
    assert rows == [
        ("InboundScheduled", "inbound", TOPICS[INVENTORY], [0], None),
        ("OrderPlaced", "order", TOPICS[ORDERS], [1], None),
        ("PartiallyShipped", "output", TOPICS[ALLOCATIONS], [1], 0),
        ("ShipmentDelayed", "cause", TOPICS[INVENTORY], [3], None),
        ("BackorderEtaChanged", "output", TOPICS[ALLOCATIONS], [3], 0),
    ]
    assert trace.notes == [] and trace.customer() == {"email": "ann@shop.example", "name": "Ann"}
    doc = trace.document()
    assert doc["scanned"]["records"] == 11
    assert "ann@shop.example" not in orjson.dumps(doc).decode()
    assert "2026-11-16 → 2026-11-23" in doc["timeline"][4]["summary"]


def test_any_superset_in_any_order_gives_the_same_trace() -> None:
    expected = build_trace(plan(), story()).document(show_pii=True)
    noise = [
        rec(COMMANDS, 0, PLACED, partition=(P + 1) % 3),  # another partition: not the warehouse's
        rec(ALLOCATIONS, 0, SHIPPED, partition=(P + 1) % 3),
        rec(
            INVENTORY,
            2,
            env(
                "e-adj", "StockAdjusted", "11:00", warehouse_id=WH, sku="LAMP", delta=-1, reason="x"
            ),
        ),
        rec(ORDERS, 2, b"not json at all " + ORDER.encode(), partition=0),
    ]
    records = story() + noise
    random.Random(3).shuffle(records)
    assert build_trace(plan(), records).document(show_pii=True) == expected


def test_with_the_warehouse_given_the_inputs_come_from_the_command_log() -> None:
    trace = build_trace(plan(warehouse_id=WH), story())
    placed = next(e for e in trace.entries if e.type == "OrderPlaced")
    assert (placed.topic, placed.relation, placed.command_offsets) == (
        TOPICS[COMMANDS],
        "order",
        [1],
    )
    assert [e.id for e in trace.entries if e.relation == "output"] == ["o-1", "o-2"]


def test_a_dead_letter_names_the_order_its_warehouse_and_marks_its_source() -> None:
    bad = env("e-bad", "OrderCancelled", "12:00", order_id=ORDER, warehouse_id=WH)
    headers = (
        (H_KIND, b"schema_violation"),
        (H_REASON, b"data.reason: Field required"),
        (H_TOPIC, TOPICS[ORDERS].encode()),
        (H_PARTITION, b"1"),
        (H_OFFSET, b"5"),
    )
    dead = Rec(TOPICS[ORDERS] + DLQ_SUFFIX, 0, 0, bad, headers)
    source = rec(
        ORDERS, 5, bad, partition=1
    )  # an OrderCancelled without reason, still on orders.v1
    trace = build_trace(plan(), [dead, source])
    assert trace.warehouse_id == WH
    by_relation = {e.relation: e for e in trace.entries}
    assert by_relation["dead_letter"].dead_letter["kind"] == "schema_violation"
    assert by_relation["order"].dead_lettered_as == f"{TOPICS[ORDERS]}{DLQ_SUFFIX}:0:0"
    assert "[dead-lettered:" in summarize(by_relation["order"])
    # No OrderPlaced: the dead letter alone names the warehouse.
    assert build_trace(plan(), [dead]).warehouse_id == WH
    # A dead letter that is not JSON counts when the bare id is in it, not as part of another id.
    raw = Rec(TOPICS[INVENTORY] + DLQ_SUFFIX, 1, 4, b"garbage ord-1, more", ())
    longer = Rec(TOPICS[INVENTORY] + DLQ_SUFFIX, 1, 5, b"garbage ord-10", ())
    assert [e.offset for e in build_trace(plan(), [raw, longer]).entries] == [4]


def test_notes_say_what_is_missing_and_come_in_a_fixed_order() -> None:
    placed_elsewhere = env(
        "e-x", "OrderPlaced", "09:10", order_id=ORDER, warehouse_id="wh-b", lines=LINES
    )
    records = [rec(ORDERS, 0, PLACED, partition=1), rec(ORDERS, 1, placed_elsewhere, partition=2)]
    trace = build_trace(plan(missing=(TOPICS[COMMANDS],)), records)
    assert trace.warehouse_id == WH and trace.command_partition is None
    assert trace.notes[0].startswith(f"order id {ORDER} appears in warehouses {WH}, wh-b")
    assert trace.notes[1] == f"topic {TOPICS[COMMANDS]} does not exist: nothing was routed yet"
    # Inputs but no outputs: said last, after what the outbox query had to say.
    waiting = build_trace(plan(), records)
    waiting.notification_note = "DATABASE_URL is not set: notifications not shown"
    assert waiting.notes[-2:] == [
        waiting.notification_note,
        "no allocation events yet: is the allocator running and caught up?",
    ]


def test_an_unknown_order_is_not_found() -> None:
    trace = build_trace(plan(order_id="nope"), story())
    assert not trace.found and trace.warehouse_id is None and trace.notes == []


def test_summaries_of_allocation_lines() -> None:
    trace = build_trace(plan(), story())
    shipped = next(e for e in trace.entries if e.type == "PartiallyShipped")
    assert summarize(shipped) == "shipment s-1: L1 LAMP×5: shipped 2, backordered 3, eta 2026-11-16"
    placed = next(e for e in trace.entries if e.type == "OrderPlaced")
    assert summarize(placed) == "order ord-1: LAMP×5; ?"  # a required field missing reads "?"


# ---------------------------------------------------------------- supply side (issue 15)

TICK = env("tick-1", "ClockTicked", "00:00", now="2026-11-19T00:00:00+00:00")
CANCELLED = env(
    "e-cancel",
    "InboundCancelled",
    "11:00",
    inbound_id="po-7",
    warehouse_id=WH,
    reason="supplier closed the order",
    cancelled_at="2026-11-02T11:00:00+00:00",
)
ADJUSTED = env(
    "e-adj",
    "StockAdjusted",
    "12:00",
    adjustment_id="adj-1",
    warehouse_id=WH,
    sku="LAMP",
    delta=-3,
    reason="damaged in storage",
)
POLICY = env(
    "e-policy",
    "SkuPolicySet",
    "07:00",
    warehouse_id=WH,
    sku="LAMP",
    backorderable=True,
    discontinued=False,
    backorder_limit=2,
    release_date="2026-11-20",
)


def _eta(
    event_id: str,
    at: str,
    cause_id: str,
    cause: dict[str, Any],
    previous: str | None,
    eta: str | None,
) -> bytes:
    return env(
        event_id,
        "BackorderEtaChanged",
        at,
        cause_id,
        order_id=ORDER,
        warehouse_id=WH,
        cause={"event_id": cause_id, **cause},
        lines=[
            {
                "line_no": 1,
                "sku": "LAMP",
                "quantity": 5,
                "backordered": 3,
                "previous_eta": previous,
                "eta": eta,
            }
        ],
    )


def _supply_story(*extra: Rec) -> list[Rec]:
    return [
        rec(ORDERS, 0, PLACED, partition=1),
        rec(INVENTORY, 0, SCHEDULED),
        rec(COMMANDS, 0, SCHEDULED),
        rec(COMMANDS, 1, PLACED),
        output(0, SHIPPED, command=1),
        *extra,
    ]


def test_an_inbound_cancelled_leaves_the_line_without_a_date_and_joins_the_inbound_story() -> None:
    gone = _eta(
        "o-3",
        "11:00",
        "e-cancel",
        {
            "event_type": "InboundCancelled",
            "inbound_id": "po-7",
            "reason": "supplier closed the order",
        },
        "2026-11-16",
        None,
    )
    trace = build_trace(
        plan(),
        _supply_story(
            rec(INVENTORY, 1, CANCELLED), rec(COMMANDS, 2, CANCELLED), output(1, gone, command=2)
        ),
    )
    rows = [(e.type, e.relation, e.command_offsets) for e in trace.entries]
    assert rows[-2:] == [("InboundCancelled", "cause", [2]), ("BackorderEtaChanged", "output", [2])]
    cancelled, changed = trace.entries[-2:]
    assert (
        summarize(cancelled)
        == "inbound po-7 cancelled: supplier closed the order (what is not received will not arrive)"
    )
    assert summarize(changed) == (
        "L1 LAMP×5: backordered 3, eta 2026-11-16 → no date "
        "(cause: InboundCancelled of inbound po-7: supplier closed the order)"
    )
    # Not the cause of any of the order's outputs, a cancellation of an inbound the trace
    # shows (the delay named it) is still part of that inbound's story.
    quiet = build_trace(
        plan(), [*story(), rec(INVENTORY, 2, CANCELLED), rec(COMMANDS, 4, CANCELLED)]
    )
    assert [(e.type, e.relation, e.command_offsets) for e in quiet.entries][-1] == (
        "InboundCancelled",
        "inbound",
        [4],
    )


def test_an_overdue_inbound_shows_the_tick_that_undated_the_line() -> None:
    overdue = _eta(
        "o-4",
        "00:00",
        "tick-1",
        {"event_type": "ClockTicked", "inbound_id": "po-7", "reason": "inbound_overdue"},
        "2026-11-16",
        None,
    )
    other_tick = env(
        "tick-0", "ClockTicked", "00:00", now="2026-11-18T00:00:00+00:00"
    )  # caused nothing of ours
    trace = build_trace(
        plan(),
        _supply_story(
            rec(COMMANDS, 2, other_tick), rec(COMMANDS, 3, TICK), output(1, overdue, command=3)
        ),
    )
    tail = [(e.type, e.id, e.relation, e.topic, e.command_offsets) for e in trace.entries][-2:]
    assert tail == [
        ("ClockTicked", "tick-1", "cause", TOPICS[COMMANDS], [3]),
        ("BackorderEtaChanged", "o-4", "output", TOPICS[ALLOCATIONS], [3]),
    ]
    assert summarize(trace.entries[-2]) == "clock tick: now 2026-11-19T00:00:00+00:00"
    assert summarize(trace.entries[-1]) == (
        "L1 LAMP×5: backordered 3, eta 2026-11-16 → no date "
        "(cause: ClockTicked of inbound po-7: inbound_overdue)"
    )
    # A tick on another partition is another warehouse's clock.
    elsewhere = build_trace(
        plan(),
        _supply_story(rec(COMMANDS, 3, TICK, partition=(P + 1) % 3), output(1, overdue, command=3)),
    )
    assert "ClockTicked" not in [e.type for e in elsewhere.entries]


def test_reservation_lost_and_pre_order_backorders_say_why() -> None:
    lost = env(
        "o-5",
        "Backordered",
        "12:00",
        "e-adj",
        order_id=ORDER,
        warehouse_id=WH,
        reason="reservation_lost",
        lines=[{"line_no": 1, "sku": "LAMP", "quantity": 5, "backordered": 3, "eta": "2026-11-23"}],
    )
    trace = build_trace(
        plan(),
        _supply_story(
            rec(INVENTORY, 1, ADJUSTED), rec(COMMANDS, 2, ADJUSTED), output(1, lost, command=2)
        ),
    )
    adjusted, backordered = trace.entries[-2:]
    assert (adjusted.type, adjusted.relation, backordered.type) == (
        "StockAdjusted",
        "cause",
        "Backordered",
    )
    assert summarize(adjusted) == "LAMP -3 adjusted: damaged in storage"
    assert summarize(backordered) == "reservation_lost: L1 LAMP×5: backordered 3, eta 2026-11-23"

    pre = env(
        "o-6",
        "Backordered",
        "09:00",
        "e-placed",
        order_id=ORDER,
        warehouse_id=WH,
        reason="pre_order",
        lines=[{"line_no": 1, "sku": "LAMP", "quantity": 5, "backordered": 5, "eta": None}],
    )
    released = env(
        "o-7",
        "BackorderAllocated",
        "00:00",
        "tick-1",
        order_id=ORDER,
        warehouse_id=WH,
        shipment_id="s-2",
        lines=[{"line_no": 1, "sku": "LAMP", "quantity": 5, "shipped": 5, "allocated": 5}],
    )
    trace = build_trace(
        plan(),
        [
            rec(ORDERS, 0, PLACED, partition=1),
            rec(COMMANDS, 0, POLICY),
            rec(COMMANDS, 1, PLACED),
            output(0, pre, command=1),
            rec(COMMANDS, 2, TICK),
            output(1, released, command=2),
        ],
    )
    assert [(e.type, e.relation) for e in trace.entries] == [
        ("OrderPlaced", "order"),
        ("Backordered", "output"),
        ("ClockTicked", "cause"),
        ("BackorderAllocated", "output"),
    ]
    assert summarize(trace.entries[1]) == "pre_order: L1 LAMP×5: backordered 5, eta: no date yet"
    assert summarize(trace.entries[3]) == "shipment s-2: L1 LAMP×5: shipped 5, allocated 5"


def test_a_backorder_limit_rejection_and_the_policy_summary() -> None:
    rejected = env(
        "o-8",
        "OrderRejected",
        "09:00",
        "e-placed",
        order_id=ORDER,
        warehouse_id=WH,
        lines=[
            {"line_no": 1, "sku": "LAMP", "quantity": 5, "rejected": 3, "reason": "backorder_limit"}
        ],
    )
    trace = build_trace(
        plan(),
        [
            rec(ORDERS, 0, PLACED, partition=1),
            rec(COMMANDS, 0, PLACED),
            output(0, rejected, command=0),
        ],
    )
    assert [(e.type, e.relation) for e in trace.entries] == [
        ("OrderPlaced", "order"),
        ("OrderRejected", "output"),
    ]
    assert summarize(trace.entries[1]) == "L1 LAMP×5: rejected 3, backorder_limit"
    policy = build_trace(
        plan(warehouse_id=WH),
        [rec(COMMANDS, 0, POLICY), rec(COMMANDS, 1, PLACED), output(0, rejected, command=1)],
    )
    assert "SkuPolicySet" not in [
        e.type for e in policy.entries
    ]  # a policy is not an input of the order
    entry = Entry(
        topic=TOPICS[COMMANDS],
        partition=P,
        offset=0,
        type="SkuPolicySet",
        id="e-policy",
        causation_id=None,
        occurred_at="2026-11-02T07:00:00+00:00",
        relation="cause",
        doc=orjson.loads(POLICY),
    )
    assert summarize(entry) == (
        "LAMP: backorderable=True, discontinued=False, backorder_limit=2, release_date=2026-11-20"
    )


def test_part_cancels_policy_switches_and_consents_belong_to_the_order() -> None:
    part = env(
        "e-part",
        "OrderLinesCancelled",
        "11:00",
        order_id=ORDER,
        warehouse_id=WH,
        lines=[{"line_no": 1, "quantity": 4}],
        reason="changed my mind",
    )
    switch = env(
        "e-switch", "OrderPolicyChanged", "11:10", order_id=ORDER, warehouse_id=WH,
        fulfilment_policy="ship_complete",
    )  # fmt: skip
    done = env(
        "o-3",
        "OrderCancellationProcessed",
        "11:00",
        "e-part",
        order_id=ORDER,
        warehouse_id=WH,
        reason="changed my mind",
        lines=[{"line_no": 1, "sku": "LAMP", "quantity": 5, "allocated": 2, "cancelled": 3}],
        not_cancelled=[{"line_no": 1, "quantity": 1, "reason": "not_open"}],
    )
    records = [
        *story(),
        rec(ORDERS, 2, part, partition=1),
        rec(ORDERS, 3, switch, partition=1),
        rec(COMMANDS, 4, part),
        rec(COMMANDS, 5, switch),
        output(3, done, command=4),
    ]
    trace = build_trace(plan(), records)
    mine = [(e.type, e.relation) for e in trace.entries][-3:]
    assert mine == [
        ("OrderLinesCancelled", "order"),
        ("OrderCancellationProcessed", "output"),
        ("OrderPolicyChanged", "order"),
    ]
    texts = [summarize(e) for e in trace.entries[-3:]]
    assert texts[0] == "order ord-1: cancel L1×4: changed my mind"
    assert texts[1].endswith("; not cancelled: L1×1 not_open")
    assert texts[2] == "order ord-1 switched to ship_complete"
