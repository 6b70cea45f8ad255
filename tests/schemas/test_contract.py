from __future__ import annotations

import copy

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.contract import INPUT_EVENTS, OUTPUT_EVENTS
from schemas.registry import (
    ALLOCATIONS,
    INVENTORY,
    MAX_MESSAGE_BYTES,
    ORDERS,
    REGISTRY,
    ContractError,
    encode,
    parse_event,
    parse_input,
    parse_output,
    spec_for,
)
from tests.schemas.strategies import DATA, envelopes

ALL_TYPES = sorted(REGISTRY)


def test_every_event_type_has_a_strategy_and_a_topic() -> None:
    assert set(DATA) == set(ALL_TYPES) == {m.__name__ for m in INPUT_EVENTS + OUTPUT_EVENTS}
    assert {REGISTRY[t].topic for t in ("OrderPlaced", "OrderCancelled")} == {ORDERS}
    assert {REGISTRY[m.__name__].topic for m in INPUT_EVENTS} == {ORDERS, INVENTORY}
    assert {REGISTRY[m.__name__].topic for m in OUTPUT_EVENTS} == {ALLOCATIONS}


@pytest.mark.parametrize("event_type", ALL_TYPES)
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_round_trip(event_type: str, data: st.DataObject) -> None:
    raw = orjson.dumps(data.draw(envelopes(event_type)))
    event = parse_event(raw)
    assert event.type == event_type
    assert type(event) is REGISTRY[event_type].model
    again = parse_event(encode(event))
    assert again == event
    assert encode(again) == encode(event)
    assert spec_for(event).key(event) == event.data.warehouse_id.encode()


def _base(event_type: str) -> dict:
    return envelopes(event_type).example()


def _mutate(doc: dict, path: str, value: object) -> dict:
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return doc


_DELETE = object()

VALID_ORDER = {
    "id": "evt-1",
    "type": "OrderPlaced",
    "version": 1,
    "occurred_at": "2026-11-01T10:00:00+01:00",
    "source": "shop",
    "data": {
        "order_id": "o-1",
        "warehouse_id": "wh-1",
        "customer": {"customer_id": "c-1", "email": "ann@shop.example", "name": "Ann"},
        "lines": [
            {"line_no": 1, "sku": "SKU-1", "quantity": 10, "unit_price": "19.90", "currency": "EUR"},
            {"line_no": 2, "sku": "SKU-2", "quantity": 1},
        ],
        "fulfilment_policy": "ship_partial",
        "priority": 0,
        "placed_at": "2026-11-01T09:59:00Z",
    },
}
VALID = {
    "OrderPlaced": VALID_ORDER,
    "OrderCancelled": {**VALID_ORDER, "type": "OrderCancelled", "data": {"order_id": "o-1", "warehouse_id": "wh-1", "reason": "changed mind", "cancelled_at": "2026-11-02T10:00:00Z"}},
    "StockReceived": {**VALID_ORDER, "type": "StockReceived", "data": {"receipt_id": "r-1", "warehouse_id": "wh-1", "sku": "SKU-1", "quantity": 5, "received_at": "2026-11-02T10:00:00Z"}},
    "StockAdjusted": {**VALID_ORDER, "type": "StockAdjusted", "data": {"adjustment_id": "a-1", "warehouse_id": "wh-1", "sku": "SKU-1", "delta": -2, "reason": "damage"}},
    "InboundScheduled": {**VALID_ORDER, "type": "InboundScheduled", "data": {"inbound_id": "in-1", "warehouse_id": "wh-1", "lines": [{"sku": "SKU-1", "quantity": 50}], "eta": "2026-11-20"}},
    "ShipmentDelayed": {**VALID_ORDER, "type": "ShipmentDelayed", "data": {"inbound_id": "in-1", "warehouse_id": "wh-1", "new_eta": "2026-11-27", "reason": "port congestion"}},
    "SkuPolicySet": {**VALID_ORDER, "type": "SkuPolicySet", "data": {"warehouse_id": "wh-1", "sku": "SKU-1", "backorderable": False, "discontinued": False}},
}

# (event type, field path, bad value, text the reason must contain)
BAD_INPUTS = [
    ("OrderPlaced", "data.lines.0.quantity", -1, "data.lines.0.quantity"),
    ("OrderPlaced", "data.lines.0.quantity", 0, "data.lines.0.quantity"),
    ("OrderPlaced", "data.lines.0.quantity", 10**9, "data.lines.0.quantity"),
    ("OrderPlaced", "data.lines.0.quantity", 2.5, "data.lines.0.quantity"),
    ("OrderPlaced", "data.lines.0.quantity", "3", "data.lines.0.quantity"),
    ("OrderPlaced", "data.lines.0.currency", "XYZ", "data.lines.0.currency"),
    ("OrderPlaced", "data.lines.0.unit_price", "12,50", "data.lines.0.unit_price"),
    ("OrderPlaced", "data.lines.0.unit_price", _DELETE, "unit_price and currency"),
    ("OrderPlaced", "data.lines.1.line_no", 1, "line_no must be unique"),
    ("OrderPlaced", "data.lines", [], "data.lines"),
    ("OrderPlaced", "data.lines", [{"line_no": i, "sku": "S", "quantity": 1} for i in range(1, 502)], "data.lines"),
    ("OrderPlaced", "data.customer.email", "not-an-email", "data.customer.email"),
    ("OrderPlaced", "data.placed_at", "2026-11-01T09:59:00", "data.placed_at"),
    ("OrderPlaced", "data.placed_at", "yesterday", "data.placed_at"),
    ("OrderPlaced", "data.order_id", "", "data.order_id"),
    ("OrderPlaced", "data.order_id", "x" * 129, "data.order_id"),
    ("OrderPlaced", "data.fulfilment_policy", "ship_whenever", "data.fulfilment_policy"),
    ("OrderPlaced", "data.warehouse_id", _DELETE, "data.warehouse_id"),
    ("OrderPlaced", "version", 2, "version"),
    ("OrderPlaced", "occurred_at", "2026-11-01", "occurred_at"),
    ("OrderPlaced", "id", "", "id"),
    ("OrderCancelled", "data.reason", "", "data.reason"),
    ("OrderCancelled", "data.cancelled_at", "2026-13-01T00:00:00Z", "data.cancelled_at"),
    ("StockReceived", "data.quantity", -5, "data.quantity"),
    ("StockReceived", "data.sku", "has space", "data.sku"),
    ("StockReceived", "data.receipt_id", _DELETE, "data.receipt_id"),
    ("StockAdjusted", "data.delta", 0, "delta must not be zero"),
    ("StockAdjusted", "data.delta", "minus two", "data.delta"),
    ("InboundScheduled", "data.eta", "20/11/2026", "data.eta"),
    ("InboundScheduled", "data.lines.0.quantity", 0, "data.lines.0.quantity"),
    ("ShipmentDelayed", "data.new_eta", "2026-02-30", "data.new_eta"),
    ("SkuPolicySet", "data.backorderable", "maybe", "data.backorderable"),
]


@pytest.mark.parametrize(("event_type", "path", "value", "expected"), BAD_INPUTS)
def test_bad_input_is_rejected_with_a_reason_naming_the_field(event_type, path, value, expected) -> None:
    parse_input(orjson.dumps(VALID[event_type]))  # the base is valid
    with pytest.raises(ContractError) as info:
        parse_input(orjson.dumps(_mutate(VALID[event_type], path, value)))
    assert expected in info.value.reason


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"{not json", "bad_json"),
        (b"", "bad_json"),
        (b'{"id": "e", "type": "OrderShipped", "version": 1}', "unknown_type"),
        (b'{"id": "e", "version": 1}', "unknown_type"),
        (b"x" * (MAX_MESSAGE_BYTES + 1), "oversize"),
    ],
)
def test_malformed_messages_are_classified(raw: bytes, kind: str) -> None:
    with pytest.raises(ContractError) as info:
        parse_input(raw)
    assert info.value.kind == kind
    assert info.value.reason


def test_negative_quantity_is_its_own_kind() -> None:
    with pytest.raises(ContractError) as info:
        parse_input(orjson.dumps(_mutate(VALID_ORDER, "data.lines.0.quantity", -1)))
    assert info.value.kind == "bad_quantity"


def test_tolerant_reader_ignores_unknown_fields() -> None:
    doc = _mutate(VALID_ORDER, "data.gift_wrap", True)
    doc = _mutate(doc, "data.lines.0.colour", "red")
    doc["trace"] = {"span": 1}
    event = parse_input(orjson.dumps(doc))
    assert event == parse_input(orjson.dumps(VALID_ORDER))


def test_outputs_are_not_accepted_as_inputs() -> None:
    alloc = {**VALID_ORDER, "type": "StockPositionChanged", "data": {"warehouse_id": "w", "sku": "s", "available": 1, "backordered": 0, "reserved": 0, "incoming": 0}}
    parse_event(orjson.dumps(alloc))
    with pytest.raises(ContractError) as info:
        parse_input(orjson.dumps(alloc))
    assert info.value.kind == "unknown_type"


# ---------------------------------------------------------------- trusted construction


def _models_under(model: type) -> set[type]:
    """The model and every contract model reachable from its fields."""
    from typing import get_args

    from schemas.contract import Model

    found: set[type] = set()
    todo = [model]
    while todo:
        current = todo.pop()
        if current in found:
            continue
        found.add(current)
        for field in current.model_fields.values():
            stack = [field.annotation]
            while stack:
                annotation = stack.pop()
                if isinstance(annotation, type) and issubclass(annotation, Model):
                    todo.append(annotation)
                stack.extend(get_args(annotation))
    return found


def test_trusted_construction_serialises_like_model_construct_for_every_output_model() -> None:
    """The allocator builds outputs with `trusted()`: their bytes must not depend on it
    (replay --verify compares bytes written by earlier versions)."""
    models = set().union(*(_models_under(m) for m in OUTPUT_EVENTS))
    assert len(models) > len(OUTPUT_EVENTS)
    for model in models:
        required = {name: None for name, f in model.model_fields.items() if f.is_required()}
        # Reversed keyword order: the JSON must still follow the declared order.
        given_fields = dict(reversed(list(required.items())))
        built = model.trusted(**given_fields)
        reference = model.model_construct(**given_fields)
        assert built.model_dump_json(warnings=False) == reference.model_dump_json(warnings=False), model.__name__
        assert built == reference and built.model_fields_set == reference.model_fields_set


def test_trusted_construction_refuses_a_missing_required_field() -> None:
    from schemas.contract import AllocationLine

    with pytest.raises(TypeError, match="line_no"):
        AllocationLine.trusted(sku="A", quantity=1)


def _first_output_of_each_type() -> dict[str, dict]:
    from services.allocator.domain import decide, new_state
    from tests.services.allocator.domain.streams import mixed_stream

    state, found = new_state(), {}
    for event in mixed_stream(3_000, seed=4):
        state, outputs = decide(state, event)
        for output in outputs:
            found.setdefault(output.type, orjson.loads(encode(output)))
    return found


VALID_OUTPUTS = _first_output_of_each_type()

# Outputs are parsed by the projector, the notifier and downstream warehouse systems:
# the contract holds them to the same standard as inputs.
BAD_OUTPUTS = [
    ("StockPositionChanged", "data.available", -1, "data.available"),
    ("StockPositionChanged", "data.next_eta", "next week", "data.next_eta"),
    ("StockPositionChanged", "data.sku", _DELETE, "data.sku"),
    ("OrderAllocated", "data.shipment_id", "", "data.shipment_id"),
    ("OrderAllocated", "data.lines.0.allocated", -1, "data.lines.0.allocated"),
    ("OrderAllocated", "data.customer.email", "not-an-email", "data.customer.email"),
    ("PartiallyShipped", "data.lines.0.eta", "2026-11-31", "data.lines.0.eta"),
    ("PartiallyShipped", "data.lines.0.backordered", 2.5, "data.lines.0.backordered"),
    ("Backordered", "data.reason", "because", "data.reason"),
    ("Backordered", "data.lines", _DELETE, "data.lines"),
    ("BackorderAllocated", "data.order_id", "", "data.order_id"),
    ("BackorderEtaChanged", "data.cause", _DELETE, "data.cause"),
    ("BackorderEtaChanged", "data.lines.0.previous_eta", "soon", "data.lines.0.previous_eta"),
    ("OrderRejected", "data.lines.0.rejected", "all", "data.lines.0.rejected"),
    ("OrderCancellationProcessed", "data.warehouse_id", _DELETE, "data.warehouse_id"),
    ("OrderCancellationProcessed", "occurred_at", "2026-11-01T10:00:00", "occurred_at"),
    ("OrderAllocated", "version", 2, "version"),
]


def test_the_bad_output_table_covers_every_output_type() -> None:
    assert {row[0] for row in BAD_OUTPUTS} == set(VALID_OUTPUTS) == {m.model_fields["type"].annotation.__args__[0] for m in OUTPUT_EVENTS}


@pytest.mark.parametrize(("event_type", "path", "value", "expected"), BAD_OUTPUTS)
def test_bad_output_is_rejected_with_a_reason_naming_the_field(event_type, path, value, expected) -> None:
    parse_output(orjson.dumps(VALID_OUTPUTS[event_type]))  # the base is valid
    with pytest.raises(ContractError) as info:
        parse_output(orjson.dumps(_mutate(VALID_OUTPUTS[event_type], path, value)))
    assert expected in info.value.reason
