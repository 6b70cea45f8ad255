"""Which topic each event type travels on, its Kafka key, and the codec (`parse_*`, `encode`)."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any, cast

from schemas.contract import (
    INPUT_EVENTS,
    INTERNAL_COMMANDS,
    OUTPUT_EVENTS,
    Command,
    Envelope,
    InputEvent,
    OutputEvent,
)
from schemas.validate import MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES
from schemas.validate import ContractError as ContractError
from schemas.validate import validate_command, validate_event, validate_input, validate_output

ORDERS = "orders.v1"
INVENTORY = "inventory.v1"
COMMANDS = "allocator.commands.v1"
ALLOCATIONS = "allocations.v1"
DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True, slots=True)
class EventSpec:
    type: str
    model: builtins.type[Envelope]
    topic: str
    # None: no key; the writer picks the partition (ClockTicked goes to every one).
    key_field: str | None = "warehouse_id"

    def key(self, event: Envelope) -> bytes | None:
        if self.key_field is None:
            return None
        data: Any = cast(Any, event).data  # every registered event has a payload; the base does not
        value: str = getattr(data, self.key_field)
        return value.encode()


# What the shop says about its orders and customers travels on orders.v1.
_ORDER_TYPES = {
    "OrderPlaced",
    "OrderCancelled",
    "OrderLinesCancelled",
    "OrderPolicyChanged",
    "BackorderConsentGiven",
    "StockAlertRequested",
    "StockAlertCancelled",
}

REGISTRY: dict[str, EventSpec] = {}
for _model in INPUT_EVENTS:
    _name = _model.__name__
    REGISTRY[_name] = EventSpec(_name, _model, ORDERS if _name in _ORDER_TYPES else INVENTORY)
for _model in INTERNAL_COMMANDS:
    REGISTRY[_model.__name__] = EventSpec(_model.__name__, _model, COMMANDS, key_field=None)
for _model in OUTPUT_EVENTS:
    REGISTRY[_model.__name__] = EventSpec(_model.__name__, _model, ALLOCATIONS)

# Upstream inputs (orders.v1, inventory.v1): what the router accepts.
INPUT_TYPES = frozenset(m.__name__ for m in INPUT_EVENTS)
INTERNAL_TYPES = frozenset(m.__name__ for m in INTERNAL_COMMANDS)
# Everything on allocator.commands.v1: the inputs, re-keyed, and the internal commands.
COMMAND_TYPES = INPUT_TYPES | INTERNAL_TYPES
OUTPUT_TYPES = frozenset(m.__name__ for m in OUTPUT_EVENTS)
# Allocation events about one order (everything on allocations.v1 but stock positions).
ORDER_OUTPUT_TYPES = OUTPUT_TYPES - {"StockPositionChanged", "StockAlertTriggered"}


def base_topics() -> list[str]:
    """The shared topics, without prefix: the four logs and the dead-letter topics of the
    stages that check them (the router: orders, inventory; the core: commands). A consumer
    that quarantines what it cannot apply (projector, notifier) writes to its own
    `<group>.dlq` and creates it at start."""
    main = [ORDERS, INVENTORY, COMMANDS, ALLOCATIONS]
    return main + [t + DLQ_SUFFIX for t in (ORDERS, INVENTORY, COMMANDS)]


def parse_event(raw: bytes | str) -> Envelope:
    """Validate any v1 envelope from JSON in one pass (pydantic); ContractError with the
    reason if the contract refuses it. For a consumer that wants pydantic models: the
    services' hot paths decode into structs instead (`schemas.decode`, same verdict)."""
    return validate_event(raw)


def parse_input(raw: bytes | str) -> InputEvent:
    return validate_input(raw)


def parse_command(raw: bytes | str) -> Command:
    """An allocator command: an input or an internal command (ClockTicked)."""
    return validate_command(raw)


def parse_output(raw: bytes | str) -> OutputEvent:
    return validate_output(raw)


def encode(event: Envelope) -> bytes:
    return event.model_dump_json(exclude_none=False).encode()


def spec_for(event: Envelope) -> EventSpec:
    return REGISTRY[event.type]
